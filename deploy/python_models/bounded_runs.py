"""Run a batch as engine runs of at most `max_tokens` tokens, rows of similar length together, so an engine's working
memory stays bounded and little of its work goes to padding.

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

A run costs its rows x its longest row's length, padding included, so the rows are sorted by their real length and cut
into the runs of least total cost (`plan_runs`): a 70-token text no longer runs padded to a 128-token neighbour's
length. Same Zen 4, QA int8-dynamic, 2 streams x 1 thread, batches of 65..127-token texts in the 128 bucket (rows/s,
3 interleaved rounds): 4-row batches 155-157 in arrival order, 157-167 planned; 8 rows 146-159 against 169-184;
16 rows 155-161 against 166-185.

Shipped beside the runner (onnx_runner.py) and used by the build's engine trial, so the trial measures what serves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

# What one more engine run costs beyond its tokens, in tokens: one row alone ran at 148 rows/s and 4 rows at 167 on
# the Zen 4 (above), ~17 tokens' worth per run; plans made with 16 and 48 measured the same.
RUN_OVERHEAD_TOKENS = 32


def choices_per_row(feed: dict[str, np.ndarray]) -> int:
    """Sequences one row of `feed` holds: 1, or the choices of a multiple-choice row [rows, choices, length]."""
    first = next(iter(feed.values()))
    return int(np.prod(first.shape[1:-1], dtype=np.int64)) if first.ndim > 2 else 1


def row_lengths(attention_mask: np.ndarray, step: int = 1) -> np.ndarray:
    """Per row, the columns a run of it needs: up to its last attended token plus one (MobileBERT's trigram embedding
    reads each token's right neighbour; a multiple-choice row: its longest choice), rounded up to a multiple of
    `step`, at most the padded length; 1 for a row with nothing attended."""
    length = attention_mask.shape[-1]
    attended = attention_mask.reshape(attention_mask.shape[0], -1, length).any(axis=1)
    last = length - 1 - np.argmax(attended[:, ::-1], axis=1)
    used = np.where(attended.any(axis=1), last + 2, 1)
    return np.minimum(-(-used // step) * step, length)


def plan_runs(
    lengths: Sequence[int] | np.ndarray,
    max_tokens: int,
    choices: int = 1,
    overhead_tokens: int = RUN_OVERHEAD_TOKENS,
) -> list[np.ndarray]:
    """The rows (indices into `lengths`) of each engine run: rows sorted by length, cut where the total of each run's
    rows x choices x longest length plus `overhead_tokens` per run is least, every run within `max_tokens` except a
    row that alone exceeds it. Rows of equal length keep their order, so equal lengths give consecutive slices."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(lengths, kind="stable")
    ordered = lengths[order] * choices
    rows = len(ordered)
    best = np.full(rows + 1, np.inf)
    best[0] = 0.0
    start = np.zeros(rows + 1, dtype=np.int64)
    for end in range(1, rows + 1):  # best[end]: least cost of the first `end` sorted rows; the last run ends there
        for first in range(end - 1, -1, -1):
            size = (end - first) * int(ordered[end - 1])
            if size > max_tokens and end - first > 1:
                break  # longer runs only grow
            cost = best[first] + overhead_tokens + size
            if cost < best[end]:
                best[end], start[end] = cost, first
    runs, end = [], rows
    while end > 0:
        runs.append(order[start[end] : end])
        end = int(start[end])
    return runs[::-1] or [order]


def run_planned(
    run: Callable[[dict[str, np.ndarray]], list[np.ndarray]], feed: dict[str, np.ndarray], runs: list[np.ndarray]
) -> list[np.ndarray]:
    """`run(feed)` as the given runs of rows, outputs joined back in the feed's row order (every output's first axis
    is the batch). An output whose other axes differ between runs (the fill-mask graph's slot axis holds as many
    slots as the run's rows have [MASK]s) is zero-padded to the largest, which marks the added slots invalid. One
    run of every row runs the feed as it came."""
    if len(runs) == 1:
        return run(feed)
    parts = [run({name: array[rows] for name, array in feed.items()}) for rows in runs]
    order = np.concatenate(runs)
    joined = []
    for outputs in zip(*parts, strict=True):
        shape = np.max([output.shape[1:] for output in outputs], axis=0)
        outputs = [
            np.pad(output, [(0, 0)] + [(0, int(s) - n) for s, n in zip(shape, output.shape[1:], strict=True)])
            if tuple(shape) != output.shape[1:]
            else output
            for output in outputs
        ]
        together = np.concatenate(outputs)
        restored = np.empty_like(together)
        restored[order] = together
        joined.append(restored)
    return joined


def run_bounded(
    run: Callable[[dict[str, np.ndarray]], list[np.ndarray]],
    feed: dict[str, np.ndarray],
    max_tokens: int,
    lengths: Sequence[int] | np.ndarray | None = None,
) -> list[np.ndarray]:
    """`run(feed)` in runs of at most `max_tokens` tokens planned on each row's `lengths` (the runner: its real
    length, `row_lengths`; default: the padded length, so the runs are consecutive slices)."""
    first = next(iter(feed.values()))
    if lengths is None:
        lengths = np.full(first.shape[0], first.shape[-1] if first.ndim > 1 else 1)
    return run_planned(run, feed, plan_runs(lengths, max_tokens, choices_per_row(feed)))
