"""multiple_choice post-processing: the chosen answer of one prompt's set of choices.

Input: the multiple-choice graph's logits [1, choices] and the CHOICES texts. Output RESULT [1] BYTES: JSON
{index, choice, scores} with scores the softmax over the choices, in the order they were sent.
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils


def _texts(tensor):
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in tensor.as_numpy().reshape(-1)]


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                logits = pb_utils.get_input_tensor_by_name(request, "logits").as_numpy().astype(np.float64)
                choices = _texts(pb_utils.get_input_tensor_by_name(request, "CHOICES"))
                row = logits.reshape(-1)
                if row.shape[0] != len(choices):
                    raise ValueError(f"got {row.shape[0]} scores for {len(choices)} choices")
                shifted = np.exp(row - row.max())
                scores = shifted / shifted.sum()
                best = int(np.argmax(scores))
                answer = {"index": best, "choice": choices[best], "scores": [float(s) for s in scores]}
                result = np.array([json.dumps(answer).encode()], dtype=np.object_)
                responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("RESULT", result)]))
            except Exception as exc:  # one bad request must not take the instance down
                responses.append(
                    pb_utils.InferenceResponse(error=pb_utils.TritonError(f"multiple_choice: {exc}", _error_code(exc)))
                )
        return responses


def _error_code(exc):
    """Bad input (ValueError) is the caller's to fix: INVALID_ARG; anything else is the server's: INTERNAL."""
    return pb_utils.TritonError.INVALID_ARG if isinstance(exc, ValueError) else pb_utils.TritonError.INTERNAL
