"""export/attention_fusion.py: each layer's self-attention becomes one com.microsoft Attention node, exactly."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from export.attention_fusion import fuse_attention
from export.heads import HEAD_SPECS
from export.pipeline import graph_paths
from model_def import MobileBertConfig

# Functional tier: real Triton servers or ONNX exports (`make test-quick` leaves these out).
pytestmark = pytest.mark.functional


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # the exporter leaves an unused initializer or two; ORT warns about each
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _padded_feed(shape: tuple[int, ...], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.ones(shape, np.int64)
    mask[..., shape[-1] - 5 :] = 0  # every row padded ...
    mask.reshape(-1, shape[-1])[0, 4:] = 0  # ... and one row much shorter than the others
    return {
        "input_ids": rng.integers(5, 1000, shape).astype(np.int64),
        "attention_mask": mask,
        "token_type_ids": (rng.random(shape) < 0.5).astype(np.int64),
    }


@pytest.mark.parametrize("task", ["question_answering", "multiple_choice", "fill_mask", "feature_extraction"])
def test_fused_fp32_graph_gives_the_unfused_results_on_padded_batches(exported_small, demo_small, task):
    out, _ = exported_small
    fp32 = onnx.load(str(graph_paths(out, task, "fp32")[0]))
    heads = MobileBertConfig.from_pretrained(demo_small / "pretraining").num_attention_heads
    layers = MobileBertConfig.from_pretrained(demo_small / "pretraining").num_hidden_layers
    fused, report = fuse_attention(fp32, heads)
    ops = Counter(n.op_type for n in fused.graph.node)
    assert report.fused == layers and ops["Attention"] == layers
    # what is left is the fill-mask head's own softmax over the vocabulary, skipped with its reason
    assert ops["Softmax"] == len(report.skipped) == (1 if task == "fill_mask" else 0)
    assert len(fused.graph.node) < len(fp32.graph.node) - 10 * layers
    onnx.checker.check_model(fused)
    shape = (2, 3, 20) if HEAD_SPECS[task].choices_axis else (3, 20)
    feed = _padded_feed(shape)
    expected = _session(fp32).run(None, feed)
    got = _session(fused).run(None, feed)
    keep = feed["attention_mask"].astype(bool)
    for name, e, g in zip(HEAD_SPECS[task].output_names, expected, got, strict=True):
        if e.shape[: keep.ndim] == keep.shape:  # per-token output: padded positions are don't-care
            e, g = e[keep], g[keep]
        np.testing.assert_allclose(g, e, atol=1e-5, rtol=1e-5, err_msg=f"{task}/{name}")


def test_int8_dynamic_graphs_carry_quantized_fused_attention_and_say_so(exported_small, demo_small):
    out, _ = exported_small
    layers = MobileBertConfig.from_pretrained(demo_small / "pretraining").num_hidden_layers
    for task in HEAD_SPECS:
        manifest = json.loads(graph_paths(out, task, "int8-dynamic")[1].read_text())
        assert manifest["attention_fusion"]["fused_attention"] == layers, task
        assert manifest["op_histogram"].get("QAttention") == layers, task  # the quantizer took the fused nodes
        skipped = manifest["attention_fusion"]["skipped"]
        assert manifest["op_histogram"].get("Softmax", 0) == len(skipped) == (task == "fill_mask"), task
        for flavour in ("fp32", "int8-qdq"):  # the reference and TensorRT's graph stay standard ONNX
            other = json.loads(graph_paths(out, task, flavour)[1].read_text())
            assert "Attention" not in other["op_histogram"] and "QAttention" not in other["op_histogram"]


def test_a_softmax_that_is_not_self_attention_is_left_alone_with_the_reason():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    graph = helper.make_graph([helper.make_node("Softmax", ["x"], ["y"], name="plain_softmax")], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    fused, report = fuse_attention(model, num_heads=4)
    assert report.fused == 0 and len(report.skipped) == 1
    assert report.skipped[0].startswith("plain_softmax: ") and "expected Add" in report.skipped[0]
    assert [n.op_type for n in fused.graph.node] == ["Softmax"]


def test_a_head_count_that_does_not_divide_the_projection_is_not_fused(exported_small):
    out, _ = exported_small
    fp32 = onnx.load(str(graph_paths(out, "question_answering", "fp32")[0]))
    fused, report = fuse_attention(fp32, num_heads=7)
    assert report.fused == 0 and report.skipped and all("do not split into 3 x heads" in s for s in report.skipped)
    assert len(fused.graph.node) == len(fp32.graph.node)
