"""Request data for the perf runs, from the project's own English corpus (model_def.corpus), never one repeated text.

Two length profiles:
  corpus  the corpus as it is: one line per row (fill-mask: one word replaced by [MASK]), QA question/context pairs,
          review texts; lengths follow the data (fill-mask lines are 4..108 tokens, median ~20; QA pairs 18..262)
  seq128  every row 100..128 tokens (special tokens included): consecutive corpus lines joined and cut at a word
          boundary, so the whole row lands in the 128 length bucket; the "sequence length 128" of the targets

A row is a dict {ensemble input name: text} (multiple_choice: CHOICES is a list of texts); `write_analyzer_data` turns
rows of the batched text tasks into perf_analyzer's --input-data JSON.
"""

from __future__ import annotations

import itertools
import json
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from model_def.corpus import classification_examples, corpus_lines, qa_examples

PROFILES = ("corpus", "seq128")
MASK = "[MASK]"
# Batched ensembles whose requests are plain text columns: what perf_analyzer can send.
ANALYZER_INPUTS: dict[str, tuple[str, ...]] = {
    "fill_mask": ("TEXT",),
    "question_answering": ("QUESTION", "CONTEXT"),
    "text_classification": ("TEXT",),
    "token_classification": ("TEXT",),
    "feature_extraction": ("TEXT",),
    "next_sentence": ("TEXT", "TEXT_PAIR"),
    "pretraining": ("TEXT",),
}
# Every task with rows; multiple_choice (unbatched, a variable number of CHOICES per prompt) only through the client.
TASK_INPUTS: dict[str, tuple[str, ...]] = {**ANALYZER_INPUTS, "multiple_choice": ("PROMPT", "CHOICES")}
MULTIPLE_CHOICES = 3  # choices per multiple_choice row
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")

Row = dict[str, Any]  # input name -> text (multiple_choice CHOICES: a list of texts)


def check_task(task: str) -> None:
    if task not in TASK_INPUTS:
        raise ValueError(f"no perf input data for task {task!r}; supported: {', '.join(TASK_INPUTS)}")


def mask_one_word(text: str, rng: random.Random) -> str:
    """Replace one word (letters only; punctuation around it stays) with [MASK]; the text must have a word."""
    words = text.split(" ")
    candidates = [i for i, w in enumerate(words) if _WORD.search(w)]
    if not candidates:
        raise ValueError(f"no word to mask in {text!r}")
    i = rng.choice(candidates)
    words[i] = _WORD.sub(MASK, words[i], count=1)
    return " ".join(words)


def corpus_rows(task: str, seed: int = 0) -> list[Row]:
    """Every row the corpus gives for `task`, at its natural length, in a seeded shuffled order."""
    check_task(task)
    rng = random.Random(seed)
    lines = corpus_lines()
    if task == "fill_mask":
        rows = [{"TEXT": mask_one_word(line, rng)} for line in lines if len(_WORD.findall(line)) >= 3]
    elif task == "question_answering":
        rows = [{"QUESTION": ex["question"], "CONTEXT": ex["context"]} for ex in qa_examples()]
    elif task == "text_classification":
        rows = [{"TEXT": ex["text"]} for ex in classification_examples()]
    elif task == "next_sentence":
        rows = [{"TEXT": a, "TEXT_PAIR": b} for a, b in itertools.pairwise(lines)]
    elif task == "multiple_choice":  # a line as the prompt, the lines after it as the choices
        n = MULTIPLE_CHOICES
        rows = [{"PROMPT": lines[i], "CHOICES": lines[i + 1 : i + 1 + n]} for i in range(len(lines) - n)]
    else:
        rows = [{"TEXT": line} for line in lines]
    rng.shuffle(rows)
    return rows


def _fit(
    count_tokens: Callable[[str], int], start: str, more: list[str], min_tokens: int, max_tokens: int
) -> str | None:
    """`start` extended with lines of `more` until >= min_tokens, then cut at a word boundary to <= max_tokens."""
    text = start
    for line in more:
        if count_tokens(text) >= min_tokens:
            break
        text = f"{text} {line}".strip()
    words = text.split(" ")
    while len(words) > 1 and count_tokens(" ".join(words)) > max_tokens:
        # Drop roughly the excess (a word is ~1.3 tokens), then one at a time near the end.
        excess = count_tokens(" ".join(words)) - max_tokens
        words = words[: len(words) - max(1, excess // 2)]
    text = " ".join(words)
    return text if min_tokens <= count_tokens(text) <= max_tokens else None


def seq128_rows(
    task: str, tokenizer, count: int = 64, min_tokens: int = 100, max_tokens: int = 128, seed: int = 0
) -> list[Row]:
    """`count` distinct rows of min_tokens..max_tokens tokens each (special tokens included) for `task`."""
    if task not in ANALYZER_INPUTS:
        raise ValueError(f"the seq128 profile has no rows for {task!r}; use the corpus profile")
    rng = random.Random(seed)
    lines = corpus_lines()
    rows: list[Row] = []
    stride = max(1, len(lines) // count)
    for attempt in range(count * 4):
        if len(rows) == count:
            break
        first = (attempt * stride + attempt // count) % len(lines)
        following = lines[first + 1 :] + lines[:first]
        if task == "question_answering":
            example = qa_examples()[attempt % len(qa_examples())]
            question = example["question"]

            def pair_tokens(context: str, question: str = question) -> int:
                return len(tokenizer(question, context)["input_ids"])

            context = _fit(pair_tokens, example["context"], following, min_tokens, max_tokens)
            if context is not None:
                rows.append({"QUESTION": question, "CONTEXT": context})
            continue

        def tokens(text: str) -> int:
            return len(tokenizer(text)["input_ids"])

        limit = max_tokens - 1 if task == "next_sentence" else max_tokens  # the pair adds a [SEP]
        text = _fit(tokens, lines[first], following, min_tokens, limit)
        if text is None:
            continue
        if task == "fill_mask":
            text = mask_one_word(text, rng)
        if task == "next_sentence":
            half = len(text) // 2
            cut = text.rfind(" ", 0, half) if " " in text[:half] else half
            rows.append({"TEXT": text[:cut].strip(), "TEXT_PAIR": text[cut:].strip()})
        else:
            rows.append({"TEXT": text})
    if len(rows) < count:
        raise ValueError(f"{task}: only {len(rows)} of {count} rows of {min_tokens}..{max_tokens} tokens could be made")
    return rows


def make_rows(task: str, profile: str, tokenizer=None, count: int = 64, seed: int = 0) -> list[Row]:
    if profile == "corpus":
        return corpus_rows(task, seed)
    if profile == "seq128":
        if tokenizer is None:
            raise ValueError("the seq128 profile needs the tokenizer to measure lengths")
        return seq128_rows(task, tokenizer, count=count, seed=seed)
    raise ValueError(f"unknown length profile {profile!r}; use one of {PROFILES}")


def token_lengths(rows: list[Row], tokenizer) -> list[int]:
    """Tokens per row (special tokens included), as the server's tokenizer sees them."""
    lengths = []
    for row in rows:
        values = list(row.values())
        encoded = tokenizer(values[0], values[1]) if len(values) == 2 else tokenizer(values[0])
        lengths.append(len(encoded["input_ids"]))
    return lengths


def write_analyzer_data(rows: list[Row], path: Path) -> Path:
    """perf_analyzer's --input-data JSON: one data step per row, each input a batch-1 [1] BYTES tensor."""
    if any(not isinstance(text, str) for row in rows for text in row.values()):
        raise ValueError("perf_analyzer input data: every input of a row must be one text (not multiple_choice)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"data": [{name: [text] for name, text in row.items()} for row in rows]}
    path.write_text(json.dumps(data, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
