"""question_answering post-processing: the best answer spans in CONTEXT with scores and character offsets.

As the Hugging Face question-answering pipeline does: only context tokens (type id 1) can start or end an answer;
start and end probabilities are separate softmaxes over the context tokens and [CLS] (whose share is then dropped,
which keeps scores comparable with the pipeline's); a span scores p(start) * p(end), ends at or after its start and
spans at most `max_answer_len` tokens. Output RESULT [1] BYTES per row: JSON list of the `top_k` best
{answer, score, start, end}, best first (start/end are character offsets into CONTEXT). Contexts longer than the
largest length bucket are truncated by the tokenizer; answers are found in the part that was kept.
"""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils


def _input(request, name):
    return pb_utils.get_input_tensor_by_name(request, name).as_numpy()


def _masked_softmax(logits, allowed):
    shifted = np.where(allowed, logits, -np.inf)
    shifted = np.exp(shifted - shifted.max())
    return shifted / shifted.sum()


class TritonPythonModel:
    def initialize(self, args):
        folder = Path(args["model_repository"]) / args["model_version"]
        serving = json.loads((folder / "serving.json").read_text(encoding="utf-8"))
        self.top_k = int(serving.get("top_k", 5))
        self.max_answer_len = int(serving.get("max_answer_len", 15))

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                responses.append(self._respond(request))
            except Exception as exc:  # one bad request must not take the instance down
                error = pb_utils.TritonError(f"question_answering: {exc}", _error_code(exc))
                responses.append(pb_utils.InferenceResponse(error=error))
        return responses

    def _respond(self, request):
        start_logits = _input(request, "start_logits").astype(np.float64)
        end_logits = _input(request, "end_logits").astype(np.float64)
        types, mask, offsets = (
            _input(request, "token_type_ids"),
            _input(request, "attention_mask"),
            _input(request, "offsets"),
        )
        contexts = [v.decode("utf-8") for v in _input(request, "CONTEXT").reshape(-1)]
        rows = []
        for r, context in enumerate(contexts):
            allowed = (types[r] == 1) & (mask[r] == 1) & (offsets[r, :, 1] > offsets[r, :, 0])
            if not allowed.any():
                rows.append(b"[]")  # empty context, or the question took every token
                continue
            normalised = allowed.copy()
            normalised[0] = True  # [CLS]: in the softmax, never in an answer
            p_start = _masked_softmax(start_logits[r], normalised)
            p_end = _masked_softmax(end_logits[r], normalised)
            p_start[0] = p_end[0] = 0.0
            scores = np.triu(np.outer(p_start, p_end))
            scores = np.tril(scores, self.max_answer_len - 1)
            flat = np.argsort(-scores, axis=None, kind="stable")[: self.top_k]
            answers = []
            for index in flat:
                s, e = np.unravel_index(index, scores.shape)
                if scores[s, e] <= 0:
                    break
                begin, finish = int(offsets[r, s, 0]), int(offsets[r, e, 1])
                answers.append(
                    {"answer": context[begin:finish], "score": float(scores[s, e]), "start": begin, "end": finish}
                )
            rows.append(json.dumps(answers).encode())
        result = np.array(rows, dtype=np.object_).reshape(-1, 1)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("RESULT", result)])


def _error_code(exc):
    """Bad input (ValueError) is the caller's to fix: INVALID_ARG; anything else is the server's: INTERNAL."""
    return pb_utils.TritonError.INVALID_ARG if isinstance(exc, ValueError) else pb_utils.TritonError.INTERNAL
