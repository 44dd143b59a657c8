"""Fill-mask decoding, as the Hugging Face fill-mask pipeline's postprocess does (plain numpy + a tokenizer).

From the fill-mask graph's outputs (the first [MASK] positions, top-k ids and probabilities) to the pipeline's
dicts {score, token, token_str, sequence}. `sequence` is the text with that one mask filled: for a single mask
decoded without special tokens; for several masks the pipeline keeps the special tokens, so that the other [MASK]s
stay visible ("[CLS] the paris of france is [MASK]. [SEP]"), and so does this. Shipped beside the fill_mask post
model; perf/baselines.py imports it too.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Decoder(Protocol):  # tokenizers.Tokenizer
    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str: ...


def fill_mask_row(
    tokens: np.ndarray,
    positions: np.ndarray,
    valid: np.ndarray,
    top_ids: np.ndarray,
    top_probs: np.ndarray,
    decoder: Decoder,
    mask_count: int,
    top_k: int | None = None,
) -> list[list[dict]]:
    """One row's candidates, one best-first list per evaluated mask.

    tokens: the row's token ids without padding; positions/valid: [max_masks] mask positions and which are real;
    top_ids/top_probs: [max_masks, k]; mask_count: the [MASK] tokens in the row (one decides the sequence's form);
    top_k: keep the first top_k candidates (all when None).
    """
    single = mask_count == 1
    per_mask = []
    for m in np.flatnonzero(valid):
        candidates = []
        for token_id, prob in zip(top_ids[m, :top_k].tolist(), top_probs[m, :top_k].tolist(), strict=True):
            filled = tokens.copy()
            filled[int(positions[m])] = token_id
            candidates.append(
                {
                    "score": float(prob),
                    "token": int(token_id),
                    "token_str": decoder.decode([token_id]),
                    "sequence": decoder.decode(filled.tolist(), skip_special_tokens=single),
                }
            )
        per_mask.append(candidates)
    return per_mask
