"""pretraining post-processing: the raw pre-training heads without shipping vocabulary-wide logits.

The graph's prediction logits are [length, vocab] per row (about 4 MB per 32 tokens); this step keeps the top `k`
tokens per position as probabilities. Outputs per row: INPUT_IDS [length] (the tokens the positions refer to),
TOKEN_TOP_IDS [length, k], TOKEN_TOP_PROBS [length, k] (softmax over the vocabulary, best first) and NSP_PROBS [2]
(index 0: TEXT_PAIR follows TEXT). Padding positions are included and can be told apart by INPUT_IDS == pad id.
"""

import numpy as np
import triton_python_backend_utils as pb_utils
from probabilities import softmax
from triton_responses import input_array, respond_each
from version_files import serving_settings


class TritonPythonModel:
    def initialize(self, args):
        serving = serving_settings(args)
        self.k = int(serving["top_k"])  # written by the build from deploy/tasks.py's serving_defaults

    def execute(self, requests):
        return respond_each(requests, "pretraining", self._respond)

    def _respond(self, request):
        logits = input_array(request, "prediction_logits")
        top = np.argpartition(-logits, self.k - 1, axis=-1)[..., : self.k]
        top_logits = np.take_along_axis(logits, top, axis=-1)
        order = np.argsort(-top_logits, axis=-1, kind="stable")
        top, top_logits = np.take_along_axis(top, order, -1), np.take_along_axis(top_logits, order, -1)
        # only the top-k probabilities are sent: log-sum-exp over the vocabulary, no [length, vocab] softmax array
        peak = logits.max(axis=-1, keepdims=True)
        log_z = np.log(np.exp(logits - peak).sum(axis=-1, keepdims=True)) + peak
        outputs = [
            pb_utils.Tensor("INPUT_IDS", input_array(request, "input_ids")),
            pb_utils.Tensor("TOKEN_TOP_IDS", top.astype(np.int64)),
            pb_utils.Tensor("TOKEN_TOP_PROBS", np.exp(top_logits - log_z).astype(np.float32)),
            pb_utils.Tensor("NSP_PROBS", softmax(input_array(request, "seq_relationship_logits")).astype(np.float32)),
        ]
        return pb_utils.InferenceResponse(output_tensors=outputs)
