"""The export pipeline, per head: FP32 ONNX -> onnxsim -> INT8 (dynamic, QDQ) -> validation -> manifest.

Output layout (what the Triton repository build copies into `<task>_model/1/`):

    <out>/<task>/model.fp32.onnx           model.fp32.json           (manifest)
    <out>/<task>/model.int8-dynamic.onnx   model.int8-dynamic.json
    <out>/<task>/model.int8-qdq.onnx       model.int8-qdq.json

Re-running with unchanged inputs skips the work: each manifest records a cache key (hash of the checkpoint files,
the settings that flavour depends on, the calibration text, the tool versions and the export code) and the graph's
own hash; only a flavour whose input changed, or whose graph is damaged, rebuilds. Each manifest also lists the CPUs
(kernel-relevant instruction sets, export/cpu.py) it passed its gates on: on a CPU with another signature the
graph is validated again before it is reused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

import model_def
from model_def import CheckpointError, MissingWeightsError, MobileBertModel, MobileBertTokenizer

from .attention_fusion import fuse_attention
from .cpu import cpu_signature, same_kernels
from .engine_validation import openvino_version, validate_engines
from .errors import ExportError, GateFailure
from .folding import FoldedEncoder, fold_blockers, fold_encoder
from .heads import FILL_MASK_MAX_MASKS, FILL_MASK_TOP_K, HEAD_SPECS, INPUT_NAMES, HeadSpec
from .kernel_check import check_kernels
from .onnx_export import DEFAULT_OPSET, export_fp32
from .quantize import (
    DynamicSettings,
    QdqSettings,
    fp32_nodes,
    node_scopes,
    qdq_selection,
    quantize_dynamic_graph,
    quantize_qdq_graph,
)
from .sample_inputs import Batch, head_batches
from .simplify import op_histogram, simplify
from .validate import Figures, Gates, apply_gates, compare, torch_outputs

logger = logging.getLogger(__name__)

FLAVOURS = ("fp32", "int8-dynamic", "int8-qdq")
MANIFEST_VERSION = 2  # 2: per-flavour cache keys, validated_on, kernel_check
_CODE_FILES = (
    "attention_fusion.py",
    "engine_validation.py",
    "folding.py",
    "graph_engines.py",
    "kernel_check.py",
    "heads.py",
    "onnx_export.py",
    "simplify.py",
    "quantize.py",
    "pipeline.py",
    "sample_inputs.py",
    "validate.py",
)


@dataclass
class ExportSettings:
    flavours: tuple[str, ...] = FLAVOURS
    opset: int = DEFAULT_OPSET
    max_seq: int = 512
    simplify: bool = True
    fold_nonorm: bool = True  # fold NoNorm into Linear weights where the config allows (export/folding.py)
    fill_mask_max_masks: int = FILL_MASK_MAX_MASKS
    fill_mask_top_k: int = FILL_MASK_TOP_K
    validation_examples: int = 64
    calibration_examples: int = 64
    batch_size: int = 8
    max_length: int = 128
    calibration_file: str | None = None
    threads: int = 2
    dynamic: DynamicSettings = field(default_factory=DynamicSettings)
    qdq: QdqSettings = field(default_factory=QdqSettings)
    gates: Gates = field(default_factory=Gates)
    force: bool = False  # export heads whose weights the checkpoint lacks (random init)

    def __post_init__(self) -> None:
        unknown = set(self.flavours) - set(FLAVOURS)
        if unknown:
            raise ExportError(f"unknown flavour(s) {sorted(unknown)}; choose from {FLAVOURS}")
        if not 1 <= self.max_length <= self.max_seq:
            raise ExportError(f"max_length must be in [1, max_seq={self.max_seq}], got {self.max_length}")

    def cache_dict(self) -> dict:
        data = asdict(self)
        data.pop("force")
        data.pop("threads")
        return data

    def flavour_cache_dict(self, flavour: str) -> dict:
        """The settings one flavour's graph depends on (the others' settings do not invalidate it)."""
        data = self.cache_dict()
        for name in ("flavours", "dynamic", "qdq", "calibration_file", "calibration_examples"):
            data.pop(name)
        if flavour == "int8-dynamic":
            data["dynamic"] = asdict(self.dynamic)
        elif flavour == "int8-qdq":
            data["qdq"] = asdict(self.qdq)
            data["calibration_examples"] = self.calibration_examples
            # Keyed by content: an edited file at the same path recalibrates, a moved one does not.
            data["calibration_file"] = _sha256_file(Path(self.calibration_file)) if self.calibration_file else None
        return data


# ------------------------------------------------------------------------------------------------------- hashing


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_hash(directory: Path) -> str:
    """Hash of the files that define the model and tokenizer (not of unrelated files in the directory)."""
    digest = hashlib.sha256()
    names = (
        "config.json",
        "model.safetensors",
        "model.safetensors.index.json",
        "pytorch_model.bin",
        "pytorch_model.bin.index.json",
        "vocab.txt",
        "tokenizer.json",
        "tokenizer_config.json",
    )
    shards = sorted(p.name for p in directory.glob("model-*.safetensors")) + sorted(
        p.name for p in directory.glob("pytorch_model-*.bin")
    )
    for name in (*names, *shards):
        path = directory / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + _sha256_file(path).encode())
    return digest.hexdigest()


def tool_versions() -> dict[str, str]:
    import onnxruntime
    import onnxsim
    import tokenizers

    return {
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "onnxsim": onnxsim.__version__,
        "tokenizers": tokenizers.__version__,
        "openvino": openvino_version() or "absent",
        "python": platform.python_version(),
    }


def _code_hash() -> str:
    digest = hashlib.sha256()
    here = Path(__file__).parent
    for name in _CODE_FILES:
        digest.update((here / name).read_bytes())
    digest.update(Path(model_def.modeling_mobilebert.__file__).read_bytes())
    return digest.hexdigest()[:16]


# ------------------------------------------------------------------------------------------------------ manifest


@dataclass
class Manifest:
    task: str
    flavour: str
    graph: str
    description: str
    inputs: list[str]
    outputs: list[str]
    file_bytes: int
    sha256: str
    nodes: int
    op_histogram: dict[str, int]
    opset: int
    checkpoint: str
    checkpoint_sha256: str
    cache_key: str
    settings: dict
    tool_versions: dict[str, str]
    validation: dict
    fp32_nodes: dict[str, dict] = field(default_factory=dict)
    simplification: dict = field(default_factory=dict)
    folding: dict = field(default_factory=dict)
    attention_fusion: dict = field(default_factory=dict)  # int8-dynamic: fused attention count, what was left alone
    # INT8 graphs: the graph against its exact-integer emulation on this CPU (export/kernel_check.py).
    kernel_check: dict = field(default_factory=dict)
    # Other CPU engines on this graph (OpenVINO per precision), held to the serving gates on this CPU
    # (export/engine_validation.py): deploy build serves only a candidate that passed.
    engines: dict = field(default_factory=dict)
    # CPU signatures (export/cpu.py) whose kernels ran this graph through its gates.
    validated_on: list[dict] = field(default_factory=list)
    serving: dict = field(default_factory=dict)
    seconds: float = 0.0
    manifest_version: int = MANIFEST_VERSION

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, path: Path) -> Manifest | None:
        """The manifest at `path`, or None when it is missing, unreadable or from another manifest version."""
        data = read_manifest(path)
        if data is None or data.get("manifest_version") != MANIFEST_VERSION:
            return None
        names = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in names})
        except TypeError:
            return None


def read_manifest(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def graph_paths(out_dir: Path, task: str, flavour: str) -> tuple[Path, Path]:
    return out_dir / task / f"model.{flavour}.onnx", out_dir / task / f"model.{flavour}.json"


def cache_keys(task: str, checkpoint_sha256: str, settings: ExportSettings, versions: dict[str, str]) -> dict:
    """flavour -> cache key: what that flavour's graph depends on, hashed."""
    keys = {}
    for flavour in settings.flavours:
        source = {
            "task": task,
            "flavour": flavour,
            "checkpoint": checkpoint_sha256,
            "settings": settings.flavour_cache_dict(flavour),
            "tools": versions,
            "code": _code_hash(),
        }
        keys[flavour] = hashlib.sha256(json.dumps(source, sort_keys=True, default=str).encode()).hexdigest()
    return keys


def cached_manifest(out_dir: Path, task: str, flavour: str, key: str) -> Manifest | None:
    """The flavour's manifest if its graph is up to date for `key` and passed its gates; None means rebuild."""
    graph, manifest_path = graph_paths(out_dir, task, flavour)
    manifest = Manifest.read(manifest_path)
    if manifest is None or manifest.cache_key != key or not graph.is_file():
        return None
    if not manifest.validation.get("passed", False):
        return None  # a graph that missed its gate is never reused
    if graph.stat().st_size != manifest.file_bytes or _sha256_file(graph) != manifest.sha256:
        logger.warning("%s/%s: %s differs from its manifest (damaged?); rebuilding", task, flavour, graph.name)
        return None
    return manifest


# ---------------------------------------------------------------------------------------------------- the steps


def load_head(spec: HeadSpec, checkpoint: Path, force: bool) -> model_def.MobileBertPreTrainedModel:
    """The PyTorch head with eager attention (the pattern ORT fuses); refuses heads the checkpoint cannot serve."""
    try:
        model = spec.model_class.from_pretrained(checkpoint, strict=not force, attn_implementation="eager")
    except MissingWeightsError as exc:
        raise ExportError(
            f"{spec.name}: the checkpoint {checkpoint} cannot serve this head - its weights are missing, so the "
            f"exported graph would be randomly initialised ({exc}). Use a checkpoint fine-tuned for "
            f"{spec.name}, or pass force=True (--force) to export it anyway."
        ) from exc
    except CheckpointError as exc:
        raise ExportError(f"{spec.name}: {exc}") from exc
    broken = [name for name, tensor in model.state_dict().items() if not torch.isfinite(tensor).all()]
    if broken:
        # Say so here: further down, the quantizer fails on NaN scales with a bare "scale issue" assertion.
        shown = ", ".join(broken[:5]) + (f" and {len(broken) - 5} more" if len(broken) > 5 else "")
        raise ExportError(
            f"{spec.name}: the checkpoint {checkpoint} holds non-finite (NaN/inf) weights in {len(broken)} tensors "
            f"({shown}); the training that wrote it diverged"
        )
    return model


def session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ExportError(f"cannot load ONNX graph {path}: {type(exc).__name__}: {exc}") from exc


def run_graph(sess: ort.InferenceSession, batches: list[Batch], names: tuple[str, ...]) -> list[list[np.ndarray]]:
    return [sess.run(list(names), {n: b.arrays[n] for n in INPUT_NAMES}) for b in batches]


def _ensure_writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create output directory {out_dir}: {exc}") from exc
    if not os.access(out_dir, os.W_OK):
        raise ExportError(f"output directory {out_dir} is not writable")


@dataclass
class _Head:
    """What every flavour of one task is built and validated from: loaded once per export."""

    task: str
    spec: HeadSpec
    checkpoint: Path
    out_dir: Path
    settings: ExportSettings
    model: model_def.MobileBertPreTrainedModel
    tokenizer: MobileBertTokenizer
    module: torch.nn.Module  # the PyTorch reference
    export_module: torch.nn.Module  # what is exported (NoNorm folded where possible)
    folding: dict
    serving: dict
    validation: list[Batch]
    reference: list[list[np.ndarray]]


@dataclass
class _Fp32Graph:
    path: Path
    model: onnx.ModelProto
    scopes: dict[str, str]
    simplification: dict


def _load(task: str, checkpoint: Path, out_dir: Path, settings: ExportSettings, step: _Stepper) -> _Head:
    spec = HEAD_SPECS[task]
    step("load checkpoint")
    model = load_head(spec, checkpoint, settings.force)
    try:
        tokenizer = MobileBertTokenizer.from_pretrained(checkpoint)
    except (OSError, ValueError) as exc:
        raise ExportError(f"{task}: the checkpoint {checkpoint} has no usable tokenizer: {exc}") from exc
    options = {}
    serving: dict = {"max_seq": min(settings.max_seq, model.config.max_position_embeddings)}
    if task == "fill_mask":
        options = {
            "mask_token_id": tokenizer.mask_token_id,
            "max_masks": settings.fill_mask_max_masks,
            "top_k": settings.fill_mask_top_k,
        }
        serving.update(options)
    if spec.model_class.__name__ in ("MobileBertForSequenceClassification", "MobileBertForTokenClassification"):
        serving["id2label"] = {str(k): v for k, v in model.config.id2label.items()}
        serving["problem_type"] = model.config.problem_type
    module = spec.build(model, **options).eval()
    blockers = fold_blockers(model.config)
    folded = settings.fold_nonorm and not blockers
    export_module = module
    if folded:
        step("fold NoNorm")
        # FoldedEncoder has MobileBertModel's forward, so the base model's export wrapper applies to it as is.
        folded_model = FoldedEncoder(model).eval() if isinstance(model, MobileBertModel) else fold_encoder(model)
        export_module = spec.build(folded_model, **options).eval()
    step("validation inputs")
    validation = head_batches(
        spec,
        tokenizer,
        count=settings.validation_examples,
        batch_size=settings.batch_size,
        max_length=settings.max_length,
        seed=1,
    )
    return _Head(
        task=task,
        spec=spec,
        checkpoint=checkpoint,
        out_dir=out_dir,
        settings=settings,
        model=model,
        tokenizer=tokenizer,
        module=module,
        export_module=export_module,
        folding={"nonorm_folded": folded, "blockers": blockers if settings.fold_nonorm else ["disabled"]},
        serving=serving,
        validation=validation,
        reference=[torch_outputs(module, b) for b in validation],
    )


def _export_fp32(head: _Head, path: Path, step: _Stepper) -> _Fp32Graph:
    """The FP32 graph every flavour starts from, with the module path of each node (for the INT8 node choices)."""
    step("export FP32")
    raw = export_fp32(
        head.spec,
        head.export_module,
        path,
        max_seq=head.serving["max_seq"],
        vocab_size=head.model.config.vocab_size,
        opset=head.settings.opset,
    )
    scopes = node_scopes(raw)  # read before simplification, which drops the exporter's metadata
    nodes = len(raw.graph.node)
    simplification: dict = {"nodes_before": nodes, "nodes_after": nodes, "simplified": False}
    if head.settings.simplify:
        step("onnxsim")
        result = simplify(raw, head.spec)
        simplification = {
            "nodes_before": result.nodes_before,
            "nodes_after": result.nodes_after,
            "simplified": result.simplified,
            "fallback_reason": result.fallback_reason,
        }
        if result.simplified:
            onnx.save_model(result.model, str(path))
    return _Fp32Graph(path, onnx.load(str(path), load_external_data=False), scopes, simplification)


def _build_int8_dynamic(head: _Head, fp32: _Fp32Graph, out: Path, step: _Stepper) -> dict:
    """Quantize dynamically (attention fused first); returns the manifest fields this flavour adds."""
    dynamic = head.settings.dynamic
    step("quantize int8-dynamic")
    kept = fp32_nodes(fp32.model, fp32.scopes, dynamic.fp32_scopes, dynamic.op_types)
    source, fusion = fp32.path, {}
    if dynamic.fuse_attention:
        step("fuse attention")
        fused, report = fuse_attention(fp32.model, head.model.config.num_attention_heads)
        fusion = report.to_dict()
        if report.fused:
            source = out.with_name(out.name + ".fused-fp32.tmp")
            onnx.save_model(fused, str(source))
        del fused
    try:
        quantize_dynamic_graph(source, out, dynamic, kept)
    finally:
        if source != fp32.path:
            source.unlink(missing_ok=True)
    return {"fp32_nodes": kept, "attention_fusion": fusion}


def _build_int8_qdq(head: _Head, fp32: _Fp32Graph, out: Path, step: _Stepper) -> dict:
    """Calibrate on real text and quantize the FFNs with static QDQ; returns the manifest fields it adds."""
    step("calibrate + quantize int8-qdq")
    settings = head.settings
    calibration = head_batches(
        head.spec,
        head.tokenizer,
        count=settings.calibration_examples,
        batch_size=settings.batch_size,
        max_length=settings.max_length,
        seed=2,
        text_file=settings.calibration_file,
    )
    include, kept = qdq_selection(fp32.model, fp32.scopes, settings.qdq)
    quantize_qdq_graph(fp32.path, out, settings.qdq, calibration, include)
    return {"fp32_nodes": kept}


_BUILDERS = {"int8-dynamic": _build_int8_dynamic, "int8-qdq": _build_int8_qdq}


def _validate(head: _Head, flavour: str, graph_path: Path, step: _Stepper) -> tuple[Figures, dict, dict]:
    """Figures against PyTorch, for INT8 the kernel check, and the other engines' figures; gates not yet applied
    to onnxruntime's (the other engines' gates are recorded, not raised)."""
    step(f"validate {flavour}")
    settings = head.settings
    candidate = run_graph(session(graph_path, settings.threads), head.validation, head.spec.output_names)
    figures = compare(head.spec, head.validation, head.reference, candidate)
    kernels = {}
    if flavour != "fp32":
        check = check_kernels(graph_path, head.validation, head.spec.output_names, INPUT_NAMES, settings.threads)
        kernels = check.to_dict()
    step(f"validate {flavour} on other engines")
    engines = validate_engines(
        head.spec, flavour, graph_path, head.validation, head.reference, settings.gates, settings.threads
    )
    return figures, kernels, engines


def _gate(head: _Head, flavour: str, figures: Figures, kernels: dict, write: Callable[[], None]) -> None:
    """Apply the gates; the manifest is written either way, so the figures of a failure can be inspected."""
    try:
        apply_gates(head.spec, flavour, figures, head.settings.gates)
    except GateFailure as exc:
        if kernels and not kernels["agrees"]:
            cpu = cpu_signature()
            raise GateFailure(
                f"{exc}. onnxruntime's INT8 kernels on this CPU ({cpu['model']}; {' '.join(cpu['isa'])}) disagree "
                f"with exact integer arithmetic on this graph (max relative difference "
                f"{kernels['max_rel_diff']:.3g}): the kernel, not the quantization, loses the fidelity"
            ) from exc
        raise
    finally:
        write()


def _write_manifest(head: _Head, manifest: Manifest, figures: Figures) -> None:
    manifest.validation = figures.to_dict()
    if figures.passed and not any(same_kernels(cpu, cpu_signature()) for cpu in manifest.validated_on):
        manifest.validated_on.append(cpu_signature())
    manifest.write(graph_paths(head.out_dir, head.task, manifest.flavour)[1])


def _revalidate(head: _Head, manifest: Manifest, step: _Stepper) -> Manifest:
    """A cached graph proven on other CPUs only: run its validation and gates on this one before reuse."""
    graph_path = graph_paths(head.out_dir, head.task, manifest.flavour)[0]
    logger.info("%s/%s: validated on other CPUs only; validating on this one", head.task, manifest.flavour)
    figures, kernels, engines = _validate(head, manifest.flavour, graph_path, step)
    manifest.kernel_check = kernels
    manifest.engines = engines
    _gate(head, manifest.flavour, figures, kernels, lambda: _write_manifest(head, manifest, figures))
    return manifest


def export_head(
    task: str,
    checkpoint: str | Path,
    out_dir: str | Path,
    settings: ExportSettings | None = None,
    progress: object | None = None,
) -> dict[str, Manifest]:
    """Export one task's graphs; returns flavour -> manifest. Only stale flavours are rebuilt."""
    settings = settings or ExportSettings()
    if task not in HEAD_SPECS:
        raise ExportError(f"unknown task {task!r}; choose from {sorted(HEAD_SPECS)}")
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    if not checkpoint.is_dir():
        raise ExportError(f"checkpoint directory {checkpoint} does not exist")
    if settings.calibration_file and not Path(settings.calibration_file).is_file():
        raise ExportError(f"text file {settings.calibration_file} does not exist")
    _ensure_writable(out_dir)
    (out_dir / task).mkdir(parents=True, exist_ok=True)

    ckpt_hash = checkpoint_hash(checkpoint)
    versions = tool_versions()
    keys = cache_keys(task, ckpt_hash, settings, versions)
    manifests: dict[str, Manifest | None] = {f: cached_manifest(out_dir, task, f, keys[f]) for f in settings.flavours}
    here = cpu_signature()
    unproven = [
        f for f, m in manifests.items() if m is not None and not any(same_kernels(c, here) for c in m.validated_on)
    ]
    stale = [f for f, m in manifests.items() if m is None]
    if not stale and not unproven:
        logger.info("%s: up to date, skipped", task)
        return {f: m for f, m in manifests.items() if m is not None}

    torch.set_num_threads(settings.threads)
    step = _Stepper(progress, task)
    head = _load(task, checkpoint, out_dir, settings, step)
    for flavour in unproven:
        manifests[flavour] = _revalidate(head, manifests[flavour], step)
    if not stale:
        return {f: m for f, m in manifests.items() if m is not None}

    fp32_path = graph_paths(out_dir, task, "fp32")[0]
    # The FP32 graph is every INT8 flavour's source. When only INT8 flavours are stale it is re-exported to a
    # scratch file (the export is deterministic), leaving the up-to-date FP32 graph and its manifest untouched.
    scratch = "fp32" not in stale
    source_path = fp32_path.with_name("model.fp32.source.tmp.onnx") if scratch else fp32_path
    try:
        fp32 = _export_fp32(head, source_path, step)
        for flavour in (f for f in FLAVOURS if f in stale):
            manifests[flavour] = _build_flavour(head, flavour, fp32, keys[flavour], ckpt_hash, versions, step)
    finally:
        if scratch:
            source_path.unlink(missing_ok=True)
    return {f: m for f, m in manifests.items() if m is not None}


def _build_flavour(
    head: _Head,
    flavour: str,
    fp32: _Fp32Graph,
    key: str,
    ckpt_hash: str,
    versions: dict[str, str],
    step: _Stepper,
) -> Manifest:
    started = time.perf_counter()
    graph_path = graph_paths(head.out_dir, head.task, flavour)[0]
    extra = _BUILDERS[flavour](head, fp32, graph_path, step) if flavour in _BUILDERS else {}
    figures, kernels, engines = _validate(head, flavour, graph_path, step)
    graph = onnx.load(str(graph_path), load_external_data=False)
    manifest = Manifest(
        task=head.task,
        flavour=flavour,
        graph=graph_path.name,
        description=head.spec.description,
        inputs=list(INPUT_NAMES),
        outputs=list(head.spec.output_names),
        file_bytes=graph_path.stat().st_size,
        sha256=_sha256_file(graph_path),
        nodes=len(graph.graph.node),
        op_histogram=op_histogram(graph),
        opset=head.settings.opset,
        checkpoint=str(head.checkpoint.resolve()),
        checkpoint_sha256=ckpt_hash,
        cache_key=key,
        settings={"export": head.settings.flavour_cache_dict(flavour)},
        tool_versions=versions,
        validation=figures.to_dict(),
        simplification=fp32.simplification,
        folding=head.folding,
        serving=head.serving,
        kernel_check=kernels,
        engines=engines,
        seconds=round(time.perf_counter() - started, 2),
        **extra,
    )
    _gate(head, flavour, figures, kernels, lambda: _write_manifest(head, manifest, figures))
    logger.info(
        "%s/%s: %.1f MB, %d nodes, cosine %.5f, top-1 %s, in top-5 %s",
        head.task,
        flavour,
        manifest.file_bytes / 1e6,
        manifest.nodes,
        figures.cosine_mean,
        _fmt(figures.top1_agreement),
        _fmt(figures.in_top5),
    )
    return manifest


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


class _Stepper:
    """Names the current step on a tqdm bar (if given) and in the log."""

    def __init__(self, progress: object | None, task: str) -> None:
        self.progress, self.task = progress, task

    def __call__(self, what: str) -> None:
        logger.debug("%s: %s", self.task, what)
        if self.progress is not None:
            self.progress.set_postfix_str(f"{self.task}: {what}")  # type: ignore[attr-defined]
