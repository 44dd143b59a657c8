"""text_classification post-processing: every label with its score, best first (JSON per row).

Scores are a softmax over the logits, or a sigmoid per label for multi-label checkpoints and single-logit heads (as
the Hugging Face text-classification pipeline does). Labels come from the checkpoint's id2label (serving.json).
Output RESULT [1] BYTES per row: JSON list of {label, score}.
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils
from probabilities import labels, sigmoid, softmax
from triton_responses import input_array, respond_each
from version_files import serving_settings


class TritonPythonModel:
    def initialize(self, args):
        serving = serving_settings(args)
        self.labels = labels(serving.get("id2label"))
        self.sigmoid = serving.get("problem_type") == "multi_label_classification" or len(self.labels) == 1

    def execute(self, requests):
        return respond_each(requests, "text_classification", self._respond)

    def _respond(self, request):
        logits = input_array(request, "logits")
        if logits.shape[-1] != len(self.labels):
            raise ValueError(f"got {logits.shape[-1]} logits for {len(self.labels)} labels")
        scores = sigmoid(logits) if self.sigmoid else softmax(logits)
        rows = []
        for row in scores:
            order = np.argsort(-row, kind="stable")
            rows.append(json.dumps([{"label": self.labels[i], "score": float(row[i])} for i in order]).encode())
        result = np.array(rows, dtype=np.object_).reshape(-1, 1)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("RESULT", result)])
