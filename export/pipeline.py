"""The export pipeline, per head: FP32 ONNX -> onnxsim -> INT8 (dynamic, QDQ) -> validation -> manifest.

Output layout (what the Triton repository build copies into `<task>_model/1/`):

    <out>/<task>/model.fp32.onnx           model.fp32.json           (manifest)
    <out>/<task>/model.int8-dynamic.onnx   model.int8-dynamic.json
    <out>/<task>/model.int8-qdq.onnx       model.int8-qdq.json

Re-running with unchanged inputs skips the work: each manifest records a cache key (hash of the checkpoint files,
the settings, the tool versions and the export code) and the graph's own hash; a changed input or a damaged graph
rebuilds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

import model_def
from model_def import CheckpointError, MissingWeightsError, MobileBertModel, MobileBertTokenizer

from .attention_fusion import fuse_attention
from .errors import ExportError
from .folding import FoldedEncoder, fold_blockers, fold_encoder
from .heads import FILL_MASK_MAX_MASKS, FILL_MASK_TOP_K, HEAD_SPECS, INPUT_NAMES, HeadSpec
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
MANIFEST_VERSION = 1
_CODE_FILES = (
    "attention_fusion.py",
    "folding.py",
    "heads.py",
    "onnx_export.py",
    "simplify.py",
    "quantize.py",
    "pipeline.py",
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
    serving: dict = field(default_factory=dict)
    seconds: float = 0.0
    manifest_version: int = MANIFEST_VERSION

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")


def read_manifest(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def graph_paths(out_dir: Path, task: str, flavour: str) -> tuple[Path, Path]:
    return out_dir / task / f"model.{flavour}.onnx", out_dir / task / f"model.{flavour}.json"


def _up_to_date(out_dir: Path, task: str, flavour: str, key: str) -> bool:
    graph, manifest_path = graph_paths(out_dir, task, flavour)
    manifest = read_manifest(manifest_path)
    if manifest is None or manifest.get("cache_key") != key or not graph.is_file():
        return False
    if not manifest.get("validation", {}).get("passed", False):
        return False  # a graph that missed its gate is never reused
    if graph.stat().st_size != manifest.get("file_bytes") or _sha256_file(graph) != manifest.get("sha256"):
        logger.warning("%s/%s: %s differs from its manifest (damaged?); rebuilding", task, flavour, graph.name)
        return False
    return True


# ---------------------------------------------------------------------------------------------------- the steps


def load_head(spec: HeadSpec, checkpoint: Path, force: bool) -> model_def.MobileBertPreTrainedModel:
    """The PyTorch head with eager attention (the pattern ORT fuses); refuses heads the checkpoint cannot serve."""
    try:
        return spec.model_class.from_pretrained(checkpoint, strict=not force, attn_implementation="eager")
    except MissingWeightsError as exc:
        raise ExportError(
            f"{spec.name}: the checkpoint {checkpoint} cannot serve this head - its weights are missing, so the "
            f"exported graph would be randomly initialised ({exc}). Use a checkpoint fine-tuned for "
            f"{spec.name}, or pass force=True (--force) to export it anyway."
        ) from exc
    except CheckpointError as exc:
        raise ExportError(f"{spec.name}: {exc}") from exc


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


def export_head(
    task: str,
    checkpoint: str | Path,
    out_dir: str | Path,
    settings: ExportSettings | None = None,
    progress: object | None = None,
) -> dict[str, Manifest | dict]:
    """Export one task's graphs; returns flavour -> manifest (a dict when read back from an up-to-date manifest)."""
    settings = settings or ExportSettings()
    if task not in HEAD_SPECS:
        raise ExportError(f"unknown task {task!r}; choose from {sorted(HEAD_SPECS)}")
    spec = HEAD_SPECS[task]
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    if not checkpoint.is_dir():
        raise ExportError(f"checkpoint directory {checkpoint} does not exist")
    _ensure_writable(out_dir)
    (out_dir / task).mkdir(parents=True, exist_ok=True)

    ckpt_hash = checkpoint_hash(checkpoint)
    versions = tool_versions()
    key_source = {
        "task": task,
        "checkpoint": ckpt_hash,
        "settings": settings.cache_dict(),
        "tools": versions,
        "code": _code_hash(),
    }
    key = hashlib.sha256(json.dumps(key_source, sort_keys=True, default=str).encode()).hexdigest()
    todo = [f for f in settings.flavours if not _up_to_date(out_dir, task, f, key)]
    if not todo:
        logger.info("%s: up to date (cache key %s), skipped", task, key[:12])
        return {f: read_manifest(graph_paths(out_dir, task, f)[1]) for f in settings.flavours}

    torch.set_num_threads(settings.threads)
    step = _Stepper(progress, task)
    step("load checkpoint")
    model = load_head(spec, checkpoint, settings.force)
    try:
        tokenizer = MobileBertTokenizer.from_pretrained(checkpoint)
    except (OSError, ValueError) as exc:
        raise ExportError(f"{task}: the checkpoint {checkpoint} has no usable tokenizer: {exc}") from exc
    options = {}
    if task == "fill_mask":
        options = {
            "mask_token_id": tokenizer.mask_token_id,
            "max_masks": settings.fill_mask_max_masks,
            "top_k": settings.fill_mask_top_k,
        }
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
    reference = [torch_outputs(module, b) for b in validation]

    step("export FP32")
    fp32_path = graph_paths(out_dir, task, "fp32")[0]
    max_seq = min(settings.max_seq, model.config.max_position_embeddings)
    raw = export_fp32(
        spec, export_module, fp32_path, max_seq=max_seq, vocab_size=model.config.vocab_size, opset=settings.opset
    )
    scopes = node_scopes(raw)
    simplification: dict = {
        "nodes_before": len(raw.graph.node),
        "nodes_after": len(raw.graph.node),
        "simplified": False,
    }
    if settings.simplify:
        step("onnxsim")
        result = simplify(raw, spec)
        simplification = {
            "nodes_before": result.nodes_before,
            "nodes_after": result.nodes_after,
            "simplified": result.simplified,
            "fallback_reason": result.fallback_reason,
        }
        if result.simplified:
            onnx.save_model(result.model, str(fp32_path))
    fp32_model = onnx.load(str(fp32_path), load_external_data=False)
    del raw

    folding = {"nonorm_folded": folded, "blockers": blockers if settings.fold_nonorm else ["disabled"]}
    serving = {"max_seq": max_seq}
    if task == "fill_mask":
        serving.update(
            mask_token_id=tokenizer.mask_token_id,
            max_masks=settings.fill_mask_max_masks,
            top_k=settings.fill_mask_top_k,
        )
    if spec.model_class.__name__ in ("MobileBertForSequenceClassification", "MobileBertForTokenClassification"):
        serving["id2label"] = {str(k): v for k, v in model.config.id2label.items()}
        serving["problem_type"] = model.config.problem_type

    common = {
        "task": task,
        "description": spec.description,
        "inputs": list(INPUT_NAMES),
        "outputs": list(spec.output_names),
        "opset": settings.opset,
        "checkpoint": str(checkpoint.resolve()),
        "checkpoint_sha256": ckpt_hash,
        "cache_key": key,
        "tool_versions": versions,
        "simplification": simplification,
        "serving": serving,
        "folding": folding,
    }
    manifests: dict[str, Manifest | dict] = {}
    calibration: list[Batch] | None = None
    for flavour in settings.flavours:
        started = time.perf_counter()
        graph_path, manifest_path = graph_paths(out_dir, task, flavour)
        kept: dict[str, dict] = {}
        fusion: dict = {}
        flavour_settings: dict = {"export": settings.cache_dict()}
        if flavour == "int8-dynamic":
            step("quantize int8-dynamic")
            kept = fp32_nodes(fp32_model, scopes, settings.dynamic.fp32_scopes, settings.dynamic.op_types)
            source = fp32_path
            if settings.dynamic.fuse_attention:
                step("fuse attention")
                fused, report = fuse_attention(fp32_model, model.config.num_attention_heads)
                fusion = report.to_dict()
                if report.fused:
                    source = graph_path.with_name(graph_path.name + ".fused-fp32.tmp")
                    onnx.save_model(fused, str(source))
                del fused
            try:
                quantize_dynamic_graph(source, graph_path, settings.dynamic, kept)
            finally:
                if source != fp32_path:
                    source.unlink(missing_ok=True)
        elif flavour == "int8-qdq":
            step("calibrate + quantize int8-qdq")
            if calibration is None:
                calibration = head_batches(
                    spec,
                    tokenizer,
                    count=settings.calibration_examples,
                    batch_size=settings.batch_size,
                    max_length=settings.max_length,
                    seed=2,
                    text_file=settings.calibration_file,
                )
            include, kept = qdq_selection(fp32_model, scopes, settings.qdq)
            quantize_qdq_graph(fp32_path, graph_path, settings.qdq, calibration, include)
        step(f"validate {flavour}")
        candidate = run_graph(session(graph_path, settings.threads), validation, spec.output_names)
        figures: Figures = compare(spec, validation, reference, candidate)
        graph = onnx.load(str(graph_path), load_external_data=False)
        manifest = Manifest(
            **common,
            flavour=flavour,
            graph=graph_path.name,
            file_bytes=graph_path.stat().st_size,
            sha256=_sha256_file(graph_path),
            nodes=len(graph.graph.node),
            op_histogram=op_histogram(graph),
            settings=flavour_settings,
            validation=figures.to_dict(),
            fp32_nodes=kept,
            attention_fusion=fusion,
            seconds=round(time.perf_counter() - started, 2),
        )
        try:
            apply_gates(spec, "fp32" if flavour == "fp32" else "int8", figures, settings.gates)
        finally:
            manifest.validation = figures.to_dict()
            manifest.write(manifest_path)  # written even on failure, so the figures can be inspected
        logger.info(
            "%s/%s: %.1f MB, %d nodes, cosine %.5f, top-1 %s, in top-5 %s",
            task,
            flavour,
            manifest.file_bytes / 1e6,
            manifest.nodes,
            figures.cosine_mean,
            _fmt(figures.top1_agreement),
            _fmt(figures.in_top5),
        )
        manifests[flavour] = manifest
    return manifests


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
