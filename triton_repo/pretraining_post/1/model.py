"""pretraining post-processing: the raw pre-training heads without shipping vocabulary-wide logits.

The graph's prediction logits are [length, vocab] per row (about 4 MB per 32 tokens); this step keeps the top `k`
tokens per position as probabilities. Outputs per row: INPUT_IDS [length] (the tokens the positions refer to),
TOKEN_TOP_IDS [length, k], TOKEN_TOP_PROBS [length, k] (softmax over the vocabulary, best first) and NSP_PROBS [2]
(index 0: TEXT_PAIR follows TEXT). Padding positions are included and can be told apart by INPUT_IDS == pad id.
"""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils


def _input(request, name):
    return pb_utils.get_input_tensor_by_name(request, name).as_numpy()


class TritonPythonModel:
    def initialize(self, args):
        folder = Path(args["model_repository"]) / args["model_version"]
        serving = json.loads((folder / "serving.json").read_text(encoding="utf-8"))
        self.k = int(serving.get("top_k", 5))

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                logits = _input(request, "prediction_logits")
                top = np.argpartition(-logits, self.k - 1, axis=-1)[..., : self.k]
                top_logits = np.take_along_axis(logits, top, axis=-1)
                order = np.argsort(-top_logits, axis=-1, kind="stable")
                top, top_logits = np.take_along_axis(top, order, -1), np.take_along_axis(top_logits, order, -1)
                peak = logits.max(axis=-1, keepdims=True)
                log_z = np.log(np.exp(logits - peak).sum(axis=-1, keepdims=True)) + peak
                nsp = _input(request, "seq_relationship_logits").astype(np.float64)
                nsp = np.exp(nsp - nsp.max(axis=-1, keepdims=True))
                outputs = [
                    pb_utils.Tensor("INPUT_IDS", _input(request, "input_ids")),
                    pb_utils.Tensor("TOKEN_TOP_IDS", top.astype(np.int64)),
                    pb_utils.Tensor("TOKEN_TOP_PROBS", np.exp(top_logits - log_z).astype(np.float32)),
                    pb_utils.Tensor("NSP_PROBS", (nsp / nsp.sum(axis=-1, keepdims=True)).astype(np.float32)),
                ]
                responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
            except Exception as exc:  # one bad request must not take the instance down
                responses.append(
                    pb_utils.InferenceResponse(error=pb_utils.TritonError(f"pretraining: {exc}", _error_code(exc)))
                )
        return responses


def _error_code(exc):
    """Bad input (ValueError) is the caller's to fix: INVALID_ARG; anything else is the server's: INTERNAL."""
    return pb_utils.TritonError.INVALID_ARG if isinstance(exc, ValueError) else pb_utils.TritonError.INTERNAL
