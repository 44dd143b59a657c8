"""Session-wide fixtures: small demo checkpoints, their export, the built repository and real Triton servers.

Built once per test run and shared: export tests, repository tests and client tests all use the same graphs, and
the servers (one per profile) are started once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.build import BuildSettings, build_repository
from deploy.model_configs import CpuSettings
from deploy.server import TritonServer, start_on_free_ports
from deploy.tasks import DEPLOYMENTS
from export.heads import CHECKPOINT_KIND_FOR_TASK, HEAD_SPECS
from export.pipeline import ExportSettings, export_head
from model_def.demo_checkpoint import write_demo_checkpoints

# Fewer validation/calibration examples than the default: the small graphs are validated, just on less text.
FAST = {"validation_examples": 16, "calibration_examples": 8}


@pytest.fixture(scope="session")
def demo_small(tmp_path_factory) -> Path:
    """The demo checkpoint set (2-layer models, random weights, one directory per head kind)."""
    return write_demo_checkpoints(tmp_path_factory.mktemp("demo-small"), small=True)["pretraining"].parent


@pytest.fixture(scope="session")
def exported_small(tmp_path_factory, demo_small) -> tuple[Path, dict]:
    """Every task exported once from the small demo checkpoints (all three flavours)."""
    out = tmp_path_factory.mktemp("onnx-small")
    manifests = {}
    for task in HEAD_SPECS:
        manifests[task] = export_head(task, demo_small / CHECKPOINT_KIND_FOR_TASK[task], out, ExportSettings(**FAST))
    return out, manifests


@pytest.fixture(scope="session")
def built_repository(tmp_path_factory, demo_small, exported_small) -> tuple[Path, dict]:
    """A complete repository of every deployable task (export is reused from `exported_small`)."""
    export_dir, _ = exported_small
    repository = tmp_path_factory.mktemp("triton-repo")
    # onnxruntime serves here whatever is faster on this CPU, so every test knows the served graph; the OpenVINO
    # engine is served by its own repository (test_graph_engines.py)
    settings = BuildSettings(
        export=ExportSettings(**FAST), export_dir=export_dir, cpu=CpuSettings(engine="onnxruntime")
    )
    plan = {task: demo_small / CHECKPOINT_KIND_FOR_TASK[task] for task in DEPLOYMENTS}
    record = build_repository(repository, plan, settings)
    return repository, record


def _server(repository: Path, record: dict, profile: str | None, log: Path) -> TritonServer:
    return start_on_free_ports(repository, models=record["models"], model_config_name=profile, log_file=log)


@pytest.fixture(scope="session")
def triton_server(built_repository, tmp_path_factory) -> Iterator[TritonServer]:
    """The default (CPU, INT8-dynamic) profile of the built repository in a real tritonserver."""
    repository, record = built_repository
    with _server(repository, record, None, tmp_path_factory.mktemp("logs") / "default.log") as server:
        yield server


@pytest.fixture(scope="session")
def triton_server_fp32(built_repository, tmp_path_factory) -> Iterator[TritonServer]:
    """The `fp32` profile (same repository, FP32 graphs): results comparable with PyTorch to 1e-4."""
    repository, record = built_repository
    with _server(repository, record, "fp32", tmp_path_factory.mktemp("logs") / "fp32.log") as server:
        yield server
