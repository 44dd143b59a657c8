"""token_classification post-processing: tags aggregated to words, then to entities, with character spans.

Like the Hugging Face token-classification pipeline with aggregation_strategy="first": a word (a token and its
"##" continuations) takes the label and score of its first token; adjacent words with the same entity type merge
(B-X starts a new entity, I-X continues one, labels without a B-/I- prefix merge with equal neighbours); "O" is
dropped. Output RESULT [1] BYTES per row: JSON list of {entity_group, score, word, start, end}, where word is the
original text between the character offsets start and end. Text beyond the tokenizer's truncation is not tagged.
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils
from probabilities import labels, softmax
from tokenizers import Tokenizer
from triton_responses import input_array, respond_each
from version_files import serving_settings, version_file


def _split_label(label):
    if label.startswith("B-") or label.startswith("I-"):
        return label[0], label[2:]
    return "I", label


class TritonPythonModel:
    def initialize(self, args):
        serving = serving_settings(args)
        self.labels = labels(serving.get("id2label"))
        self.tokenizer = Tokenizer.from_file(str(version_file(args, "tokenizer.json")))
        self.ignore = {"O"}

    def execute(self, requests):
        return respond_each(requests, "token_classification", self._respond)

    def _respond(self, request):
        logits = input_array(request, "logits")
        ids, mask = input_array(request, "input_ids"), input_array(request, "attention_mask")
        offsets = input_array(request, "offsets")
        texts = [v.decode("utf-8") for v in input_array(request, "TEXT").reshape(-1)]
        if logits.shape[-1] != len(self.labels):
            raise ValueError(f"got {logits.shape[-1]} logits per token for {len(self.labels)} labels")
        probs = softmax(logits)
        rows = [
            json.dumps(self._entities(texts[r], ids[r], mask[r], offsets[r], probs[r])).encode()
            for r in range(len(texts))
        ]
        result = np.array(rows, dtype=np.object_).reshape(-1, 1)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("RESULT", result)])

    def _entities(self, text, ids, mask, offsets, probs):
        words = []  # [label, score, start, end]
        for i in range(len(ids)):
            start, end = int(offsets[i, 0]), int(offsets[i, 1])
            if mask[i] == 0 or start == end:  # padding and special tokens
                continue
            token = self.tokenizer.id_to_token(int(ids[i])) or ""
            if words and token.startswith("##") and words[-1][3] == start:
                words[-1][3] = end  # a continuation extends the word and keeps its first token's tag
                continue
            best = int(np.argmax(probs[i]))
            words.append([self.labels[best], float(probs[i, best]), start, end])
        entities = []
        for label, score, start, end in words:
            bi, tag = _split_label(label)
            if entities and bi == "I" and entities[-1]["entity_group"] == tag:
                group = entities[-1]
                group["scores"].append(score)
                group["end"] = end
            else:
                entities.append({"entity_group": tag, "scores": [score], "start": start, "end": end})
        return [
            {
                "entity_group": e["entity_group"],
                "score": float(np.mean(e["scores"])),
                "word": text[e["start"] : e["end"]],
                "start": e["start"],
                "end": e["end"],
            }
            for e in entities
            if e["entity_group"] not in self.ignore
        ]
