"""fill_mask post-processing: top-k candidates per [MASK] as Hugging Face fill-mask pipeline dicts (JSON per row).

Input: the fill-mask graph's outputs (first `max_masks` [MASK] positions, top-k ids and probabilities, computed in the
graph) and the token ids. Output RESULT [1] BYTES per row: JSON list over the row's masks, each a list of
{score, token, token_str, sequence}, best first; `sequence` is the text with that mask filled, decoded like the
pipeline (special tokens skipped). A row without [MASK], or with more masks than the graph evaluates, is an error.
"""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils
from tokenizers import Tokenizer


def _input(request, name):
    return pb_utils.get_input_tensor_by_name(request, name).as_numpy()


class TritonPythonModel:
    def initialize(self, args):
        folder = Path(args["model_repository"]) / args["model_version"]
        serving = json.loads((folder / "serving.json").read_text(encoding="utf-8"))
        self.mask_id = int(serving["mask_token_id"])
        self.max_masks = int(serving["max_masks"])
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.mask_token = self.tokenizer.id_to_token(self.mask_id)

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                responses.append(self._respond(request))
            except Exception as exc:  # one bad request must not take the instance down
                responses.append(
                    pb_utils.InferenceResponse(error=pb_utils.TritonError(f"fill_mask: {exc}", _error_code(exc)))
                )
        return responses

    def _respond(self, request):
        ids, mask = _input(request, "input_ids"), _input(request, "attention_mask")
        positions, valid = _input(request, "mask_positions"), _input(request, "mask_valid")
        top_ids, top_probs = _input(request, "top_ids"), _input(request, "top_probs")
        rows = []
        for r in range(ids.shape[0]):
            tokens = ids[r][mask[r] > 0]
            count = int((tokens == self.mask_id).sum())
            if count == 0:
                raise ValueError(f"row {r}: no {self.mask_token} token in the text")
            if count > self.max_masks:
                raise ValueError(f"row {r}: {count} {self.mask_token} tokens; at most {self.max_masks} are supported")
            per_mask = []
            for m in np.flatnonzero(valid[r]):
                position = int(positions[r, m])
                candidates = []
                for token_id, prob in zip(top_ids[r, m].tolist(), top_probs[r, m].tolist(), strict=True):
                    filled = tokens.copy()
                    filled[position] = token_id
                    candidates.append(
                        {
                            "score": float(prob),
                            "token": int(token_id),
                            "token_str": self.tokenizer.decode([token_id]),
                            "sequence": self.tokenizer.decode(filled.tolist(), skip_special_tokens=True),
                        }
                    )
                per_mask.append(candidates)
            rows.append(json.dumps(per_mask).encode("utf-8"))
        result = np.array(rows, dtype=np.object_).reshape(-1, 1)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("RESULT", result)])


def _error_code(exc):
    """Bad input (ValueError) is the caller's to fix: INVALID_ARG; anything else is the server's: INTERNAL."""
    return pb_utils.TritonError.INVALID_ARG if isinstance(exc, ValueError) else pb_utils.TritonError.INTERNAL
