"""`build`: checkpoints -> export of every head -> a complete Triton model repository.

For each task: export (FP32 + INT8-dynamic + INT8-QDQ, validated, cached by export's own keys), then in the
repository `<task>_onnx/1/` (the graphs, their manifests, the onnxruntime runner), `<task>_post/1/` (committed
post-processing, the deploy/python_models modules it imports, its serving.json / tokenizer.json), the `<task>`
ensemble, and the shared tokenizer model(s) (both generated from the committed tokenizer/1/model.py).
Configs come from deploy.model_configs / deploy.ensemble_configs (Triton's protobuf), three profiles per graph:
config.pbtxt (CPU, INT8-dynamic), configs/fp32.pbtxt (CPU, FP32 reference), configs/gpu.pbtxt (TensorRT INT8),
configs/stock-cpu.pbtxt (the official image's onnxruntime backend on CPU, INT8-dynamic).
`build.json` records which models the build produced; `serve` loads exactly those.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from tqdm import tqdm

from export import graph_engines
from export.graph_engines import EngineSpec
from export.pipeline import ExportSettings, Manifest, export_head, graph_paths
from model_def import MobileBertConfig, MobileBertTokenizer

from .build_record import BUILD_RECORD
from .build_record import read_build_record as read_build_record  # re-exported: demo, soak and perf import it here
from .engine_choice import EngineChoice, EngineTrial, allot, candidates, choose, trial_feeds
from .ensemble_configs import ensemble_config, post_config
from .model_configs import (
    DEFAULT_LENGTH_BUCKETS,
    BatchingSettings,
    CpuSettings,
    GpuSettings,
    choices_tokenizer_config,
    graph_signature,
    onnx_cpu_config,
    onnx_gpu_config,
    onnx_stock_cpu_config,
    onnx_stock_openvino_config,
    output_axes,
    tokenizer_config,
    write_config,
)
from .tasks import CHOICES_TOKENIZER, DEPLOYMENTS, POST_MODULES, TOKENIZER

logger = logging.getLogger("deploy.build")
SOURCE_REPOSITORY = Path(__file__).resolve().parent.parent / "triton_repo"
PYTHON_MODELS = Path(__file__).resolve().parent / "python_models"
RUNNER_SOURCE = PYTHON_MODELS / "onnx_runner.py"
ENGINES_SOURCE = Path(graph_engines.__file__)  # the runner imports it from its version folder
BOUNDED_RUNS_SOURCE = PYTHON_MODELS / "bounded_runs.py"  # likewise
PLACED_FROM = "mobilebert_triton.placed_from"  # graph metadata: inode:size:mtime of the export file it came from


class BuildError(RuntimeError):
    """The repository could not be built; the message names the task and the problem."""


@dataclass
class BuildSettings:
    length_buckets: tuple[int, ...] = DEFAULT_LENGTH_BUCKETS
    truncation: str = "longest_first"
    max_choices: int = 32
    batching: BatchingSettings = field(default_factory=BatchingSettings)
    cpu: CpuSettings = field(default_factory=CpuSettings)
    gpu: GpuSettings = field(default_factory=GpuSettings)
    export: ExportSettings = field(default_factory=ExportSettings)
    export_dir: Path = Path("artifacts/onnx")
    engine_trial: EngineTrial = field(default_factory=EngineTrial)


def build_repository(repository: Path, checkpoints: dict[str, Path], settings: BuildSettings | None = None) -> dict:
    """Build every task in `checkpoints` (task -> checkpoint dir) into `repository`; returns the build record."""
    settings = settings or BuildSettings()
    repository = Path(repository)
    unknown = sorted(set(checkpoints) - set(DEPLOYMENTS))
    if unknown:
        raise BuildError(f"no deployment for task(s) {unknown}; deployable: {sorted(DEPLOYMENTS)}")
    if not checkpoints:
        raise BuildError("nothing to build: no task was given a checkpoint")
    tokenizer_json, model_max_length = _common_tokenizer(checkpoints)
    check_length_buckets(settings.length_buckets, model_max_length)
    flavours = tuple(dict.fromkeys(("fp32", settings.cpu.graph_flavour, settings.gpu.graph_flavour)))
    export_settings = settings.export
    export_settings.flavours = flavours
    repository.mkdir(parents=True, exist_ok=True)

    models: list[str] = []
    report: dict[str, dict] = {}
    engines: dict[str, dict] = {}
    placed: dict[str, _PlacedTask] = {}
    with tqdm(sorted(checkpoints.items()), desc="build", unit="task") as bar:
        for task, checkpoint in bar:
            manifests = export_head(task, checkpoint, settings.export_dir, export_settings, progress=bar)
            placed[task] = _place_task(repository, task, checkpoint, manifests, settings)
    # which engine serves each task is decided for the repository as a whole: their memory adds up
    trial = settings.engine_trial
    chosen = allot(
        {task: p.choice for task, p in placed.items()}, trial.extra_mb_per_task * len(placed), trial.min_gain
    )
    for task, task_placed in placed.items():
        report[task], engines[task] = _configure_task(repository, task_placed, chosen[task], tokenizer_json, settings)
        models += DEPLOYMENTS[task].models
    tokenizers = {DEPLOYMENTS[t].tokenizer for t in checkpoints}
    for name in sorted(tokenizers):
        add_tokenizer_model(repository, name, tokenizer_json, settings)
    record = {
        "models": sorted(tokenizers) + models,
        "tasks": sorted(checkpoints),
        "checkpoints": {t: str(Path(c).resolve()) for t, c in checkpoints.items()},
        "profiles": {
            "default": "CPU, " + ", ".join(f"{t}: {e['chosen']}" for t, e in sorted(engines.items())),
            "fp32": "CPU, onnxruntime fp32",
            "gpu": f"GPU, onnxruntime backend + TensorRT INT8 on {settings.gpu.graph_flavour}",
            "stock-cpu": f"CPU, official Triton image's onnxruntime backend on {settings.cpu.graph_flavour}",
            "stock-openvino": "CPU, official Triton image's openvino backend on the graph OpenVINO was validated on",
        },
        "settings": json.loads(json.dumps(asdict(settings), default=str)),
        "graphs": report,
        "engines": engines,  # task -> the engine serving its default profile, and the build's measurement
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (repository / BUILD_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    logger.info("built %d models for %d tasks into %s", len(record["models"]), len(checkpoints), repository)
    return record


def check_length_buckets(length_buckets: tuple[int, ...], model_max_length: int) -> None:
    if max(length_buckets) > model_max_length:
        raise BuildError(
            f"the largest length bucket {max(length_buckets)} exceeds the tokenizer's model_max_length "
            f"{model_max_length}"
        )


def _common_tokenizer(checkpoints: dict[str, Path]) -> tuple[str, int]:
    """The one tokenizer every task's checkpoint uses (the tokenizer model is shared by all ensembles)."""
    seen: dict[str, list[str]] = {}
    max_length = 0
    for task, checkpoint in checkpoints.items():
        try:
            tokenizer = MobileBertTokenizer.from_pretrained(checkpoint)
        except (OSError, ValueError) as exc:
            raise BuildError(f"{task}: checkpoint {checkpoint} has no usable tokenizer: {exc}") from exc
        seen.setdefault(tokenizer.backend.to_str(), []).append(task)
        max_length = tokenizer.model_max_length
    if len(seen) > 1:
        groups = "; ".join(", ".join(sorted(tasks)) for tasks in seen.values())
        raise BuildError(
            f"the checkpoints use {len(seen)} different tokenizers (tasks grouped by tokenizer: {groups}); "
            "one repository serves one tokenizer, so build these into separate repositories"
        )
    return next(iter(seen)), max_length


def place_file(source: Path, target: Path) -> None:
    """Hard-link (else copy) an artifact into the repository, replacing what is there."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() or target.is_symlink():
        if target.resolve() == source.resolve():
            return
        target.unlink()
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def place_graph(source: Path, target: Path) -> None:
    """The ONNX graph `source` at `target` with its weights in a file beside it, `<target name>.data`.

    onnxruntime maps such a file instead of keeping a second copy of the weights it parsed out of the graph: measured
    on the full-size INT8-dynamic QA graph (27 MB), a session held 25 MB less, 8 runners ~180 MB less (issue 15's
    memory target). OpenVINO and Triton's onnxruntime and TensorRT backends read the same layout. The export's own
    files are never written through: both targets are unlinked first (they may be hard links of them). A target
    written from this very source file (its size and modification time, kept in the graph's metadata) is left as it
    is: rewriting eight to sixteen graphs took seconds of every build."""
    import onnx

    data = target.with_name(f"{target.name}.data")
    stat = source.stat()
    stamp = f"{stat.st_ino}:{stat.st_size}:{stat.st_mtime_ns}"
    if _placed_from(source, target, data) == stamp:
        if data.exists():  # a build stopped between writing and this may have left it owner-only
            data.chmod(target.stat().st_mode & 0o777 | 0o444)
        return
    for old in (target, data):
        if old.exists() or old.is_symlink():
            old.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(source))
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, PLACED_FROM: stamp})
    onnx.save_model(
        model,
        str(target),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=data.name,
        size_threshold=1024,
    )
    if data.exists():  # onnx writes none when no tensor reaches the threshold
        # onnx creates it owner-only; a server in an image may run as another user
        data.chmod(target.stat().st_mode & 0o777 | 0o444)


def _placed_from(source: Path, target: Path, data: Path) -> str | None:
    """The source stamp `place_graph` wrote into `target`, or None where it must be written anew: no target, a hard
    link of the source, not readable as a graph, or its weights file `data` missing or shorter than the graph says."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    try:
        if target.samefile(source):
            return None
        graph = onnx.load(str(target), load_external_data=False)
        ends = [
            (info.offset or 0) + (info.length or 0)
            for info in (ExternalDataInfo(t) for t in graph.graph.initializer if uses_external_data(t))
        ]
        if ends and (not data.is_file() or data.stat().st_size < max(ends)):
            return None
    except Exception:  # missing, truncated or not protobuf (DecodeError): written anew
        return None
    return next((p.value for p in graph.metadata_props if p.key == PLACED_FROM), None)


def _copy_python_model(source: Path, model_dir: Path, modules: tuple[str, ...]) -> None:
    """`source` as model_dir/1/model.py, and beside it the deploy/python_models modules it imports (the Python
    backend puts the version folder on the model's sys.path)."""
    if not source.is_file():
        raise BuildError(f"the committed Python model {source} is missing")
    version = model_dir / "1"
    version.mkdir(parents=True, exist_ok=True)
    if source.resolve() != (version / "model.py").resolve():
        shutil.copy2(source, version / "model.py")
    for module in modules:
        shutil.copy2(PYTHON_MODELS / module, version / module)


@dataclass
class _PlacedTask:
    """One task's graphs placed in its runner's version folder and its engines measured there."""

    task: str
    manifests: dict[str, Manifest]
    graphs: dict[str, str]  # flavour -> graph file name
    signature: tuple  # (inputs, outputs) of the CPU graph
    limits: dict[str, int]
    output_axes: dict
    choice: EngineChoice  # the trial's figures; `allot` decides what serves


def _place_task(repository: Path, task: str, checkpoint: Path, manifests: dict, settings: BuildSettings) -> _PlacedTask:
    """Place one task's graphs and runner, and measure its candidate engines on this CPU."""
    deployment = DEPLOYMENTS[task]
    onnx_dir = repository / deployment.onnx_model
    version = onnx_dir / "1"
    graphs = {}
    for flavour in manifests:
        graph, manifest = graph_paths(settings.export_dir, task, flavour)
        place_graph(graph, version / graph.name)
        place_file(manifest, version / manifest.name)
        graphs[flavour] = graph.name
    shutil.copy2(RUNNER_SOURCE, version / "model.py")
    shutil.copy2(ENGINES_SOURCE, version / ENGINES_SOURCE.name)
    shutil.copy2(BOUNDED_RUNS_SOURCE, version / BOUNDED_RUNS_SOURCE.name)
    cpu_graph = version / graphs[settings.cpu.graph_flavour]
    inputs, outputs = graph_signature(cpu_graph, deployment.batched)
    gpu_inputs, gpu_outputs = graph_signature(version / graphs[settings.gpu.graph_flavour], deployment.batched)
    if (gpu_inputs, gpu_outputs) != (inputs, outputs):
        raise BuildError(
            f"{task}: the {settings.cpu.graph_flavour} and {settings.gpu.graph_flavour} graphs differ in I/O"
        )
    model_config = MobileBertConfig.from_pretrained(checkpoint)
    limits = {
        "vocab_size": model_config.vocab_size,
        "type_vocab_size": model_config.type_vocab_size,
        "max_position_embeddings": model_config.max_position_embeddings,
    }
    cpu = settings.cpu
    layout = {"threads": cpu.intra_op_threads, "streams": cpu.streams}
    specs = candidates(manifests, cpu.graph_flavour, cpu.engine, **layout)
    feeds = trial_feeds(
        {i.name: len(i.dims) + deployment.batched for i in inputs}, settings.engine_trial, limits["vocab_size"]
    )
    choice = choose(version, specs, feeds, settings.engine_trial, cpu.max_run_tokens)
    return _PlacedTask(task, manifests, graphs, (inputs, outputs), limits, output_axes(cpu_graph), choice)


def _configure_task(
    repository: Path, placed: _PlacedTask, choice: EngineChoice, tokenizer_json: str, settings: BuildSettings
) -> tuple[dict, dict]:
    """Write one task's configs with `choice` serving; returns its graphs' figures (per flavour) and the choice."""
    task, manifests, graphs = placed.task, placed.manifests, placed.graphs
    limits, axes = placed.limits, placed.output_axes
    inputs, outputs = placed.signature
    deployment, cpu = DEPLOYMENTS[task], settings.cpu
    onnx_dir = repository / deployment.onnx_model
    common = {"batched": deployment.batched, "batching": settings.batching}
    name = deployment.onnx_model
    layout = {"threads": cpu.intra_op_threads, "streams": cpu.streams}
    logger.info("%s: served by %s (%s)", task, choice.spec.label, choice.reason)
    cpu_config = onnx_cpu_config(
        name, choice.spec, (inputs, outputs), cpu=cpu, output_axes=axes, limits=limits, **common
    )
    write_config(cpu_config, onnx_dir)
    profiles = onnx_dir / "configs"
    profiles.mkdir(exist_ok=True)
    reference = EngineSpec("onnxruntime", graphs["fp32"], **layout)
    fp32 = onnx_cpu_config(name, reference, (inputs, outputs), cpu=cpu, output_axes=axes, limits=limits, **common)
    (profiles / "fp32.pbtxt").write_text(_text(fp32), encoding="utf-8")
    gpu = onnx_gpu_config(name, graphs[settings.gpu.graph_flavour], (inputs, outputs), gpu=settings.gpu, **common)
    (profiles / "gpu.pbtxt").write_text(_text(gpu), encoding="utf-8")
    stock = onnx_stock_cpu_config(
        name, graphs[settings.cpu.graph_flavour], (inputs, outputs), cpu=settings.cpu, **common
    )
    (profiles / "stock-cpu.pbtxt").write_text(_text(stock), encoding="utf-8")
    # OpenVINO in the official image: the graph OpenVINO was validated on (the chosen one when OpenVINO won), one
    # instance with as many streams as the default profile runs inferences in parallel
    openvino = choice.spec
    if openvino.engine != "openvino":
        openvino = EngineSpec("openvino", graphs["fp32"], "f32", **layout)
    openvino = replace(openvino, streams=openvino.streams * cpu.instances)
    stock_openvino = onnx_stock_openvino_config(name, openvino, (inputs, outputs), **common)
    (profiles / "stock-openvino.pbtxt").write_text(_text(stock_openvino), encoding="utf-8")

    post_dir = repository / deployment.post_model
    _copy_python_model(SOURCE_REPOSITORY / deployment.post_model / "1" / "model.py", post_dir, deployment.post_modules)
    manifest = manifests[settings.cpu.graph_flavour]
    serving = dict(manifest.serving)
    serving.update(deployment.serving_defaults)
    if "serving.json" in deployment.post_files:
        (post_dir / "1" / "serving.json").write_text(json.dumps(serving, indent=2) + "\n", encoding="utf-8")
    if "tokenizer.json" in deployment.post_files:
        (post_dir / "1" / "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")
    write_config(post_config(deployment, outputs, settings.batching.max_batch_size), post_dir)

    ensemble_dir = repository / task
    (ensemble_dir / "1").mkdir(parents=True, exist_ok=True)
    write_config(ensemble_config(deployment, inputs, outputs, settings.batching.max_batch_size), ensemble_dir)
    report = {flavour: {"graph": graphs[flavour], **_figures(m)} for flavour, m in manifests.items()}
    return report, choice.to_dict()


def _figures(manifest: Manifest) -> dict:
    return {
        "MB": round(manifest.file_bytes / 1e6, 1),
        "cosine": manifest.validation.get("cosine_mean"),
        "passed": manifest.validation.get("passed"),
    }


def add_tokenizer_model(repository: Path, name: str, tokenizer_json: str, settings: BuildSettings) -> None:
    model_dir = repository / name
    version = model_dir / "1"
    # every tokenizer model (texts, choices) runs the one committed tokenizer/1/model.py
    _copy_python_model(SOURCE_REPOSITORY / TOKENIZER / "1" / "model.py", model_dir, POST_MODULES)
    (version / "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")
    if name == CHOICES_TOKENIZER:
        config = choices_tokenizer_config(
            name=name,
            length_buckets=settings.length_buckets,
            truncation=settings.truncation,
            max_choices=settings.max_choices,
        )
    else:
        config = tokenizer_config(name=name, length_buckets=settings.length_buckets, truncation=settings.truncation)
    write_config(config, model_dir)


def _text(config: object) -> str:
    from google.protobuf import text_format

    return text_format.MessageToString(config)
