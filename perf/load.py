"""Text-level load through AsyncMobileBertClient: the path applications use, so client overhead is measured too.

Closed loop: `concurrency` workers, each sending its next call as soon as its previous call returned, for `seconds`
or until `requests` calls completed. Several tasks can share one run (a mix, as `deploy soak` loads every task): the
workers take the tasks in turn, so they run concurrently, and each task cycles through its own rows (one row, or
`rows_per_request` rows as one call). Every call goes through the client's task method (fill_mask, answer,
classify...): argument checks, tensors, gRPC, JSON decoding of the results. By default the client makes no retries,
so every failed call is counted (warm-up calls included), never hidden; with `retries` > 0 only calls that failed
every attempt count. Reports the same figures as perf_analyzer, in total and per task: sequences/s, p50/p90/p99
latency per call, calls and failed calls, and Triton's per-model breakdown of the measured part (statistics read
after the warm-up).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .environment import ForeignCpu
from .inputs import Row, check_task
from .serving import ensemble_models
from .stats import percentiles_ms, server_breakdown, snapshot

MAX_ERRORS = 5  # error messages kept per task: enough to see the cause, bounded under a storm of failures


def _column(rows: list[Row], name: str) -> Any:
    """One input of every row: the single-item form for one row (as applications call), else the list."""
    values = [row[name] for row in rows]
    return values[0] if len(values) == 1 else values


# The one table of how each task is called through the client (demo, soak and perf all load through it).
_CALLS: dict[str, Callable[[Any, list[Row]], Awaitable[Any]]] = {
    "fill_mask": lambda client, rows: client.fill_mask(_column(rows, "TEXT"), top_k=5),
    "question_answering": lambda client, rows: client.answer(_column(rows, "QUESTION"), _column(rows, "CONTEXT")),
    "text_classification": lambda client, rows: client.classify(_column(rows, "TEXT")),
    "token_classification": lambda client, rows: client.tag(_column(rows, "TEXT")),
    "feature_extraction": lambda client, rows: client.embed(_column(rows, "TEXT")),
    "next_sentence": lambda client, rows: client.next_sentence(_column(rows, "TEXT"), _column(rows, "TEXT_PAIR")),
    "multiple_choice": lambda client, rows: client.multiple_choice(_column(rows, "PROMPT"), _column(rows, "CHOICES")),
}
LOAD_TASKS = tuple(_CALLS)  # the tasks a client method serves (pretraining returns raw tensors: no method)


def task_call(client: Any, task: str) -> Callable[[list[Row]], Awaitable[Any]]:
    """The client method call for `task` on a list of rows (one row: the single-item form, as applications call)."""
    if task not in _CALLS:
        raise ValueError(f"load: no client call for task {task!r}; supported: {', '.join(_CALLS)}")
    call = _CALLS[task]
    return lambda rows: call(client, rows)


@dataclass
class LoadSettings:
    tasks: tuple[str, ...]  # one task, or a mix taken in turn by the workers
    url: str
    concurrency: int = 4
    metrics_url: str | None = None  # Triton's metrics endpoint: the ONNX runners' own timing in the breakdown
    seconds: float | None = 10.0  # None: run until `requests` calls completed
    requests: int | None = None
    rows_per_request: int = 1
    warmup_s: float = 1.0  # > 0: this long, and at least one call of every task; 0: no warm-up
    timeout_s: float = 60.0
    retries: int = 0  # client retries of transient errors; 0 so that no failure is hidden by a retry
    profile: str = "corpus"

    def __post_init__(self) -> None:
        if isinstance(self.tasks, str) or not self.tasks:
            raise ValueError("load: tasks must be a non-empty tuple of task names")
        for task in self.tasks:
            check_task(task)
            if task not in _CALLS:
                raise ValueError(f"load: no client call for task {task!r}; supported: {', '.join(_CALLS)}")
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"load: a task is named twice in {self.tasks}")
        if self.seconds is None and self.requests is None:
            raise ValueError("load: give seconds or requests")
        if self.concurrency < 1 or self.rows_per_request < 1:
            raise ValueError("load: concurrency and rows_per_request must be >= 1")
        if self.retries < 0:
            raise ValueError("load: retries must be >= 0")


@dataclass
class _Tally:
    """What one task's calls did; warm-up and measured part apart, failures of both counted."""

    warmup_calls: int = 0
    warmup_failed: int = 0
    calls: int = 0  # measured part, failed ones included
    failed: int = 0  # measured part
    sequences: int = 0  # rows of the measured part's successful calls
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def count(self, measured: bool, seconds: float, rows: int, error: Exception | None) -> None:
        if not measured:
            self.warmup_calls += 1
            self.warmup_failed += error is not None
        else:
            self.calls += 1
            if error is None:
                self.latencies.append(seconds)
                self.sequences += rows
            else:
                self.failed += 1
        if error is not None and len(self.errors) < MAX_ERRORS:
            self.errors.append(f"{type(error).__name__}: {error}"[:300])


def _chunks(rows: list[Row], k: int) -> Iterator[list[Row]]:
    return itertools.cycle([rows[i : i + k] for i in range(0, len(rows) - k + 1, k)] or [rows])


class _ClosedLoop:
    """`concurrency` workers, each sending its next call as soon as its previous one returned; tasks taken in turn."""

    def __init__(self, settings: LoadSettings, rows: Mapping[str, list[Row]], client: Any) -> None:
        self.settings = settings
        self.calls = {task: task_call(client, task) for task in settings.tasks}
        self.chunks = {task: _chunks(rows[task], settings.rows_per_request) for task in settings.tasks}
        self.turn = itertools.cycle(settings.tasks)  # shared by the workers: the tasks stay evenly mixed
        self.tallies = {task: _Tally() for task in settings.tasks}
        self.issued = 0

    async def _worker(self, deadline: float, limit: int | None, minimum: int, measured: bool) -> None:
        while (time.monotonic() < deadline or self.issued < minimum) and (limit is None or self.issued < limit):
            self.issued += 1
            task = next(self.turn)
            chunk = next(self.chunks[task])
            start = time.perf_counter()
            error: Exception | None = None
            try:
                await self.calls[task](chunk)
            except Exception as exc:  # counted and reported, never hidden
                error = exc
            self.tallies[task].count(measured, time.perf_counter() - start, len(chunk), error)

    async def run(self, seconds: float | None, limit: int | None, measured: bool, minimum: int = 0) -> float:
        """Calls for `seconds` (None: no time limit), at most `limit` calls, at least `minimum` calls."""
        self.issued = 0
        deadline = time.monotonic() + (seconds if seconds is not None else 1e9)
        started = time.perf_counter()
        workers = (self._worker(deadline, limit, minimum, measured) for _ in range(self.settings.concurrency))
        await asyncio.gather(*workers)
        return time.perf_counter() - started


def _figures(requests: int, sequences: int, latencies: list[float], elapsed: float) -> dict:
    return {
        "requests": requests,
        "sequences": sequences,
        "requests_per_s": round(requests / elapsed, 3) if elapsed else None,
        "seq_per_s": round(sequences / elapsed, 3) if elapsed else None,
        **percentiles_ms(latencies),
    }


def _task_result(tally: _Tally, elapsed: float) -> dict:
    return {
        "calls": tally.calls,
        "failed": tally.failed + tally.warmup_failed,  # warm-up included: never hidden
        "warmup_calls": tally.warmup_calls,
        "errors": tally.errors,
        **_figures(len(tally.latencies), tally.sequences, tally.latencies, elapsed),
    }


async def run_load_async(
    settings: LoadSettings, rows: Mapping[str, list[Row]], probe: Callable[[], Any] | None = None
) -> dict:
    from client import AsyncMobileBertClient

    empty = [task for task in settings.tasks if not rows.get(task)]
    if empty:
        raise ValueError(f"load: no rows to send for {', '.join(empty)}")
    models = list(dict.fromkeys(m for task in settings.tasks for m in ensemble_models(task)))
    probed: dict[str, Any] = {}
    client_options = {"timeout_s": settings.timeout_s, "retries": settings.retries}
    async with AsyncMobileBertClient(settings.url, **client_options) as client:
        loop = _ClosedLoop(settings, rows, client)
        if settings.warmup_s > 0:
            await loop.run(settings.warmup_s, None, measured=False, minimum=len(settings.tasks))
        before = await asyncio.to_thread(snapshot, settings.url, models, metrics_url=settings.metrics_url)
        if probe is not None:
            probed["before"] = await asyncio.to_thread(probe)
        with ForeignCpu() as foreign:  # a server started by this process is ours, not foreign
            elapsed = await loop.run(settings.seconds, settings.requests, measured=True)
        after = await asyncio.to_thread(snapshot, settings.url, models, metrics_url=settings.metrics_url)
        if probe is not None:
            probed["after"] = await asyncio.to_thread(probe)
    per_task = {task: _task_result(tally, elapsed) for task, tally in loop.tallies.items()}
    tallies = loop.tallies.values()
    latencies = [s for tally in tallies for s in tally.latencies]
    result = {
        "tool": "async_client",
        "task": "+".join(settings.tasks),
        "profile": settings.profile,
        "concurrency": settings.concurrency,
        "batch": settings.rows_per_request,
        "retries": settings.retries,
        "duration_s": round(elapsed, 3),
        "calls": sum(t["calls"] for t in per_task.values()),
        "failed": sum(t["failed"] for t in per_task.values()),
        "errors": [f"{task}: {e}" for task, t in per_task.items() for e in t["errors"]],
        **_figures(len(latencies), sum(t.sequences for t in tallies), latencies, elapsed),
        "foreign_cpu": foreign.share,
        "steal_cpu": foreign.steal,
        "server": server_breakdown(before, after),
        "tasks": per_task,
    }
    if probe is not None:
        result["probe"] = probed
    return result


def run_load(settings: LoadSettings, rows: Mapping[str, list[Row]], probe: Callable[[], Any] | None = None) -> dict:
    """The closed-loop load of `settings`, each task cycling through `rows[task]`; see the module docstring.

    `probe`, if given, runs right before and right after the measured part (after the warm-up); its answers are in
    the result's "probe" {"before", "after"} (soak: the server's memory).
    """
    return asyncio.run(run_load_async(settings, rows, probe))


def run_load_sweep(
    task: str, url: str, rows: list[Row], concurrency: list[int], log=print, **options: Any
) -> list[dict]:
    points = []
    for c in concurrency:
        point = run_load(LoadSettings(tasks=(task,), url=url, concurrency=c, **options), {task: rows})
        log(
            f"async client   {task:20s} c={c:<3d} b={point['batch']:<3d} {point['seq_per_s']:8.1f} seq/s "
            f"p50 {point['p50_ms'] or 0:7.1f} p90 {point['p90_ms'] or 0:7.1f} p99 {point['p99_ms'] or 0:7.1f} ms "
            f"failed {point['failed']} (other processes: {100 * (point['foreign_cpu'] or 0):.0f}% CPU)"
        )
        points.append(point)
    return points
