"""Run a batch as consecutive slices of at most `max_tokens` tokens, so an engine's working memory stays bounded.

An inference's working memory grows with its rows x tokens, and onnxruntime keeps the largest it ever needed: under
sustained load the dynamic batcher hands the runner batches of 16-30 rows once its queue delay expires, and each
runner stayed that large for good. Smaller runs are not slower on CPU either; measured on an AMD EPYC Zen 4, 2 streams
x 1 thread, 100..128-token texts, rows per run fixed (rows/s, resident MB after the load):

| rows per run | QA int8-dynamic | fill-mask int8-dynamic |
|---:|---:|---:|
| 4 | 167-181, 121 MB | 166, 161 MB |
| 8 | 166-174, 144 MB | 153-164, 199 MB |
| 16 | 166, 184 MB | 151, 280 MB |
| 32 | 152, 271 MB | 134, 445 MB |

(4 rows of 128 tokens keep one layer's activations in the core's L2; one row alone pays the per-run cost: 148.)
Shipped beside the runner (onnx_runner.py) and used by the build's engine trial, so the trial measures what serves.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def row_tokens(feed: dict[str, np.ndarray]) -> int:
    """Tokens one row of `feed` holds: its length, times the choices for multiple choice."""
    first = next(iter(feed.values()))
    return int(np.prod(first.shape[1:], dtype=np.int64)) if first.ndim > 1 else 1


def row_slices(rows: int, tokens_per_row: int, max_tokens: int) -> list[slice]:
    """Consecutive slices covering `rows` rows, each of at most `max_tokens` tokens (at least one row: a row longer
    than the bound runs alone)."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    step = max(1, max_tokens // max(1, tokens_per_row))
    return [slice(start, min(rows, start + step)) for start in range(0, rows, step)] or [slice(0, 0)]


def run_bounded(
    run: Callable[[dict[str, np.ndarray]], list[np.ndarray]],
    feed: dict[str, np.ndarray],
    max_tokens: int,
    tokens_per_row: int | None = None,
) -> list[np.ndarray]:
    """`run(feed)`, as slices of at most `max_tokens` tokens whose outputs are joined along the batch axis (every
    output's first axis is the batch). A row's tokens are `tokens_per_row` where given (the runner: the batch's real
    length once its padding is trimmed), else its padded size. A batch within the bound runs as it is."""
    rows = next(iter(feed.values())).shape[0]
    slices = row_slices(rows, tokens_per_row or row_tokens(feed), max_tokens)
    if len(slices) == 1:
        return run(feed)
    parts = [run({name: array[part] for name, array in feed.items()}) for part in slices]
    return [np.concatenate(outputs) for outputs in zip(*parts, strict=True)]
