"""fill_mask post-processing: top-k candidates per [MASK] as Hugging Face fill-mask pipeline dicts (JSON per row).

Input: the fill-mask graph's outputs (first `max_masks` [MASK] positions, top-k ids and probabilities, computed in the
graph) and the token ids. Output RESULT [1] BYTES per row: JSON list over the row's masks, each a list of
{score, token, token_str, sequence}, best first, decoded by mask_filling.fill_mask_row (shipped beside this file) as
the pipeline does: one mask, the clean sentence; several, the special tokens and the other masks kept. A row without
[MASK], or with more masks than the graph evaluates, is an error.
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils
from mask_filling import fill_mask_row
from tokenizers import Tokenizer
from triton_responses import input_array, respond_each
from version_files import serving_settings, version_file


class TritonPythonModel:
    def initialize(self, args):
        serving = serving_settings(args)
        self.mask_id = int(serving["mask_token_id"])
        self.max_masks = int(serving["max_masks"])
        self.tokenizer = Tokenizer.from_file(str(version_file(args, "tokenizer.json")))
        self.mask_token = self.tokenizer.id_to_token(self.mask_id)

    def execute(self, requests):
        return respond_each(requests, "fill_mask", self._respond)

    def _respond(self, request):
        ids, mask = input_array(request, "input_ids"), input_array(request, "attention_mask")
        positions, valid = input_array(request, "mask_positions"), input_array(request, "mask_valid")
        top_ids, top_probs = input_array(request, "top_ids"), input_array(request, "top_probs")
        rows = []
        for r in range(ids.shape[0]):
            tokens = ids[r][mask[r] > 0]
            count = int((tokens == self.mask_id).sum())
            if count == 0:
                raise ValueError(f"row {r}: no {self.mask_token} token in the text")
            if count > self.max_masks:
                raise ValueError(f"row {r}: {count} {self.mask_token} tokens; at most {self.max_masks} are supported")
            per_mask = fill_mask_row(tokens, positions[r], valid[r], top_ids[r], top_probs[r], self.tokenizer, count)
            rows.append(json.dumps(per_mask).encode("utf-8"))
        result = np.array(rows, dtype=np.object_).reshape(-1, 1)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("RESULT", result)])
