"""Question-answering span decoding, as the Hugging Face question-answering pipeline does (plain numpy).

Only context tokens can start or end an answer; start and end probabilities are separate softmaxes over the context
tokens and [CLS] (whose share is then dropped, which keeps scores comparable with the pipeline's); a span scores
p(start) * p(end), ends at or after its start and spans at most `max_answer_len` tokens. Character offsets come from
the tokenizer's offsets. Shipped beside the question_answering post model; perf/baselines.py imports it too.
"""

from __future__ import annotations

import numpy as np

try:  # in the project: deploy.python_models.span_decoding (perf/baselines.py)
    from .probabilities import masked_softmax
except ImportError:  # in the model repository, where the build ships both files as top-level modules
    from probabilities import masked_softmax


def best_spans(
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    context: np.ndarray,
    offsets: np.ndarray,
    text: str,
    top_k: int,
    max_answer_len: int,
) -> list[dict]:
    """The `top_k` best {answer, score, start, end} of one row, best first; [] when no token is context.

    context: bool per token, True for tokens of `text` (the pipeline's p_mask == 0); offsets: [tokens, 2] character
    offsets into `text`; the row's first token is [CLS].
    """
    if not context.any():
        return []
    normalised = context.copy()
    normalised[0] = True  # [CLS]: in the softmax, never in an answer
    p_start = masked_softmax(start_logits, normalised)
    p_end = masked_softmax(end_logits, normalised)
    p_start[0] = p_end[0] = 0.0
    scores = np.tril(np.triu(np.outer(p_start, p_end)), max_answer_len - 1)
    answers = []
    for index in np.argsort(-scores, axis=None, kind="stable")[:top_k]:
        s, e = np.unravel_index(index, scores.shape)
        if scores[s, e] <= 0:  # fewer possible spans than top_k
            break
        begin, finish = int(offsets[s][0]), int(offsets[e][1])
        answers.append({"answer": text[begin:finish], "score": float(scores[s, e]), "start": begin, "end": finish})
    return answers
