"""next_sentence post-processing: whether TEXT_PAIR follows TEXT, with the probability that it does.

MobileBERT's NSP head puts "B follows A" at index 0. Output RESULT [1] BYTES per row: JSON {is_next, score} where
score is P(B follows A) (softmax over the two logits) and is_next is score > 0.5.
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils
from probabilities import softmax
from triton_responses import input_array, respond_each


class TritonPythonModel:
    def execute(self, requests):
        return respond_each(requests, "next_sentence", self._respond)

    def _respond(self, request):
        logits = input_array(request, "logits")
        if logits.shape[-1] != 2:
            raise ValueError(f"expected 2 logits per row, got {logits.shape[-1]}")
        p_next = softmax(logits)[:, 0]
        rows = [json.dumps({"is_next": bool(p > 0.5), "score": float(p)}).encode() for p in p_next]
        result = np.array(rows, dtype=np.object_).reshape(-1, 1)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("RESULT", result)])
