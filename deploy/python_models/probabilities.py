"""Scores from logits, as the Hugging Face pipelines compute them (plain numpy; shipped beside each post model).

One owner for softmax, masked softmax, sigmoid and the id -> label list, so the post-processing models and the
in-process baselines (perf/baselines.py) cannot drift apart.
"""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in float64 (the pipelines' scores are compared to 1e-4)."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def masked_softmax(logits: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Softmax of a 1-D row over the `allowed` positions only; the others get probability 0."""
    return softmax(np.where(allowed, np.asarray(logits, dtype=np.float64), -np.inf))


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))


def best_label(logits: np.ndarray, names: list[str]) -> list[dict]:
    """The best label of one row's logits, as text_classification returns it with top_k=1 (softmax; a single logit:
    sigmoid): [{label, score}]."""
    scores = sigmoid(logits) if len(names) == 1 else softmax(logits)
    best = int(np.argmax(scores))
    return [{"label": names[best], "score": float(scores[best])}]


def labels(id2label: dict | None) -> list[str]:
    """The checkpoint's id2label (keys as strings, as in config.json) as a list; unnamed ids are LABEL_<i>."""
    id2label = {str(k): v for k, v in (id2label or {}).items()}
    return [id2label.get(str(i), f"LABEL_{i}") for i in range(len(id2label))]
