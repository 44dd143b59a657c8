"""Does onnxruntime's INT8 arithmetic on this CPU equal exact integer arithmetic?

onnxruntime picks its INT8 GEMM kernel by CPU (AVX2, AVX512-VNNI, AMX, ...). A graph's INT8 error is the sum of two
things that look the same from outside: the quantization itself (scales, which nodes are INT8) and the kernel that
executes it. This module separates them. It rewrites an INT8 graph so that every integer product runs as exact
float64 (MatMulInteger) or float32 math on dequantized values (QAttention, QDQ), then compares the two graphs on the
same inputs. The quantization error is identical in both; only the kernel differs. A correct kernel agrees to
rounding (1e-4..1e-3 relative); a kernel that is not shows up directly, named by this CPU's instruction sets.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from .sample_inputs import Batch

# Relative max difference above which the kernel, not the quantization, is to blame. A correct kernel stays near
# 1e-4..1e-3 (float reordering, and the fused kernels' own rounding of an activation to uint8 now and then, carried
# through the layers); a wrong accumulator or a saturating product lands near the quantization error itself (0.1-1).
KERNEL_MAX_REL_DIFF = 1e-2


@dataclass
class KernelCheck:
    """INT8 graph against its exact-integer emulation, on the validation inputs."""

    max_abs_diff: float
    max_rel_diff: float
    cosine_min: float
    agrees: bool  # max_rel_diff <= KERNEL_MAX_REL_DIFF
    rewritten_nodes: int

    def to_dict(self) -> dict:
        return asdict(self)


def _cast(name: str, out: str, to: int) -> onnx.NodeProto:
    return helper.make_node("Cast", [name], [out], to=to, name=f"{out}/cast")


def _centered(nodes: list, value: str, zero_point: str, to: int, tag: str) -> str:
    """(value - zero_point) in float type `to`, as new nodes appended to `nodes`; returns the output name."""
    nodes.append(_cast(value, f"{tag}/v", to))
    if not zero_point:
        return f"{tag}/v"
    nodes.append(_cast(zero_point, f"{tag}/zp", to))
    nodes.append(helper.make_node("Sub", [f"{tag}/v", f"{tag}/zp"], [f"{tag}/c"], name=f"{tag}/sub"))
    return f"{tag}/c"


def _matmul_integer(node: onnx.NodeProto, index: int) -> list[onnx.NodeProto]:
    # float64 holds every int8 x uint8 partial sum exactly, so this is the integer result itself.
    a, b = node.input[0], node.input[1]
    a_zp = node.input[2] if len(node.input) > 2 else ""
    b_zp = node.input[3] if len(node.input) > 3 else ""
    tag = f"kernel_check/{index}"
    nodes: list[onnx.NodeProto] = []
    a_c = _centered(nodes, a, a_zp, TensorProto.DOUBLE, f"{tag}/a")
    b_c = _centered(nodes, b, b_zp, TensorProto.DOUBLE, f"{tag}/b")
    nodes.append(helper.make_node("MatMul", [a_c, b_c], [f"{tag}/y"], name=f"{tag}/matmul"))
    nodes.append(_cast(f"{tag}/y", node.output[0], TensorProto.INT32))
    return nodes


def _qattention(node: onnx.NodeProto, index: int) -> list[onnx.NodeProto]:
    # QAttention = dequantize(input) x dequantize(weight) + bias, then attention: the same in float32.
    inputs = list(node.input) + [""] * (9 - len(node.input))
    x, w, bias, x_scale, w_scale, mask, x_zp, w_zp, past = inputs[:9]
    tag = f"kernel_check/{index}"
    nodes: list[onnx.NodeProto] = []
    x_c = _centered(nodes, x, x_zp, TensorProto.FLOAT, f"{tag}/x")
    w_c = _centered(nodes, w, w_zp, TensorProto.FLOAT, f"{tag}/w")
    nodes.append(helper.make_node("Mul", [x_c, x_scale], [f"{tag}/xf"], name=f"{tag}/xmul"))
    nodes.append(helper.make_node("Mul", [w_c, w_scale], [f"{tag}/wf"], name=f"{tag}/wmul"))
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    nodes.append(
        helper.make_node(
            "Attention",
            [f"{tag}/xf", f"{tag}/wf", bias, mask, past],
            list(node.output),
            name=f"{tag}/attention",
            domain="com.microsoft",
            **attrs,
        )
    )
    return nodes


def integer_emulation(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of a dynamic-INT8 graph whose integer GEMMs run as exact float math; (graph, nodes rewritten)."""
    emulated = onnx.ModelProto()
    emulated.CopyFrom(model)
    new_nodes: list[onnx.NodeProto] = []
    rewritten = 0
    for node in emulated.graph.node:
        if node.op_type == "MatMulInteger":
            new_nodes.extend(_matmul_integer(node, rewritten))
            rewritten += 1
        elif node.op_type == "QAttention" and node.domain == "com.microsoft":
            new_nodes.extend(_qattention(node, rewritten))
            rewritten += 1
        else:
            new_nodes.append(node)
    del emulated.graph.node[:]
    emulated.graph.node.extend(new_nodes)
    return emulated, rewritten


def _session(model: onnx.ModelProto | str, threads: int, optimize: bool) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # The emulation must not be fused back into INT8 kernels; QDQ graphs run unfused as float ops this way.
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    source = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def check_kernels(
    graph_path: Path, batches: list[Batch], output_names: tuple[str, ...], input_names: tuple[str, ...], threads: int
) -> KernelCheck:
    """Run the INT8 graph as served (all optimizations) and its exact emulation; compare every float output."""
    model = onnx.load(str(graph_path))
    if any(n.op_type == "QuantizeLinear" for n in model.graph.node):
        emulated, rewritten = model, sum(n.op_type == "QuantizeLinear" for n in model.graph.node)
    else:
        emulated, rewritten = integer_emulation(model)
    served = _session(str(graph_path), threads, optimize=True)
    reference = _session(emulated, threads, optimize=False)
    max_abs = max_rel = 0.0
    cosine_min = 1.0
    for batch in batches:
        feed = {n: batch.arrays[n] for n in input_names}
        got_all, want_all = served.run(list(output_names), feed), reference.run(list(output_names), feed)
        for got, want in zip(got_all, want_all, strict=True):
            if not np.issubdtype(want.dtype, np.floating) or not want.size:
                continue
            got64, want64 = got.astype(np.float64).ravel(), want.astype(np.float64).ravel()
            finite = np.isfinite(want64)  # masked score positions are -inf in both
            diff = float(np.abs(got64[finite] - want64[finite]).max(initial=0.0))
            max_abs = max(max_abs, diff)
            max_rel = max(max_rel, diff / max(float(np.abs(want64[finite]).max(initial=0.0)), 1e-12))
            denom = np.linalg.norm(got64[finite]) * np.linalg.norm(want64[finite])
            if denom > 0:
                cosine_min = min(cosine_min, float(got64[finite] @ want64[finite] / denom))
    return KernelCheck(
        max_abs_diff=max_abs,
        max_rel_diff=max_rel,
        cosine_min=cosine_min,
        agrees=max_rel <= KERNEL_MAX_REL_DIFF,
        rewritten_nodes=rewritten,
    )
