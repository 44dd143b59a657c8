"""INT8 quantization with onnxruntime's quantizer, in the two flavours the two runtimes need.

- int8-dynamic: weights INT8 ahead of time, activations quantized on the fly (MatMulInteger / DynamicQuantizeMatMul
  on VNNI). For ONNX Runtime on CPU, the default deployment.
- int8-qdq: static QuantizeLinear/DequantizeLinear pairs with scales from calibration on real text. TensorRT's INT8
  path consumes this format (symmetric INT8 activations and weights); ONNX Runtime CPU runs it too.

Some MatMuls stay FP32 on purpose (see `DEFAULT_FP32_SCOPES`): the embedding projection (its input is raw
embeddings with a wide dynamic range, and it runs once per token) and the task's final classifier (a few outputs per
token: negligible time, and its error lands directly on the prediction). The manifest lists every node kept FP32.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)

from .cpu import saturating_int8_kernel
from .errors import ExportError
from .heads import INPUT_NAMES
from .sample_inputs import Batch

logger = logging.getLogger(__name__)

# Module paths (from the exporter's node metadata) whose MatMuls stay FP32, and why.
DEFAULT_FP32_SCOPES: dict[str, str] = {
    "embedding_transformation": "embedding projection: wide-range raw embeddings, one matmul per token",
    "qa_outputs": "final classifier: negligible cost, error lands directly on the prediction",
    "classifier": "final classifier: negligible cost, error lands directly on the prediction",
    "seq_relationship": "final classifier: negligible cost, error lands directly on the prediction",
}


@dataclass
class DynamicSettings:
    # Per-channel weight scales: top-1 agreement 0.998 vs 0.989 per-tensor on a trained small model's fill-mask.
    per_channel: bool = True
    reduce_range: bool = False
    # None: decided by the exporting CPU. Where onnxruntime's U8S8 kernel saturates (x86 without VNNI/AMX:
    # export/cpu.py saturating_int8_kernel), unsigned weights: the U8U8 kernel widens to 16 bits before multiplying,
    # so it is exact, and keeps all 8 bits (7-bit signed weights, `reduce_range`, are exact too but drop one).
    # Elsewhere signed. The resolved value is in the cache key, so a
    # graph built for one kind of kernel is rebuilt for the other.
    weight_type: str | None = None
    # Gather: the 30522 x 128 word-embedding table is the largest tensor left after the MatMuls.
    # Attention: the fused self-attention node (export/attention_fusion.py) becomes QAttention.
    op_types: tuple[str, ...] = ("MatMul", "Gemm", "Gather", "Attention")
    fp32_scopes: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_FP32_SCOPES))
    # One com.microsoft Attention node per layer instead of ~15 nodes (export/attention_fusion.py).
    fuse_attention: bool = True

    def __post_init__(self) -> None:
        if self.weight_type is None:
            self.weight_type = "QUInt8" if saturating_int8_kernel() else "QInt8"

    def to_dict(self) -> dict:
        return asdict(self)


# Static QDQ quantizes only these nodes (regex on the module path): the stacked FFNs, which carry most of
# MobileBERT's FLOPs. Symmetric INT8 activations elsewhere cost fidelity: on the full-size QA head, QDQ on every
# MatMul gave cosine 0.985 and top-5 0.984 (any calibration method), FFN-only 0.998 and 1.0; on a trained fill-mask
# model also quantizing the embedding table and the vocabulary decoder dropped top-1 agreement from 0.998 to 0.943.
# TensorRT runs the rest in FP16, the usual mixed-precision layout.
QDQ_SCOPES: tuple[str, ...] = (
    r"\.ffn\.\d+\.(up|down)$",  # folded encoder: every FFN of a layer (the last one is the layer's own)
    r"\.ffn\.\d+\.(intermediate|output)\.dense$",  # unfolded encoder: the extra FFNs
    r"layer\.\d+\.(intermediate|output)\.dense$",  # unfolded encoder: the layer's own FFN
)
QDQ_REASON = "QDQ keeps it in higher precision (FP16 under TensorRT): symmetric INT8 there costs fidelity"


@dataclass
class QdqSettings:
    # TensorRT consumes symmetric signed INT8 for both activations and weights.
    activation_type: str = "QInt8"
    weight_type: str = "QInt8"
    activation_symmetric: bool = True
    per_channel: bool = True
    calibrate_method: str = "MinMax"
    op_types: tuple[str, ...] = ("MatMul", "Gemm", "Gather")
    quantize_scopes: tuple[str, ...] = QDQ_SCOPES

    def to_dict(self) -> dict:
        return asdict(self)


def node_scopes(model: onnx.ModelProto) -> dict[str, str]:
    """node name -> module path, from the dynamo exporter's 'namespace' metadata (read before simplification)."""
    scopes = {}
    for node in model.graph.node:
        for prop in node.metadata_props:
            if prop.key == "namespace":
                # "<root>/model.qa_outputs: torch.nn.modules.linear.Linear/linear_31: aten.linear.default":
                # the part before the aten op names the module that owns the node.
                parts = prop.value.split("/")
                scopes[node.name] = parts[-2].split(":")[0] if len(parts) >= 2 else ""
    return scopes


def fp32_nodes(model: onnx.ModelProto, scopes: dict[str, str], keep: dict[str, str], op_types: Iterable[str]) -> dict:
    """Names of quantizable nodes whose module path matches a scope in `keep`, with the reason."""
    ops = set(op_types)
    chosen = {}
    for node in model.graph.node:
        if node.op_type not in ops:
            continue
        scope = scopes.get(node.name, "")
        for pattern, reason in keep.items():
            if scope.endswith(pattern) or f".{pattern}." in scope + ".":
                chosen[node.name] = {"scope": scope, "reason": reason}
                break
    return chosen


class _QuietQuantizer(logging.Filter):
    """onnxruntime's quantizer logs 'consider pre-processing' on the root logger for every call; we do our own."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing" not in record.getMessage() and "pre-process" not in record.getMessage()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    root = logging.getLogger()
    quiet = _QuietQuantizer()
    root.addFilter(quiet)
    for handler in root.handlers:
        handler.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)
        for handler in root.handlers:
            handler.removeFilter(quiet)


def qdq_selection(model: onnx.ModelProto, scopes: dict[str, str], settings: QdqSettings) -> tuple[list, dict]:
    """(nodes to quantize, {node kept in higher precision: scope and reason}) for static QDQ."""
    patterns = [re.compile(p) for p in settings.quantize_scopes]
    chosen, kept = [], {}
    for node in model.graph.node:
        if node.op_type not in settings.op_types:
            continue
        scope = scopes.get(node.name, "")
        if any(p.search(scope) for p in patterns):
            chosen.append(node.name)
        elif node.op_type != "Gather" or "embeddings" in scope:
            kept[node.name] = {"scope": scope, "reason": QDQ_REASON}
    return chosen, kept


def quantize_dynamic_graph(fp32_path: Path, out_path: Path, settings: DynamicSettings, exclude: Iterable[str]) -> None:
    try:
        with _quiet():
            quantize_dynamic(
                str(fp32_path),
                str(out_path),
                op_types_to_quantize=list(settings.op_types),
                per_channel=settings.per_channel,
                reduce_range=settings.reduce_range,
                weight_type=getattr(QuantType, settings.weight_type),
                nodes_to_exclude=list(exclude),
                extra_options={"MatMulConstBOnly": True},
            )
    except Exception as exc:
        raise ExportError(f"dynamic quantization of {fp32_path.name} failed: {type(exc).__name__}: {exc}") from exc


class _BatchReader(CalibrationDataReader):
    def __init__(self, batches: list[Batch]) -> None:
        self._batches = batches
        self._iter: Iterator[Batch] = iter(batches)

    def get_next(self) -> dict | None:
        batch = next(self._iter, None)
        return None if batch is None else {name: batch.arrays[name] for name in INPUT_NAMES}

    def rewind(self) -> None:
        self._iter = iter(self._batches)


def quantize_qdq_graph(
    fp32_path: Path, out_path: Path, settings: QdqSettings, calibration: list[Batch], include: Iterable[str]
) -> None:
    if not calibration:
        raise ExportError("static QDQ quantization needs calibration batches, got none")
    try:
        with _quiet():
            quantize_static(
                str(fp32_path),
                str(out_path),
                _BatchReader(calibration),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(settings.op_types),
                per_channel=settings.per_channel,
                activation_type=getattr(QuantType, settings.activation_type),
                weight_type=getattr(QuantType, settings.weight_type),
                nodes_to_quantize=list(include),
                calibrate_method=getattr(CalibrationMethod, settings.calibrate_method),
                extra_options={
                    "ActivationSymmetric": settings.activation_symmetric,
                    "WeightSymmetric": True,
                    "MatMulConstBOnly": True,
                    "CalibTensorRangeSymmetric": settings.activation_symmetric,
                },
                calibration_providers=["CPUExecutionProvider"],
            )
    except Exception as exc:
        raise ExportError(f"static QDQ quantization of {fp32_path.name} failed: {type(exc).__name__}: {exc}") from exc
