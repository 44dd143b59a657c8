"""The client's side of the server contract: one `Job` per task method, from Python arguments to results.

Each task is an ensemble named after the task (see deploy/tasks.py, the server-side description; a test checks the
two agree). A `Job` holds the request columns (input name -> one string per row), the outputs to ask for, how to
decode a response into per-row values, and how to shape those into the Hugging Face pipeline-style result. The
clients only decide how many rows go into one request and how requests are sent (sequentially or concurrently).
Arguments are checked here, before anything is sent, so mistakes surface as InvalidInputError naming the argument.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .codec import json_rows, text_array
from .errors import InvalidInputError

# The task ensembles a server can offer (composing models - tokenizer, <task>_onnx, <task>_post - are not tasks).
TASKS = (
    "fill_mask",
    "text_classification",
    "next_sentence",
    "multiple_choice",
    "token_classification",
    "question_answering",
    "feature_extraction",
    "pretraining",
)
# Inputs of each task ensemble, optional ones included (must match deploy/tasks.py).
TASK_INPUTS = {
    "fill_mask": ("TEXT",),
    "text_classification": ("TEXT", "TEXT_PAIR"),
    "next_sentence": ("TEXT", "TEXT_PAIR"),
    "multiple_choice": ("PROMPT", "CHOICES"),
    "token_classification": ("TEXT",),
    "question_answering": ("QUESTION", "CONTEXT"),
    "feature_extraction": ("TEXT",),
    "pretraining": ("TEXT", "TEXT_PAIR"),
}
UNBATCHED_TASKS = frozenset({"multiple_choice"})  # one request per prompt, no batch dimension
FILL_MASK_CANDIDATES = 10  # the fill_mask ensemble returns the 10 best tokens per mask
POOLINGS = {"mean": "MEAN_POOLED", "cls": "CLS", "pooler": "POOLER_OUTPUT", "none": "LAST_HIDDEN_STATE"}
# What `answer(top_k=1)` returns when the context holds no possible span (empty context), as the HF pipeline does
# for an impossible answer.
NO_ANSWER = {"answer": "", "score": 0.0, "start": 0, "end": 0}


def _identity(value: Any) -> Any:
    return value


def _result_rows(outputs: dict[str, np.ndarray]) -> list[Any]:
    return json_rows(outputs["RESULT"])


@dataclass
class Job:
    """One task method call, planned: what to send and how to turn the answers into the method's result."""

    model: str
    columns: dict[str, list[Any]]  # input name -> one value per row (a string; a list of strings for CHOICES)
    outputs: tuple[str, ...]
    single: bool  # the caller passed one input, not a list: return one result
    decode: Callable[[dict[str, np.ndarray]], list[Any]] = _result_rows  # one response -> one value per row
    transform: Callable[[Any], Any] = _identity  # one row's value -> that row's result
    combine: Callable[[list[Any]], Any] | None = None  # every row's result -> the result for a list input
    batched: bool = True  # False: each row is its own request without a batch dimension

    @property
    def rows(self) -> int:
        return len(next(iter(self.columns.values())))

    def requests(self, max_batch_size: int) -> list[dict[str, np.ndarray]]:
        """The input tensors of each request, in row order: up to `max_batch_size` rows per request."""
        if not self.batched:
            return [
                {name: text_array(_as_list(col[i]), (len(_as_list(col[i])),)) for name, col in self.columns.items()}
                for i in range(self.rows)
            ]
        step = max(1, max_batch_size)
        return [
            {
                name: text_array(col[start : start + step], (len(col[start : start + step]), 1))
                for name, col in self.columns.items()
            }
            for start in range(0, self.rows, step)
        ]

    def finish(self, rows: list[Any]) -> Any:
        results = [self.transform(row) for row in rows]
        if self.single:
            return results[0]
        return self.combine(results) if self.combine is not None else results


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# -- argument checks ------------------------------------------------------------------------------------------------


def strings(value: Any, what: str) -> tuple[list[str], bool]:
    """A string or a sequence of strings -> (the rows, whether a single string was given)."""
    if isinstance(value, str):
        return [value], True
    if isinstance(value, (bytes, dict)) or not isinstance(value, (Sequence, np.ndarray)):
        raise InvalidInputError(f"{what}: expected a string or a list of strings, got {type(value).__name__}")
    rows = list(value)
    for i, item in enumerate(rows):
        if not isinstance(item, str):
            raise InvalidInputError(f"{what}[{i}]: expected a string, got {type(item).__name__}")
    return rows, False


def paired(first: Any, second: Any, names: tuple[str, str]) -> tuple[list[str], list[str], bool]:
    """Two aligned text arguments; a single string is repeated against a list (many questions, one context)."""
    a, single_a = strings(first, names[0])
    b, single_b = strings(second, names[1])
    if single_a and not single_b:
        a = a * len(b)
    elif single_b and not single_a:
        b = b * len(a)
    elif len(a) != len(b):
        raise InvalidInputError(f"{names[0]} has {len(a)} items but {names[1]} has {len(b)}; they must match")
    return a, b, single_a and single_b


def top_k_value(top_k: Any, what: str, maximum: int | None = None, allow_none: bool = False) -> int | None:
    if top_k is None and allow_none:
        return None
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise InvalidInputError(f"{what}: top_k must be a positive integer, got {top_k!r}")
    if maximum is not None and top_k > maximum:
        raise InvalidInputError(f"{what}: top_k={top_k} but the server returns at most {maximum} candidates")
    return int(top_k)


# -- one planner per task method ------------------------------------------------------------------------------------


def fill_mask(text: Any, top_k: int = 5) -> Job:
    rows, single = strings(text, "fill_mask: text")
    k = top_k_value(top_k, "fill_mask", FILL_MASK_CANDIDATES)

    def transform(masks: list[list[dict]]) -> Any:
        # As the HF fill-mask pipeline: one mask -> a flat list of candidates; several -> one list per mask.
        ranked = [candidates[:k] for candidates in masks]
        return ranked[0] if len(ranked) == 1 else ranked

    return Job("fill_mask", {"TEXT": rows}, ("RESULT",), single, transform=transform)


def classify(text: Any, text_pair: Any = None, top_k: int | None = 1) -> Job:
    k = top_k_value(top_k, "classify", allow_none=True)
    if text_pair is None:
        rows, single = strings(text, "classify: text")
        columns = {"TEXT": rows}
    else:
        rows, pairs, single = paired(text, text_pair, ("classify: text", "classify: text_pair"))
        columns = {"TEXT": rows, "TEXT_PAIR": pairs}
    return Job("text_classification", columns, ("RESULT",), single, transform=lambda labels: labels[:k])


def next_sentence(text_a: Any, text_b: Any) -> Job:
    a, b, single = paired(text_a, text_b, ("next_sentence: text_a", "next_sentence: text_b"))
    return Job("next_sentence", {"TEXT": a, "TEXT_PAIR": b}, ("RESULT",), single)


def multiple_choice(prompt: Any, choices: Any) -> Job:
    prompts, single = strings(prompt, "multiple_choice: prompt")
    if isinstance(choices, str) or not isinstance(choices, Sequence) or len(choices) == 0:
        raise InvalidInputError("multiple_choice: choices must be a non-empty list of strings")
    if all(isinstance(c, str) for c in choices):
        sets = [list(choices)] * len(prompts)  # the same choices for every prompt
    elif single:
        raise InvalidInputError("multiple_choice: for one prompt, choices must be a list of strings")
    else:
        if len(choices) != len(prompts):
            raise InvalidInputError(
                f"multiple_choice: {len(prompts)} prompts but {len(choices)} sets of choices; they must match"
            )
        sets = [strings(c, f"multiple_choice: choices[{i}]")[0] for i, c in enumerate(choices)]
    for i, options in enumerate(sets):
        if not options:
            raise InvalidInputError(f"multiple_choice: choices[{i}] is empty; give at least one choice")
    return Job("multiple_choice", {"PROMPT": prompts, "CHOICES": sets}, ("RESULT",), single, batched=False)


def tag(text: Any) -> Job:
    rows, single = strings(text, "tag: text")
    return Job("token_classification", {"TEXT": rows}, ("RESULT",), single)


def answer(question: Any, context: Any, top_k: int = 1) -> Job:
    questions, contexts, single = paired(question, context, ("answer: question", "answer: context"))
    k = top_k_value(top_k, "answer")

    def transform(spans: list[dict]) -> Any:
        # As the HF question-answering pipeline: top_k=1 -> one dict, more -> a list (as many as the server found).
        if k == 1:
            return spans[0] if spans else dict(NO_ANSWER)
        return spans[:k]

    return Job(
        "question_answering", {"QUESTION": questions, "CONTEXT": contexts}, ("RESULT",), single, transform=transform
    )


def embed(text: Any, pooling: str = "mean") -> Job:
    rows, single = strings(text, "embed: text")
    if pooling not in POOLINGS:
        raise InvalidInputError(f"embed: pooling must be one of {sorted(POOLINGS)}, got {pooling!r}")
    name = POOLINGS[pooling]
    if pooling == "none":
        # Token vectors come padded to a length bucket; keep each text's real tokens only.
        def decode(outputs: dict[str, np.ndarray]) -> list[Any]:
            mask = outputs["ATTENTION_MASK"].astype(bool)
            return [hidden[row_mask] for hidden, row_mask in zip(outputs[name], mask, strict=True)]

        return Job("feature_extraction", {"TEXT": rows}, (name, "ATTENTION_MASK"), single, decode=decode)

    def stack(vectors: list[np.ndarray]) -> np.ndarray:
        return np.stack(vectors) if vectors else np.zeros((0, 0), dtype=np.float32)

    return Job("feature_extraction", {"TEXT": rows}, (name,), single, decode=lambda out: list(out[name]), combine=stack)
