"""next_sentence post-processing: whether TEXT_PAIR follows TEXT, with the probability that it does.

MobileBERT's NSP head puts "B follows A" at index 0. Output RESULT [1] BYTES per row: JSON {is_next, score} where
score is P(B follows A) (softmax over the two logits) and is_next is score > 0.5.
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                logits = pb_utils.get_input_tensor_by_name(request, "logits").as_numpy().astype(np.float64)
                if logits.shape[-1] != 2:
                    raise ValueError(f"expected 2 logits per row, got {logits.shape[-1]}")
                p_next = 1.0 / (1.0 + np.exp(logits[:, 1] - logits[:, 0]))
                rows = [json.dumps({"is_next": bool(p > 0.5), "score": float(p)}).encode() for p in p_next]
                result = np.array(rows, dtype=np.object_).reshape(-1, 1)
                responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("RESULT", result)]))
            except Exception as exc:  # one bad request must not take the instance down
                responses.append(
                    pb_utils.InferenceResponse(error=pb_utils.TritonError(f"next_sentence: {exc}", _error_code(exc)))
                )
        return responses


def _error_code(exc):
    """Bad input (ValueError) is the caller's to fix: INVALID_ARG; anything else is the server's: INTERNAL."""
    return pb_utils.TritonError.INVALID_ARG if isinstance(exc, ValueError) else pb_utils.TritonError.INTERNAL
