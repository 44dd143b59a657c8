"""The project's own small English text data, read from the package so it works from an install too.

Three files live in ``model_def/data``:

* ``corpus_en.txt``: original English prose, one sentence or short paragraph per line. Used to train a WordPiece
  vocabulary, as INT8 calibration text, to train a tiny masked LM and as load-test input.
* ``qa_en.jsonl``: extractive question answering, one ``{"question", "context", "answer", "answer_start"}`` object
  per line, where ``context[answer_start:answer_start + len(answer)] == answer``.
* ``classification_en.jsonl``: short reviews, one ``{"text", "label"}`` object per line, with ``label`` either
  ``"positive"`` or ``"negative"``.

Every function reads the file again and returns a fresh list, so callers may mutate what they get.
"""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

DATA_PACKAGE = "model_def.data"
CORPUS_FILE = "corpus_en.txt"
QA_FILE = "qa_en.jsonl"
CLASSIFICATION_FILE = "classification_en.jsonl"


def _read_text(name: str) -> str:
    """Return the UTF-8 text of the data file ``name`` from the ``model_def.data`` package."""
    return files(DATA_PACKAGE).joinpath(name).read_text(encoding="utf-8")


def _read_jsonl(name: str) -> list[dict[str, Any]]:
    """Parse the JSON Lines data file ``name``; blank lines are skipped.

    Raises:
        ValueError: a line is not valid JSON or not a JSON object; the message names the file and line.
    """
    rows: list[dict[str, Any]] = []
    for lineno, line in enumerate(_read_text(name).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{name}, line {lineno}: invalid JSON: {exc.msg}") from exc
        if not isinstance(row, dict):
            raise ValueError(f"{name}, line {lineno}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


def corpus_lines() -> list[str]:
    """Return the lines of the English corpus, stripped, with blank lines dropped, in file order."""
    return [stripped for line in _read_text(CORPUS_FILE).splitlines() if (stripped := line.strip())]


def qa_examples() -> list[dict[str, Any]]:
    """Return the extractive QA examples.

    Each is a dict with ``question`` (str), ``context`` (str), ``answer`` (str, an exact substring of the context)
    and ``answer_start`` (int, the character offset of ``answer`` in ``context``).
    """
    return _read_jsonl(QA_FILE)


def classification_examples() -> list[dict[str, Any]]:
    """Return the sentiment examples: dicts with ``text`` (str) and ``label`` (``"positive"`` or ``"negative"``)."""
    return _read_jsonl(CLASSIFICATION_FILE)
