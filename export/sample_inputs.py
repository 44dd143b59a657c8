"""Real tokenized text for validation and calibration, shaped for each head's graph.

Text comes from the project's corpus (model_def/data) or a user's file (one text per line); each head gets what it
is used with in serving: masked sentences for fill-mask, (question, context) pairs for QA, sentence pairs for NSP,
a prompt with four choices for multiple choice.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_def import MobileBertTokenizer
from model_def.corpus import corpus_lines, qa_examples

from .errors import ExportError
from .heads import FILL_MASK_MAX_MASKS, INPUT_NAMES, HeadSpec

MC_CHOICES = 4


@dataclass
class Batch:
    """Model inputs as int64 numpy arrays, keyed by INPUT_NAMES."""

    arrays: dict[str, np.ndarray]

    @property
    def size(self) -> int:
        return int(self.arrays["input_ids"].shape[0])


def read_text_file(path: str | Path) -> list[str]:
    """Non-empty lines of a user's calibration/validation text file."""
    path = Path(path)
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except FileNotFoundError:
        raise ExportError(f"text file {path} does not exist") from None
    except UnicodeDecodeError as exc:
        raise ExportError(f"text file {path} is not UTF-8: {exc}") from exc
    lines = [line for line in lines if line]
    if not lines:
        raise ExportError(f"text file {path} holds no text")
    return lines


def _mask_words(tokenizer: MobileBertTokenizer, text: str, rng: random.Random, max_masks: int) -> str:
    words = text.split()
    count = max(1, min(max_masks, round(len(words) * 0.15)))
    for i in rng.sample(range(len(words)), min(count, len(words))):
        words[i] = tokenizer.mask_token
    return " ".join(words)


def texts_for_head(spec: HeadSpec, tokenizer: MobileBertTokenizer, count: int, seed: int, lines: list[str]) -> list:
    """`count` raw inputs for the head: str, (str, str) pairs, or (prompt, [choices]) for multiple choice."""
    rng = random.Random(seed)
    pool = lines[:]
    rng.shuffle(pool)
    pick = [pool[i % len(pool)] for i in range(count)]
    if spec.name in ("fill_mask", "masked_lm", "pretraining"):
        return [_mask_words(tokenizer, text, rng, FILL_MASK_MAX_MASKS) for text in pick]
    if spec.name == "question_answering":
        examples = qa_examples()
        rng.shuffle(examples)
        return [(ex["question"], ex["context"]) for ex in (examples[i % len(examples)] for i in range(count))]
    if spec.name == "next_sentence":
        return [(pick[i], pick[(i + 1) % count] if i % 2 else pool[(i * 7 + 3) % len(pool)]) for i in range(count)]
    if spec.name == "multiple_choice":
        return [(pick[i], [pool[(i * MC_CHOICES + j) % len(pool)] for j in range(MC_CHOICES)]) for i in range(count)]
    return pick


def tokenize_for_head(spec: HeadSpec, tokenizer: MobileBertTokenizer, texts: list, max_length: int) -> Batch:
    """Tokenize raw inputs into one padded batch for the head's graph."""
    common = {"padding": "longest", "truncation": True, "max_length": max_length, "return_tensors": "np"}
    if spec.choices_axis:
        prompts = [prompt for prompt, choices in texts for _ in choices]
        options = [choice for _, choices in texts for choice in choices]
        enc = tokenizer(prompts, options, **common)
        return Batch({k: enc[k].astype(np.int64).reshape(len(texts), MC_CHOICES, -1) for k in INPUT_NAMES})
    if isinstance(texts[0], tuple):
        enc = tokenizer([a for a, _ in texts], [b for _, b in texts], **common)
    else:
        enc = tokenizer(texts, **common)
    return Batch({k: enc[k].astype(np.int64) for k in INPUT_NAMES})


def head_batches(
    spec: HeadSpec,
    tokenizer: MobileBertTokenizer,
    *,
    count: int,
    batch_size: int,
    max_length: int,
    seed: int = 0,
    text_file: str | Path | None = None,
) -> list[Batch]:
    """`count` examples for the head, in batches of `batch_size` (each padded to its own longest row)."""
    lines = read_text_file(text_file) if text_file else corpus_lines()
    texts = texts_for_head(spec, tokenizer, count, seed, lines)
    return [
        tokenize_for_head(spec, tokenizer, texts[i : i + batch_size], max_length) for i in range(0, count, batch_size)
    ]
