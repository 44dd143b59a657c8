"""deploy.build_plan: which checkpoint each deployable task is built from, and the printed build outcome."""

from __future__ import annotations

import subprocess
import sys

import pytest

from deploy.build_plan import build_summary, deployment_plan
from deploy.demo import throughput
from deploy.tasks import DEPLOYMENTS
from export.heads import CHECKPOINT_KIND_FOR_TASK, HEAD_SPECS

# Functional tier: real Triton servers or ONNX exports (`make test-quick` leaves these out).
pytestmark = pytest.mark.functional


def test_a_checkpoint_set_plans_every_deployable_task_from_its_kind_directory(demo_small):
    plan = deployment_plan(demo_small)
    assert set(plan) == set(DEPLOYMENTS) and set(plan) < set(HEAD_SPECS)  # masked_lm is exported, not deployed
    assert all(plan[t] == demo_small / CHECKPOINT_KIND_FOR_TASK[t] for t in plan)


def test_chosen_tasks_and_an_override_take_their_own_checkpoint(demo_small):
    qa = demo_small / "question-answering"
    plan = deployment_plan(demo_small / "pretraining", tasks=["fill_mask"], overrides={"question_answering": qa})
    assert plan == {"fill_mask": demo_small / "pretraining", "question_answering": qa}


def test_build_summary_lists_every_graph_and_how_to_serve_the_repository(tmp_path):
    record = {
        "models": ["tokenizer", "fill_mask_onnx", "fill_mask_post", "fill_mask"],
        "graphs": {
            "fill_mask": {
                "fp32": {"graph": "model.fp32.onnx", "MB": 12.25, "cosine": None},
                "int8-dynamic": {"graph": "model.int8-dynamic.onnx", "MB": 3.5, "cosine": 0.998765},
            }
        },
        "engines": {"fill_mask": {"chosen": "openvino fp32 f32 1x1", "reason": "fastest of 3 measured on this CPU"}},
    }
    lines = build_summary(record, tmp_path).splitlines()
    assert "fill_mask              served by openvino fp32 f32 1x1 (fastest of 3 measured on this CPU)" in lines
    assert any(line.split() == ["fill_mask", "model.fp32.onnx", "12.2"] for line in lines)
    assert any(line.split() == ["fill_mask", "model.int8-dynamic.onnx", "3.5", "0.99877"] for line in lines)
    assert lines[-1] == f"repository {tmp_path}: 4 models; serve it with: python -m deploy serve"


def test_the_demo_runs_without_importing_the_cli(tmp_path):
    # deploy.cli dispatches to deploy.demo; the demo calling the CLI back made the two modules a cycle
    code = (
        "import sys; from deploy.demo import main; "
        f"code = main(['--skip-build', '--repository', {str(tmp_path)!r}]); "
        "sys.exit(10 * code + ('deploy.cli' in sys.modules))"
    )
    # 10: the demo refused the unbuilt repository (exit 1) and never imported deploy.cli
    assert subprocess.run([sys.executable, "-c", code], check=False, capture_output=True).returncode == 10


def test_the_demo_throughput_rows_come_from_perfs_load_generator(triton_server):
    rows = throughput(triton_server.grpc_url, ["fill_mask", "text_classification"], seconds=1.0, concurrency=2)
    assert [r["task"] for r in rows] == ["fill_mask", "text_classification"]
    for row in rows:
        assert row["tool"] == "async_client" and row["failed"] == 0 and row["requests"] > 0
        assert row["p50_ms"] <= row["p99_ms"] and row["requests_per_s"] > 0
