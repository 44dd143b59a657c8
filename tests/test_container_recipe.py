"""The container recipes, checked without building them: what they install against what the models import, the
entry point against deploy serve's options, staging of the build context, and the stock-Triton profile."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import text_format

from deploy.build import ENGINES_SOURCE, PYTHON_MODELS, RUNNER_SOURCE, SOURCE_REPOSITORY
from deploy.cli import build_parser
from deploy.image import ADMIN_KEY_PATH, CONTAINERFILE, ImageError, stage_repository
from deploy.model_configs import (
    BatchingSettings,
    CpuSettings,
    GraphTensor,
    onnx_cpu_config,
    onnx_stock_cpu_config,
    parse_config,
)
from export.graph_engines import EngineSpec

ROOT = Path(__file__).resolve().parent.parent
GPU_CONTAINERFILE = CONTAINERFILE.with_name("Containerfile.gpu")
BACKEND_MODULE = "triton_python_backend_utils"  # provided by the Python backend itself


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Containerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def arguments(path: Path, instruction: str) -> list[str]:
    return [args for name, args in instructions(path) if name == instruction]


def constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[_normal(name)] = version.strip()
    return pins


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def third_party_distributions(model_files: list[Path]) -> set[str]:
    """The distributions whose modules the files import (stdlib and the backend's own module excluded).

    The shared modules the build ships beside the models (deploy/python_models, export/graph_engines.py) are
    followed, not counted.
    """
    shipped = {p.stem: p for p in (*PYTHON_MODELS.glob("*.py"), ENGINES_SOURCE) if p.stem != "__init__"}
    modules: set[str] = set()
    todo, seen = list(model_files), set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = {node.module.split(".")[0]}
            else:
                continue
            todo += [shipped[n] for n in names if n in shipped]
            modules |= names - set(shipped)
    modules -= set(sys.stdlib_module_names) | {BACKEND_MODULE, "__future__"}
    owners = importlib.metadata.packages_distributions()
    unknown = sorted(m for m in modules if m not in owners)
    assert not unknown, f"imported modules no installed distribution provides: {unknown}"
    return {_normal(owners[m][0]) for m in modules}


def _requirement_names(pyproject: str, key: str) -> set[str]:
    """Distribution names in pyproject's `key = [...]` list (tomllib is 3.11+; the project supports 3.10)."""
    block = re.search(rf"^{key} = \[(.*?)^\]", pyproject, re.M | re.S).group(1)
    return {_normal(m) for m in re.findall(r'^\s*"([A-Za-z0-9_.-]+)', block, re.M)}


def committed_python_models() -> list[Path]:
    # not what a build generated into the same folder (the <task>_onnx runners, the second tokenizer: .gitignore)
    generated = ("_onnx", "tokenizer_choices")
    return sorted(p for p in SOURCE_REPOSITORY.glob("*/1/model.py") if not p.parent.parent.name.endswith(generated))


def test_gpu_recipe_pip_installs_exactly_what_the_python_models_import_at_the_project_pins():
    # Stock tritonserver runs <task>_onnx with its own onnxruntime backend; the committed models (tokenizers and
    # post-processing) stay Python-backend models.
    needed = third_party_distributions(committed_python_models())
    assert needed == {"numpy", "tokenizers"}  # what they import today; a new import must reach the recipe
    installs = [shlex.split(a) for a in arguments(GPU_CONTAINERFILE, "RUN") if "pip install" in a]
    assert len(installs) == 1
    pinned = dict(arg.split("==") for arg in installs[0] if "==" in arg)
    assert {_normal(n) for n in pinned} == needed
    pins = constraints()
    assert {_normal(n): v for n, v in pinned.items()} == {n: pins[n] for n in needed}


def test_cpu_image_installs_the_serve_extra_which_covers_every_import_of_the_served_models():
    needed = third_party_distributions([*committed_python_models(), RUNNER_SOURCE])
    assert needed == {"numpy", "tokenizers", "onnxruntime", "openvino"}
    pyproject = (ROOT / "pyproject.toml").read_text()
    base, serve = (_requirement_names(pyproject, key) for key in ("dependencies", "serve"))
    assert needed <= base | serve
    (pip,) = [a for a in arguments(CONTAINERFILE, "RUN") if "pip install" in a]
    assert "--no-index" in pip and "--find-links /tmp/wheels" in pip and '"mobilebert-triton[serve]"' in pip


def test_cpu_containerfile_is_non_root_exposes_the_ports_and_serves_on_all_addresses():
    (base,) = [a for a in arguments(CONTAINERFILE, "ARG") if a.startswith("BASE_IMAGE=")]
    assert re.fullmatch(r"BASE_IMAGE=docker\.io/library/python:3\.11-slim\S*", base)
    assert arguments(CONTAINERFILE, "FROM") == ["${BASE_IMAGE}"]
    assert arguments(CONTAINERFILE, "USER") == ["1000:1000"]
    assert arguments(CONTAINERFILE, "EXPOSE") == ["8000 8001 8002"]
    assert json.loads(arguments(CONTAINERFILE, "ENTRYPOINT")[0]) == ["python", "-m", "deploy", "serve"]
    cmd = build_parser().parse_args(["serve", *json.loads(arguments(CONTAINERFILE, "CMD")[0])])
    assert (cmd.address, str(cmd.repository)) == ("0.0.0.0", "/models")
    assert (cmd.http_port, cmd.grpc_port, cmd.metrics_port) == (8000, 8001, 8002)
    assert cmd.admin_key_file == Path("/run/secrets/admin-key") == Path(ADMIN_KEY_PATH)  # docker/podman secrets' place
    assert cmd.log_file.is_relative_to("/tmp")
    # The context holds only what deploy.image stages.
    assert sorted(a.split()[0] for a in arguments(CONTAINERFILE, "COPY")) == ["repository/", "wheels/"]
    assert sorted(a.split()[0] for a in arguments(GPU_CONTAINERFILE, "COPY")) == ["repository/"]
    assert arguments(GPU_CONTAINERFILE, "USER") == ["triton-server"]
    assert json.loads(arguments(GPU_CONTAINERFILE, "ENTRYPOINT")[0]) == ["tritonserver"]


def test_serving_imports_neither_torch_nor_onnx_which_the_image_does_not_have():
    code = (
        "import sys, deploy.cli, deploy.server, deploy.watchdog; "
        "heavy = {m.split('.')[0] for m in sys.modules} & {'torch', 'onnx', 'onnxscript', 'onnxsim', 'model_def', "
        "'transformers', 'safetensors'}; "
        # export.cpu (stdlib only: the CPU signature manifests record) and export.graph_engines (numpy; the runtimes
        # only when an engine is opened: the engine settings configs carry) are the export modules serving reads.
        "heavy |= {m for m in sys.modules if m.startswith('export.')} - {'export.cpu', 'export.graph_engines'}; "
        "print(sorted(heavy))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == "[]"


def test_staging_copies_exactly_the_models_build_json_lists(tmp_path):
    repo = tmp_path / "repo"
    for model in ("tokenizer", "fill_mask", "fill_mask_onnx", "question_answering"):
        (repo / model / "1").mkdir(parents=True)
        (repo / model / "config.pbtxt").write_text(f'name: "{model}"')
    (repo / "fill_mask_onnx" / "1" / "__pycache__").mkdir()
    (repo / "fill_mask_onnx" / "1" / "openvino-cache" / "0123").mkdir(parents=True)  # this CPU's compiled models
    (repo / "build.json").write_text(json.dumps({"models": ["tokenizer", "fill_mask", "fill_mask_onnx"]}))
    target = tmp_path / "context" / "repository"
    assert stage_repository(repo, target) == ["tokenizer", "fill_mask", "fill_mask_onnx"]
    assert sorted(p.name for p in target.iterdir()) == ["build.json", "fill_mask", "fill_mask_onnx", "tokenizer"]
    assert not (target / "fill_mask_onnx" / "1" / "__pycache__").exists()
    assert not (target / "fill_mask_onnx" / "1" / "openvino-cache").exists()
    assert (target / "fill_mask" / "config.pbtxt").read_text() == 'name: "fill_mask"'


def test_staging_refuses_an_unbuilt_or_incomplete_repository(tmp_path):
    with pytest.raises(ImageError, match=r"has no build.json: build it first"):
        stage_repository(tmp_path, tmp_path / "out")
    (tmp_path / "build.json").write_text(json.dumps({"models": ["tokenizer"]}))
    with pytest.raises(ImageError, match=r"lacks models its build.json lists: \['tokenizer'\]"):
        stage_repository(tmp_path, tmp_path / "out")


def test_serve_fails_clearly_when_the_admin_key_file_cannot_be_read_or_created(tmp_path):
    (tmp_path / "repo").mkdir()
    (tmp_path / "not-a-dir").write_text("")
    result = subprocess.run(
        [sys.executable, "-m", "deploy", "serve", "--repository", str(tmp_path / "repo"),
         "--admin-key-file", str(tmp_path / "not-a-dir" / "admin-key")],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert "serve failed: cannot read or create the admin key file" in result.stderr
    assert "Traceback" not in result.stderr


def test_stock_cpu_profile_is_the_onnxruntime_backend_on_cpu_with_the_default_profiles_io(tmp_path):
    signature = (
        [GraphTensor("input_ids", 8, (-1,)), GraphTensor("attention_mask", 8, (-1,))],
        [GraphTensor("logits", 11, (2,))],
    )
    batching, cpu = BatchingSettings(), CpuSettings(intra_op_threads=2, instances=3, streams=2)
    stock = onnx_stock_cpu_config(
        "t_onnx", "model.int8-dynamic.onnx", signature, batched=True, batching=batching, cpu=cpu
    )
    path = tmp_path / "stock-cpu.pbtxt"
    path.write_text(text_format.MessageToString(stock))
    parsed = parse_config(path)
    assert parsed.backend == "onnxruntime" and parsed.default_model_filename == "model.int8-dynamic.onnx"
    assert parsed.instance_group[0].kind == parsed.instance_group[0].KIND_CPU
    assert parsed.instance_group[0].count == 6  # the native backend has no streams: 3 instances x 2 streams
    assert parsed.parameters["intra_op_thread_count"].string_value == "2"
    assert list(parsed.dynamic_batching.preferred_batch_size) == list(batching.preferred_batch_sizes)
    engine = EngineSpec("onnxruntime", "model.int8-dynamic.onnx", threads=2)
    axes = {t.name: [-1, *t.dims] for t in signature[1]}
    default = onnx_cpu_config("t_onnx", engine, signature, batched=True, batching=batching, cpu=cpu, output_axes=axes)
    assert parsed.input == default.input and parsed.output == default.output
    assert parsed.max_batch_size == default.max_batch_size
