"""question_answering post-processing: the best answer spans in CONTEXT with scores and character offsets.

The decoding is span_decoding.best_spans (shipped beside this file by the build), the Hugging Face question-answering
pipeline's: only context tokens (type id 1, with characters) can start or end an answer, spans of at most
`max_answer_len` tokens scored p(start) * p(end). Output RESULT [1] BYTES per row: JSON list of the `top_k` best
{answer, score, start, end}, best first (start/end are character offsets into CONTEXT). Contexts longer than the
largest length bucket are truncated by the tokenizer; answers are found in the part that was kept.
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils
from span_decoding import best_spans
from triton_responses import input_array, respond_each
from version_files import serving_settings


class TritonPythonModel:
    def initialize(self, args):
        serving = serving_settings(args)
        # written by the build from deploy/tasks.py's serving_defaults, the one place they are set
        self.top_k = int(serving["top_k"])
        self.max_answer_len = int(serving["max_answer_len"])

    def execute(self, requests):
        return respond_each(requests, "question_answering", self._respond)

    def _respond(self, request):
        start_logits, end_logits = input_array(request, "start_logits"), input_array(request, "end_logits")
        types, mask = input_array(request, "token_type_ids"), input_array(request, "attention_mask")
        offsets = input_array(request, "offsets")
        contexts = [v.decode("utf-8") for v in input_array(request, "CONTEXT").reshape(-1)]
        rows = []
        for r, context in enumerate(contexts):
            # empty context, or the question took every token: no span, []
            allowed = (types[r] == 1) & (mask[r] == 1) & (offsets[r, :, 1] > offsets[r, :, 0])
            spans = best_spans(
                start_logits[r], end_logits[r], allowed, offsets[r], context, self.top_k, self.max_answer_len
            )
            rows.append(json.dumps(spans).encode())
        result = np.array(rows, dtype=np.object_).reshape(-1, 1)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("RESULT", result)])
