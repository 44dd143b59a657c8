"""feature_extraction post-processing: sentence embeddings pooled three ways, plus the token features.

Outputs per row: MEAN_POOLED [hidden] (mean of token vectors over the attention mask, special tokens included as
sentence-transformers does), CLS [hidden] (the [CLS] token vector), POOLER_OUTPUT [hidden] (the model's pooler),
LAST_HIDDEN_STATE [length, hidden] padded to the tokenizer's length bucket and ATTENTION_MASK [length] saying which
rows are real tokens. Clients request only the outputs they need.
"""

import numpy as np
import triton_python_backend_utils as pb_utils


def _input(request, name):
    return pb_utils.get_input_tensor_by_name(request, name).as_numpy()


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                hidden = _input(request, "last_hidden_state")
                mask = _input(request, "attention_mask")
                weights = mask[..., None].astype(np.float32)
                mean = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0)
                outputs = [
                    pb_utils.Tensor("MEAN_POOLED", mean.astype(np.float32)),
                    pb_utils.Tensor("CLS", np.ascontiguousarray(hidden[:, 0])),
                    pb_utils.Tensor("POOLER_OUTPUT", _input(request, "pooler_output")),
                    pb_utils.Tensor("LAST_HIDDEN_STATE", hidden),
                    pb_utils.Tensor("ATTENTION_MASK", mask),
                ]
                responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
            except Exception as exc:  # one bad request must not take the instance down
                error = pb_utils.TritonError(f"feature_extraction: {exc}", _error_code(exc))
                responses.append(pb_utils.InferenceResponse(error=error))
        return responses


def _error_code(exc):
    """Bad input (ValueError) is the caller's to fix: INVALID_ARG; anything else is the server's: INTERNAL."""
    return pb_utils.TritonError.INVALID_ARG if isinstance(exc, ValueError) else pb_utils.TritonError.INTERNAL
