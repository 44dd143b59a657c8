"""Every head exports to ONNX with the dynamo exporter, and the graph keeps dynamic batch and sequence axes."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from hf_factory import HEAD_NAMES, example_inputs, max_rel_diff, output_fields

import model_def

# Functional tier: real Triton servers or ONNX exports (`make test-quick` leaves these out).
pytestmark = pytest.mark.functional

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


class _AsTuple(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, names: tuple[str, ...]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, input_ids, attention_mask, token_type_ids):
        out = self.model(input_ids, attention_mask, token_type_ids)
        return tuple(getattr(out, n) for n in self.names)


@pytest.mark.parametrize("head", HEAD_NAMES)
def test_head_exports_to_onnx_and_runs_at_other_batch_and_sequence_sizes(tmp_path, head):
    config = model_def.MobileBertConfig(num_hidden_layers=2, vocab_size=1000, attn_implementation="eager")
    model = getattr(model_def, head)(config).eval()
    names = output_fields(head)
    wrapper = _AsTuple(model, names)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence", max=512)
    dims = (
        {0: batch, 1: torch.export.Dim("choices"), 2: seq}
        if head == "MobileBertForMultipleChoice"
        else {0: batch, 1: seq}
    )
    sample = example_inputs(head, batch=2, seq=16, vocab=1000)
    path = tmp_path / "model.onnx"
    torch.onnx.export(
        wrapper,
        tuple(sample[n] for n in INPUT_NAMES),
        str(path),
        input_names=list(INPUT_NAMES),
        output_names=list(names),
        dynamic_shapes={n: dims for n in INPUT_NAMES},
        dynamo=True,
        opset_version=18,
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for b, s in ((1, 7), (3, 33)):
        feed = example_inputs(head, batch=b, seq=s, vocab=1000, seed=b)
        got = session.run(list(names), {n: feed[n].numpy() for n in INPUT_NAMES})
        with torch.no_grad():
            ref = model(**feed)
        for name, value in zip(names, got, strict=True):
            assert value.shape == tuple(getattr(ref, name).shape)
            assert max_rel_diff(getattr(ref, name), torch.from_numpy(np.asarray(value))) <= 1e-4, (head, name, b, s)
