"""PyTorch head -> FP32 ONNX with the dynamo exporter, dynamic batch and sequence axes (and choices for MC).

The dynamo exporter keeps Linear layers as MatMul + Add (the legacy exporter's Gemm is skipped by onnxruntime's
dynamic quantization), and the explicit "eager" attention gives the MatMul/Softmax pattern ORT fuses.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import onnx
import torch

from .errors import ExportError
from .heads import INPUT_NAMES, FillMaskTopK, HeadSpec, mask_slot_axis

logger = logging.getLogger(__name__)
# The exporter warns on every call that torchvision's ops cannot be registered; we have no torchvision and need none.
logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)

DEFAULT_OPSET = 18


def sample_inputs(spec: HeadSpec, batch: int = 2, seq: int = 16, vocab_size: int = 30522) -> tuple[torch.Tensor, ...]:
    """Tracing inputs: distinct sizes for every dynamic axis, so none is specialised to a constant."""
    shape = (batch, 3, seq) if spec.choices_axis else (batch, seq)
    gen = torch.Generator().manual_seed(0)
    input_ids = torch.randint(1000, vocab_size, shape, generator=gen)
    attention_mask = torch.ones(shape, dtype=torch.int64)
    token_type_ids = torch.zeros(shape, dtype=torch.int64)
    return input_ids, attention_mask, token_type_ids


def dynamic_shapes(spec: HeadSpec, max_seq: int) -> dict[str, dict[int, torch.export.Dim]]:
    batch = torch.export.Dim("batch", max=4096)
    seq = torch.export.Dim("sequence", max=max_seq)
    dims = {0: batch, 1: torch.export.Dim("choices", max=1024), 2: seq} if spec.choices_axis else {0: batch, 1: seq}
    return {name: dims for name in INPUT_NAMES}


def export_fp32(
    spec: HeadSpec,
    module: torch.nn.Module,
    path: Path,
    *,
    max_seq: int,
    vocab_size: int,
    opset: int = DEFAULT_OPSET,
) -> onnx.ModelProto:
    """Export `module` (a HeadSpec.build() result) to `path` as one self-contained ONNX file."""
    module.eval()
    args = sample_inputs(spec, vocab_size=vocab_size)
    exporter_log = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(exporter_log), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter's axis-renaming chatter
            program = torch.onnx.export(
                module,
                args,
                input_names=list(INPUT_NAMES),
                output_names=list(spec.output_names),
                dynamic_shapes=dynamic_shapes(spec, max_seq),
                dynamo=True,
                opset_version=opset,
                optimize=True,
                verify=False,
            )
    except Exception as exc:
        raise ExportError(f"{spec.name}: torch.onnx.export failed: {type(exc).__name__}: {exc}") from exc
    model = program.model_proto
    if isinstance(module, FillMaskTopK):
        name_mask_slots(model, module.max_masks)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path))  # weights inline: the graph is ~100 MB, under protobuf's 2 GB limit
    check_dynamic_axes(model, spec, where="after export")
    logger.info("%s: exported FP32 ONNX (%d nodes, opset %d) to %s", spec.name, len(model.graph.node), opset, path)
    return model


def name_mask_slots(model: onnx.ModelProto, max_masks: int) -> None:
    """Give the fill-mask outputs' slot axis (axis 1, data-dependent: the exporter calls it u0, u1, ...) the name a
    runner reads as "at most min(max_masks, sequence)" (heads.mask_slot_axis)."""
    for output in model.graph.output:
        dims = output.type.tensor_type.shape.dim
        if len(dims) < 2 or dims[1].HasField("dim_value"):
            raise ExportError(f"fill_mask: output {output.name} has no data-dependent slot axis after export")
        dims[1].dim_param = mask_slot_axis(max_masks)


def check_dynamic_axes(model: onnx.ModelProto, spec: HeadSpec, *, where: str) -> None:
    """Raise if an input lost a dynamic axis (e.g. a simplifier folded the batch or sequence dim to a constant)."""
    for inp in model.graph.input:
        if inp.name not in INPUT_NAMES:
            continue
        dims = inp.type.tensor_type.shape.dim
        if len(dims) != spec.input_rank:
            raise ExportError(f"{spec.name}: input {inp.name} has rank {len(dims)} {where}, expected {spec.input_rank}")
        fixed = [i for i, d in enumerate(dims) if d.HasField("dim_value")]
        if fixed:
            raise ExportError(
                f"{spec.name}: input {inp.name} lost its dynamic axes {fixed} {where} "
                f"(dims {[d.dim_value or d.dim_param for d in dims]})"
            )
