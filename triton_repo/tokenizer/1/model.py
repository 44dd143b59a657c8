"""Triton Python-backend tokenizer: text (and text pairs) in, MobileBERT token tensors out.

Loads the tokenizer.json that export writes (placed beside this file by the repository build) with the `tokenizers`
library alone. Each request's rows are padded to the smallest configured length bucket that fits its longest row,
not to the maximum, nor to each request's own length, so requests of similar length produce identical shapes and the
next model's dynamic batcher can group them. Text beyond the largest bucket is truncated (policy in config
parameters) rather than refused. A failing request gets an error response naming the problem; the instance lives on.
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils
from tokenizers import Tokenizer
from triton_responses import respond_each
from version_files import version_file


def _strings(tensor, name, max_bytes):
    values = []
    for index, row in enumerate(tensor.as_numpy().reshape(-1)):
        raw = row if isinstance(row, bytes) else str(row).encode()
        if len(raw) > max_bytes:
            raise ValueError(f"{name} row {index} is {len(raw)} bytes; the limit is {max_bytes} (max_text_bytes)")
        try:
            values.append(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise ValueError(f"{name} is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    return values


class TritonPythonModel:
    def initialize(self, args):
        # every parameter but `mode` is always in the config (deploy.model_configs): no defaults here to drift
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.tokenizer = Tokenizer.from_file(str(version_file(args, "tokenizer.json")))
        self.buckets = sorted(int(b) for b in params["length_buckets"].split(","))
        self.truncation = params["truncation"]
        self.tokenizer.enable_truncation(self.buckets[-1], strategy=self.truncation)
        self.tokenizer.no_padding()
        self.choices_mode = params.get("mode", "texts") == "choices"
        self.max_choices = int(params["max_choices"]) if self.choices_mode else None
        # Bounds the work one request can cause: tokenizing is linear in the text, truncation happens after it.
        self.max_bytes = int(params["max_text_bytes"])

    def execute(self, requests):
        return respond_each(requests, "tokenizer", self._tokenize)

    def _tokenize(self, request):
        if self.choices_mode:
            prompt = _strings(pb_utils.get_input_tensor_by_name(request, "PROMPT"), "PROMPT", self.max_bytes)
            choices = _strings(pb_utils.get_input_tensor_by_name(request, "CHOICES"), "CHOICES", self.max_bytes)
            if len(prompt) != 1:
                raise ValueError(f"PROMPT must hold one text, got {len(prompt)}")
            if not choices:
                raise ValueError("CHOICES is empty: send at least one choice")
            if len(choices) > self.max_choices:
                raise ValueError(f"{len(choices)} CHOICES sent; at most {self.max_choices} are accepted per prompt")
            encodings = self.tokenizer.encode_batch([(prompt[0], choice) for choice in choices])
            return self._response(encodings, leading=(1,))
        texts = _strings(pb_utils.get_input_tensor_by_name(request, "TEXT"), "TEXT", self.max_bytes)
        pair_tensor = pb_utils.get_input_tensor_by_name(request, "TEXT_PAIR")
        if pair_tensor is not None:
            pairs = _strings(pair_tensor, "TEXT_PAIR", self.max_bytes)
            if len(pairs) != len(texts):
                raise ValueError(f"TEXT has {len(texts)} rows but TEXT_PAIR has {len(pairs)}")
            encodings = self.tokenizer.encode_batch(list(zip(texts, pairs, strict=True)))
        else:
            encodings = self.tokenizer.encode_batch(texts)
        return self._response(encodings)

    def _response(self, encodings, leading=()):
        longest = max(len(e.ids) for e in encodings)
        length = next(b for b in self.buckets if b >= longest)
        shape = (len(encodings), length)
        ids, mask, types = np.zeros(shape, np.int64), np.zeros(shape, np.int64), np.zeros(shape, np.int64)
        offsets = np.zeros((*shape, 2), np.int64)
        for i, e in enumerate(encodings):
            n = len(e.ids)
            ids[i, :n], mask[i, :n], types[i, :n] = e.ids, e.attention_mask, e.type_ids
            offsets[i, :n] = e.offsets
        tensors = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types, "offsets": offsets}
        return pb_utils.InferenceResponse(
            output_tensors=[pb_utils.Tensor(n, t.reshape(*leading, *t.shape)) for n, t in tensors.items()]
        )
