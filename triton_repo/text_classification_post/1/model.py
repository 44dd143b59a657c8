"""text_classification post-processing: every label with its score, best first (JSON per row).

Scores are a softmax over the logits, or a sigmoid per label for multi-label checkpoints and single-logit heads (as
the Hugging Face text-classification pipeline does). Labels come from the checkpoint's id2label (serving.json).
Output RESULT [1] BYTES per row: JSON list of {label, score}.
"""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        folder = Path(args["model_repository"]) / args["model_version"]
        serving = json.loads((folder / "serving.json").read_text(encoding="utf-8"))
        id2label = serving.get("id2label") or {}
        self.labels = [id2label.get(str(i), f"LABEL_{i}") for i in range(len(id2label))]
        self.sigmoid = serving.get("problem_type") == "multi_label_classification" or len(self.labels) == 1

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                responses.append(self._respond(request))
            except Exception as exc:  # one bad request must not take the instance down
                error = pb_utils.TritonError(f"text_classification: {exc}", _error_code(exc))
                responses.append(pb_utils.InferenceResponse(error=error))
        return responses

    def _respond(self, request):
        logits = pb_utils.get_input_tensor_by_name(request, "logits").as_numpy().astype(np.float64)
        if logits.shape[-1] != len(self.labels):
            raise ValueError(f"got {logits.shape[-1]} logits for {len(self.labels)} labels")
        if self.sigmoid:
            scores = 1.0 / (1.0 + np.exp(-logits))
        else:
            shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
            scores = shifted / shifted.sum(axis=-1, keepdims=True)
        rows = []
        for row in scores:
            order = np.argsort(-row, kind="stable")
            rows.append(json.dumps([{"label": self.labels[i], "score": float(row[i])} for i in order]).encode())
        result = np.array(rows, dtype=np.object_).reshape(-1, 1)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("RESULT", result)])


def _error_code(exc):
    """Bad input (ValueError) is the caller's to fix: INVALID_ARG; anything else is the server's: INTERNAL."""
    return pb_utils.TritonError.INVALID_ARG if isinstance(exc, ValueError) else pb_utils.TritonError.INTERNAL
