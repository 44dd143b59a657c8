"""feature_extraction post-processing: sentence embeddings pooled three ways, plus the token features.

Outputs per row: MEAN_POOLED [hidden] (mean of token vectors over the attention mask, special tokens included as
sentence-transformers does), CLS [hidden] (the [CLS] token vector), POOLER_OUTPUT [hidden] (the model's pooler),
LAST_HIDDEN_STATE [length, hidden] padded to the tokenizer's length bucket and ATTENTION_MASK [length] saying which
rows are real tokens. Clients request only the outputs they need.
"""

import numpy as np
import triton_python_backend_utils as pb_utils
from triton_responses import input_array, respond_each


class TritonPythonModel:
    def execute(self, requests):
        return respond_each(requests, "feature_extraction", self._respond)

    def _respond(self, request):
        hidden = input_array(request, "last_hidden_state")
        mask = input_array(request, "attention_mask")
        weights = mask[..., None].astype(np.float32)
        mean = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0)
        outputs = [
            pb_utils.Tensor("MEAN_POOLED", mean.astype(np.float32)),
            pb_utils.Tensor("CLS", np.ascontiguousarray(hidden[:, 0])),
            pb_utils.Tensor("POOLER_OUTPUT", input_array(request, "pooler_output")),
            pb_utils.Tensor("LAST_HIDDEN_STATE", hidden),
            pb_utils.Tensor("ATTENTION_MASK", mask),
        ]
        return pb_utils.InferenceResponse(output_tensors=outputs)
