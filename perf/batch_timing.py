"""Timing a candidate over batches of rows: the one loop every in-process candidate of the comparison is measured
with, ours (perf/baselines.py) and the peers' (perf/peer_worker.py, which runs in another venv and imports this file
by path: so it needs the standard library alone)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any


def batches_of(rows: Sequence[Any], batch: int) -> list[list[Any]]:
    """Consecutive full batches of `rows` (a tail shorter than `batch` is left out), or all rows as one batch."""
    return [list(rows[i : i + batch]) for i in range(0, len(rows) - batch + 1, batch)] or [list(rows)]


def time_batches(run: Callable[[list], Sequence], name: str, rows: Sequence[Any], batch: int, seconds: float) -> dict:
    """Sequences/s of `run` over `rows` in batches of `batch` (cycled) for `seconds`, at least one batch. `run` must
    return one result per row; anything else is an error naming `name`."""
    batches = batches_of(rows, batch)
    times: list[float] = []
    done = 0
    started = time.perf_counter()
    while done == 0 or time.perf_counter() - started < seconds:
        chunk = batches[len(times) % len(batches)]
        t0 = time.perf_counter()
        results = run(chunk)
        times.append(time.perf_counter() - t0)
        if len(results) != len(chunk):
            raise RuntimeError(f"{name}: {len(results)} results for {len(chunk)} rows")
        done += len(chunk)
    elapsed = time.perf_counter() - started
    return {
        "batch": batch,
        "sequences": done,
        "duration_s": round(elapsed, 3),
        "seq_per_s": round(done / elapsed, 3),
        "batch_ms_median": round(statistics.median(times) * 1e3, 3),
        "failed": 0,
    }
