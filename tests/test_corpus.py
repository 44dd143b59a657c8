"""The bundled English data loads, has the promised size and shape, and is internally consistent."""

from __future__ import annotations

import unicodedata
from collections import Counter

import pytest

from model_def.corpus import classification_examples, corpus_lines, qa_examples


@pytest.fixture(scope="module")
def lines() -> list[str]:
    return corpus_lines()


@pytest.fixture(scope="module")
def qa() -> list[dict]:
    return qa_examples()


@pytest.fixture(scope="module")
def reviews() -> list[dict]:
    return classification_examples()


def test_corpus_size(lines: list[str]) -> None:
    assert 600 <= len(lines) <= 800
    words = sum(len(line.split()) for line in lines)
    assert 8_000 <= words <= 20_000


def test_corpus_lines_are_stripped_and_non_empty(lines: list[str]) -> None:
    assert all(line and line == line.strip() for line in lines)


def test_corpus_has_no_duplicate_lines(lines: list[str]) -> None:
    duplicates = [line for line, n in Counter(lines).items() if n > 1]
    assert duplicates == []


def test_corpus_length_distribution(lines: list[str]) -> None:
    lengths = [len(line.split()) for line in lines]
    typical = sum(8 <= n <= 40 for n in lengths)
    assert typical / len(lengths) >= 0.8, "most lines should be 8-40 words"
    assert sum(60 <= n <= 120 for n in lengths) >= 5, "a few paragraph-length lines"
    assert sum(n < 4 for n in lengths) >= 3, "a few very short lines"
    assert max(lengths) <= 150


def _has_accent(line: str) -> bool:
    return any(unicodedata.combining(ch) for ch in unicodedata.normalize("NFD", line))


def test_corpus_exercises_the_tokenizer_paths_real_text_hits(lines: list[str]) -> None:
    # Validation and calibration text must reach what served text reaches: accent stripping (the uncased
    # tokenizer's NFD + strip), digits (split one per token), non-ASCII symbols (their own tokens or [UNK]).
    accented = [line for line in lines if _has_accent(line)]
    with_digits = [line for line in lines if any(ch.isdigit() for ch in line)]
    symbols = [line for line in lines if any(ord(ch) > 127 and unicodedata.category(ch).startswith("S") for ch in line)]
    assert len(accented) >= 3, accented
    assert len(with_digits) >= 10, len(with_digits)
    assert len(symbols) >= 1, "no non-ASCII symbol (e.g. a unit sign) anywhere in the corpus"


def test_corpus_returns_a_fresh_list() -> None:
    first = corpus_lines()
    first.clear()
    assert corpus_lines()


def test_qa_size_and_fields(qa: list[dict]) -> None:
    assert 60 <= len(qa) <= 120
    for example in qa:
        assert set(example) == {"question", "context", "answer", "answer_start"}
        assert isinstance(example["answer_start"], int)
        assert example["question"].endswith("?")
        assert example["answer"]


def test_qa_answers_are_at_their_offsets(qa: list[dict]) -> None:
    wrong = [
        (example["question"], example["answer"], example["answer_start"])
        for example in qa
        if example["context"][example["answer_start"] : example["answer_start"] + len(example["answer"])]
        != example["answer"]
    ]
    assert wrong == []


def test_qa_answers_are_whole_words(qa: list[dict]) -> None:
    for example in qa:
        context, start, end = (
            example["context"],
            example["answer_start"],
            example["answer_start"] + len(example["answer"]),
        )
        assert start == 0 or not context[start - 1].isalnum(), example["question"]
        assert end == len(context) or not context[end].isalnum(), example["question"]


def test_qa_has_some_long_contexts(qa: list[dict]) -> None:
    assert max(len(example["context"].split()) for example in qa) >= 120


def test_qa_has_no_duplicate_questions_per_context(qa: list[dict]) -> None:
    pairs = [(example["question"], example["context"]) for example in qa]
    assert len(pairs) == len(set(pairs))


def test_classification_size_and_labels(reviews: list[dict]) -> None:
    assert 120 <= len(reviews) <= 200
    for example in reviews:
        assert set(example) == {"text", "label"}
        assert example["label"] in {"positive", "negative"}
        assert example["text"] == example["text"].strip() != ""


def test_classification_is_balanced(reviews: list[dict]) -> None:
    counts = Counter(example["label"] for example in reviews)
    assert abs(counts["positive"] - counts["negative"]) <= 0.05 * len(reviews)


def test_classification_has_no_duplicate_texts(reviews: list[dict]) -> None:
    texts = [example["text"] for example in reviews]
    assert len(texts) == len(set(texts))
