"""multiple_choice post-processing: the chosen answer of one prompt's set of choices.

Input: the multiple-choice graph's logits [1, choices] and the CHOICES texts. Output RESULT [1] BYTES: JSON
{index, choice, scores} with scores the softmax over the choices, in the order they were sent.
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils
from probabilities import softmax
from triton_responses import input_array, respond_each


class TritonPythonModel:
    def execute(self, requests):
        return respond_each(requests, "multiple_choice", self._respond)

    def _respond(self, request):
        row = input_array(request, "logits").reshape(-1)
        sent = input_array(request, "CHOICES").reshape(-1)
        choices = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in sent]
        if row.shape[0] != len(choices):
            raise ValueError(f"got {row.shape[0]} scores for {len(choices)} choices")
        scores = softmax(row)
        best = int(np.argmax(scores))
        answer = {"index": best, "choice": choices[best], "scores": [float(s) for s in scores]}
        result = np.array([json.dumps(answer).encode()], dtype=np.object_)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("RESULT", result)])
