"""Self-attention subgraphs -> onnxruntime's fused `com.microsoft.Attention` op (CPU INT8 deployment only).

The exporter writes each layer's attention as ~15 nodes: the packed Q/K/V MatMul + bias, a 5-D Reshape and Transpose,
three Slice/Squeeze pairs, K's Transpose, the score MatMul, the additive mask, Softmax, the context MatMul, a Transpose
and a Reshape. onnxruntime's `Attention` kernel does all of it in one node, and its quantizer turns that node into
`QAttention` (the Q/K/V projection as one INT8 GEMM, the heads handled inside). On the full-size model this removes
~460 of ~2350 stored nodes (each a thread-pool synchronisation) and was measured ~5% faster in-process.

Only the int8-dynamic graph gets it: TensorRT does not know the com.microsoft domain, and the FP32 graph stays the
plain reference. The rewrite is strict: a subgraph that is not exactly the expected pattern (scale already folded into
Q, as export/folding.py does; a [batch, seq] 0/1 mask) is left alone and counted, never approximated.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

logger = logging.getLogger(__name__)

MS_DOMAIN = "com.microsoft"


@dataclass
class FusionReport:
    fused: int = 0
    skipped: list[str] = field(default_factory=list)  # why each Softmax was not part of a fusable attention

    def to_dict(self) -> dict:
        return {"fused_attention": self.fused, "skipped": self.skipped}


class _NoMatch(Exception):
    pass


class _Graph:
    def __init__(self, model: onnx.ModelProto) -> None:
        self.graph = model.graph
        self.producer = {o: n for n in self.graph.node for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in self.graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.initializers = {i.name: i for i in self.graph.initializer}
        self.inputs = {i.name for i in self.graph.input}
        self.outputs = {o.name for o in self.graph.output}

    def node(self, tensor: str, op_type: str) -> onnx.NodeProto:
        node = self.producer.get(tensor)
        if node is None or node.op_type != op_type:
            found = node.op_type if node is not None else "a graph input or initializer"
            raise _NoMatch(f"{tensor} comes from {found}, expected {op_type}")
        return node

    def only_consumer(self, tensor: str, op_type: str) -> onnx.NodeProto:
        users = self.consumers.get(tensor, [])
        if len(users) != 1 or users[0].op_type != op_type or tensor in self.outputs:
            raise _NoMatch(f"{tensor} is used by {[u.op_type for u in users]}, expected only {op_type}")
        return users[0]

    def constant(self, tensor: str) -> np.ndarray:
        if tensor in self.initializers:
            return numpy_helper.to_array(self.initializers[tensor])
        node = self.producer.get(tensor)
        if node is not None and node.op_type == "Constant":
            return numpy_helper.to_array(node.attribute[0].t)
        raise _NoMatch(f"{tensor} is not a constant")


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _split_index(g: _Graph, tensor: str, packed: str) -> tuple[int, list[onnx.NodeProto]]:
    """q/k/v = packed[i] along axis 0, as the exporter writes `unbind` (Slice + Squeeze, or Gather)."""
    node = g.producer.get(tensor)
    if node is not None and node.op_type == "Gather" and node.input[0] == packed and _attr(node, "axis", 0) == 0:
        return int(g.constant(node.input[1]).reshape(-1)[0]), [node]
    squeeze = g.node(tensor, "Squeeze")
    if len(squeeze.input) < 2 or g.constant(squeeze.input[1]).reshape(-1).tolist() != [0]:
        raise _NoMatch("unbind's Squeeze is not over axis 0")
    sliced = g.node(squeeze.input[0], "Slice")
    if sliced.input[0] != packed:
        raise _NoMatch("q/k/v do not come from one packed projection")
    starts, ends = g.constant(sliced.input[1]).reshape(-1), g.constant(sliced.input[2]).reshape(-1)
    axes = g.constant(sliced.input[3]).reshape(-1) if len(sliced.input) > 3 and sliced.input[3] else np.array([0])
    steps = g.constant(sliced.input[4]).reshape(-1) if len(sliced.input) > 4 and sliced.input[4] else np.array([1])
    if axes.tolist() != [0] or steps.tolist() != [1] or int(ends[0]) != int(starts[0]) + 1:
        raise _NoMatch("unbind's Slice is not one step along axis 0")
    return int(starts[0]), [squeeze, sliced]


def _mask_source(g: _Graph, tensor: str) -> tuple[str, list[onnx.NodeProto]]:
    """The [batch, seq] 0/1 mask behind an additive mask (1 - mask[:, None, None, :]) * min, and its nodes."""
    mul = g.node(tensor, "Mul")
    subs = [g.producer[i] for i in mul.input if i in g.producer and g.producer[i].op_type == "Sub"]
    if len(subs) != 1:
        raise _NoMatch("additive mask is not (1 - mask) * min")
    sub = subs[0]
    low = g.constant(next(i for i in mul.input if i != sub.output[0])).reshape(-1)
    if low.size != 1 or low[0] > -1e4:
        raise _NoMatch("additive mask does not push padded keys to a large negative value")
    if g.constant(sub.input[0]).reshape(-1).tolist() != [1.0]:
        raise _NoMatch("additive mask is not 1 - mask")
    cast = g.node(sub.input[1], "Cast")
    unsqueeze = g.node(cast.input[0], "Unsqueeze")
    if g.constant(unsqueeze.input[1]).reshape(-1).tolist() != [1, 2]:
        raise _NoMatch("mask is not broadcast as [batch, 1, 1, seq]")
    return unsqueeze.input[0], [mul, sub, cast, unsqueeze]


def _match(g: _Graph, softmax: onnx.NodeProto, num_heads: int) -> dict:
    if _attr(softmax, "axis", -1) not in (-1, 3):
        raise _NoMatch("Softmax is not over the key axis")
    add = g.node(softmax.input[0], "Add")
    scores = next((g.producer[i] for i in add.input if g.producer.get(i) and g.producer[i].op_type == "MatMul"), None)
    if scores is None:
        raise _NoMatch("Softmax input is not scores + mask")
    mask_tensor = next(i for i in add.input if i != scores.output[0])
    mask2d, _ = _mask_source(g, mask_tensor)
    k_t = g.node(scores.input[1], "Transpose")
    if list(_attr(k_t, "perm")) != [0, 1, 3, 2]:
        raise _NoMatch("K is not transposed for Q @ K^T")
    context = g.only_consumer(softmax.output[0], "MatMul")
    packed = _packed_of(g, scores.input[0])
    q_i, q_nodes = _split_index(g, scores.input[0], packed)
    k_i, k_nodes = _split_index(g, k_t.input[0], packed)
    v_i, v_nodes = _split_index(g, context.input[1], packed)
    if (q_i, k_i, v_i) != (0, 1, 2):
        raise _NoMatch(f"packed projection order is {(q_i, k_i, v_i)}, expected Q, K, V")
    permute = g.node(packed, "Transpose")
    if list(_attr(permute, "perm")) != [2, 0, 3, 1, 4]:
        raise _NoMatch("packed projection is not permuted to [3, batch, heads, seq, head_size]")
    view = g.node(permute.input[0], "Reshape")
    bias_add = g.node(view.input[0], "Add")
    matmul = next(
        (g.producer[i] for i in bias_add.input if g.producer.get(i) and g.producer[i].op_type == "MatMul"), None
    )
    if matmul is None:
        raise _NoMatch("packed projection is not MatMul + bias")
    bias_name = next(i for i in bias_add.input if i != matmul.output[0])
    bias = g.constant(bias_name)
    if matmul.input[1] not in g.initializers:
        raise _NoMatch("projection weight is not an initializer")
    weight = g.initializers[matmul.input[1]]
    hidden3 = int(weight.dims[1]) if len(weight.dims) == 2 else -1
    if hidden3 % 3 or bias.shape != (hidden3,) or (hidden3 // 3) % num_heads:
        raise _NoMatch(f"projection weight {list(weight.dims)} / bias {list(bias.shape)} do not split into 3 x heads")
    transpose = g.only_consumer(context.output[0], "Transpose")
    if list(_attr(transpose, "perm")) != [0, 2, 1, 3]:
        raise _NoMatch("context is not transposed back to [batch, seq, heads, head_size]")
    merge = g.only_consumer(transpose.output[0], "Reshape")
    g.only_consumer(matmul.output[0], "Add")
    g.only_consumer(bias_add.output[0], "Reshape")
    g.only_consumer(view.output[0], "Transpose")
    if len(g.consumers.get(packed, [])) != 3:
        raise _NoMatch("the packed projection has other users")
    g.only_consumer(scores.output[0], "Add")
    g.only_consumer(add.output[0], "Softmax")
    g.only_consumer(k_t.output[0], "MatMul")
    for nodes, user in ((q_nodes, "MatMul"), (k_nodes, "Transpose"), (v_nodes, "MatMul")):
        g.only_consumer(nodes[0].output[0], user)
        if len(nodes) == 2:
            g.only_consumer(nodes[1].output[0], "Squeeze")
    removed = [matmul, bias_add, view, permute, *q_nodes, *k_nodes, *v_nodes, k_t, scores, add, softmax, context]
    removed += [transpose, merge]
    return {
        "input": matmul.input[0],
        "weight": matmul.input[1],
        "bias": bias_name,
        "mask": mask2d,
        "output": merge.output[0],
        "removed": removed,
        "anchor": merge,
    }


def _packed_of(g: _Graph, tensor: str) -> str:
    node = g.producer.get(tensor)
    if node is not None and node.op_type == "Gather":
        return node.input[0]
    squeeze = g.node(tensor, "Squeeze")
    return g.node(squeeze.input[0], "Slice").input[0]


def fuse_attention(model: onnx.ModelProto, num_heads: int) -> tuple[onnx.ModelProto, FusionReport]:
    """A copy of `model` with every recognised self-attention subgraph replaced by one com.microsoft Attention node."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = _Graph(model)
    report = FusionReport()
    matches = []
    for softmax in [n for n in g.graph.node if n.op_type == "Softmax"]:
        try:
            matches.append(_match(g, softmax, num_heads))
        except _NoMatch as why:
            report.skipped.append(f"{softmax.name}: {why}")
    if not matches:
        return model, report
    removed = {id(n) for m in matches for n in m["removed"]}
    casts: dict[str, str] = {}
    inserted: dict[int, list[onnx.NodeProto]] = {}
    for m in matches:
        # Attention takes the raw [batch, seq] 0/1 mask as int32 (one Cast per distinct mask, shared by all layers).
        if m["mask"] not in casts:
            casts[m["mask"]] = f"{m['mask']}_int32"
        fused = helper.make_node(
            "Attention",
            [m["input"], m["weight"], m["bias"], casts[m["mask"]]],
            [m["output"]],
            name=f"{m['anchor'].name}_fused_attention",
            domain=MS_DOMAIN,
            num_heads=num_heads,
            scale=1.0,  # 1/sqrt(head_size) is already folded into Q's weights
        )
        inserted.setdefault(id(m["anchor"]), []).append(fused)
    cast_nodes = {
        mask: helper.make_node("Cast", [mask], [name], name=f"{name}_cast", to=TensorProto.INT32)
        for mask, name in casts.items()
    }
    nodes = [cast for mask, cast in cast_nodes.items() if mask in g.inputs]
    for node in g.graph.node:
        if id(node) in removed:
            nodes.extend(inserted.get(id(node), []))  # the fused node takes the place of the subgraph's last node
            continue
        nodes.append(node)
        nodes.extend(cast_nodes[o] for o in node.output if o in cast_nodes)
    del g.graph.node[:]
    g.graph.node.extend(nodes)
    _drop_dead_nodes(model)
    _drop_unused_initializers(model)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    report.fused = len(matches)
    logger.info("fused %d attention subgraphs (%d Softmax left alone)", report.fused, len(report.skipped))
    return model, report


def _drop_dead_nodes(model: onnx.ModelProto) -> None:
    """Remove nodes nothing reads any more (the additive-mask chain the fused nodes replaced)."""
    graph_outputs = {o.name for o in model.graph.output}
    while True:
        used = {i for n in model.graph.node for i in n.input} | graph_outputs
        alive = [n for n in model.graph.node if any(o in used for o in n.output)]
        if len(alive) == len(model.graph.node):
            return
        del model.graph.node[:]
        model.graph.node.extend(alive)


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
