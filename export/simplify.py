"""onnxsim over an exported graph, keeping dynamic axes; falls back to the unsimplified graph with a logged reason."""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass

import onnx

from .errors import ExportError
from .heads import HeadSpec
from .onnx_export import check_dynamic_axes

logger = logging.getLogger(__name__)


@dataclass
class SimplifyResult:
    model: onnx.ModelProto
    nodes_before: int
    nodes_after: int
    simplified: bool
    fallback_reason: str | None = None


def op_histogram(model: onnx.ModelProto) -> dict[str, int]:
    return dict(collections.Counter(node.op_type for node in model.graph.node).most_common())


def simplify(model: onnx.ModelProto, spec: HeadSpec) -> SimplifyResult:
    """Run onnxsim; if it fails, or its output loses a dynamic axis, keep the input graph and say why."""
    import onnxsim

    before = len(model.graph.node)
    try:
        simplified, ok = onnxsim.simplify(model, check_n=0, perform_optimization=True)
        if not ok:
            raise RuntimeError("onnxsim's own check reported a mismatch")
        if len(simplified.graph.node) > before:
            # Its optimizer passes turn each 3-D MatMul + Add into Reshape -> Gemm -> Reshape chains: more nodes,
            # slower under INT8. Keep constant folding and shape inference only.
            grown = len(simplified.graph.node)
            simplified, ok = onnxsim.simplify(model, check_n=0, perform_optimization=False)
            if not ok:
                raise RuntimeError("onnxsim's own check reported a mismatch")
            logger.info(
                "%s: onnxsim's optimizer grew the graph to %d nodes; used folding/shape inference only",
                spec.name,
                grown,
            )
        check_dynamic_axes(simplified, spec, where="after onnxsim")
    except (Exception, ExportError) as exc:  # onnxsim raises plain RuntimeErrors from C++
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        logger.warning("%s: onnxsim failed, keeping the unsimplified graph (%s)", spec.name, reason)
        return SimplifyResult(model, before, before, simplified=False, fallback_reason=reason)
    after = len(simplified.graph.node)
    logger.info("%s: onnxsim %d -> %d nodes", spec.name, before, after)
    return SimplifyResult(simplified, before, after, simplified=True)
