"""Text-level load through AsyncMobileBertClient: the path applications use, so client overhead is measured too.

Closed loop: `concurrency` workers, each sending its next row (or `rows_per_request` rows as one call) as soon as
its previous call returned, for `seconds` or until `requests` calls completed. Every call goes through the client's
task method (fill_mask, answer, classify...): argument checks, tensors, gRPC, JSON decoding of the results. The
client makes no retries here, so a failure is counted (warm-up calls included), never hidden. Reports the same
figures as perf_analyzer: sequences/s, p50/p90/p99 latency per call, failed calls, and Triton's per-model breakdown
of the measured part (statistics read after the warm-up).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from .environment import ForeignCpu
from .inputs import Row, check_task
from .serving import ensemble_models
from .stats import percentiles_ms, server_breakdown, snapshot


@dataclass
class LoadSettings:
    task: str
    url: str
    concurrency: int = 4
    seconds: float | None = 10.0  # None: run until `requests` calls completed
    requests: int | None = None
    rows_per_request: int = 1
    warmup_s: float = 1.0
    timeout_s: float = 60.0
    profile: str = "corpus"

    def __post_init__(self) -> None:
        check_task(self.task)
        if self.seconds is None and self.requests is None:
            raise ValueError("load: give seconds or requests")
        if self.concurrency < 1 or self.rows_per_request < 1:
            raise ValueError("load: concurrency and rows_per_request must be >= 1")


def task_call(client: Any, task: str) -> Callable[[list[Row]], Awaitable[Any]]:
    """The client method call for `task` on a list of rows (one row: the single-item form, as applications call)."""

    def column(rows: list[Row], name: str) -> str | list[str]:
        values = [row[name] for row in rows]
        return values[0] if len(values) == 1 else values

    calls: dict[str, Callable[[list[Row]], Awaitable[Any]]] = {
        "fill_mask": lambda rows: client.fill_mask(column(rows, "TEXT"), top_k=5),
        "question_answering": lambda rows: client.answer(column(rows, "QUESTION"), column(rows, "CONTEXT")),
        "text_classification": lambda rows: client.classify(column(rows, "TEXT")),
        "token_classification": lambda rows: client.tag(column(rows, "TEXT")),
        "feature_extraction": lambda rows: client.embed(column(rows, "TEXT")),
        "next_sentence": lambda rows: client.next_sentence(column(rows, "TEXT"), column(rows, "TEXT_PAIR")),
    }
    if task not in calls:
        raise ValueError(f"load: no client call for task {task!r}; supported: {', '.join(calls)}")
    return calls[task]


class _ClosedLoop:
    """`concurrency` workers sending the next chunk of rows as soon as their previous call returned."""

    def __init__(self, settings: LoadSettings, rows: list[Row], client: Any) -> None:
        self.settings = settings
        self.call = task_call(client, settings.task)
        k = settings.rows_per_request
        self.chunks = itertools.cycle([rows[i : i + k] for i in range(0, len(rows) - k + 1, k)] or [rows])
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.failed = 0  # every failed call, warm-up included: never hidden
        self.sequences = 0
        self.issued = 0

    async def _worker(self, deadline: float, limit: int | None, record: bool) -> None:
        while time.monotonic() < deadline and (limit is None or self.issued < limit):
            self.issued += 1
            chunk = next(self.chunks)
            start = time.perf_counter()
            try:
                await self.call(chunk)
            except Exception as exc:  # counted and reported, never hidden
                self.failed += 1
                if len(self.errors) < 5:
                    self.errors.append(f"{type(exc).__name__}: {exc}"[:300])
                continue
            if record:
                self.latencies.append(time.perf_counter() - start)
                self.sequences += len(chunk)

    async def run(self, seconds: float | None, limit: int | None, record: bool) -> float:
        self.issued = 0
        deadline = time.monotonic() + (seconds if seconds is not None else 1e9)
        started = time.perf_counter()
        await asyncio.gather(*(self._worker(deadline, limit, record) for _ in range(self.settings.concurrency)))
        return time.perf_counter() - started


async def run_load_async(settings: LoadSettings, rows: list[Row]) -> dict:
    from client import AsyncMobileBertClient

    if not rows:
        raise ValueError("load: no rows to send")
    models = ensemble_models(settings.task)
    async with AsyncMobileBertClient(settings.url, timeout_s=settings.timeout_s, retries=0) as client:
        loop = _ClosedLoop(settings, rows, client)
        if settings.warmup_s > 0:
            await loop.run(settings.warmup_s, None, record=False)
        before = await asyncio.to_thread(snapshot, settings.url, models)
        with ForeignCpu() as foreign:  # a server started by this process is ours, not foreign
            elapsed = await loop.run(settings.seconds, settings.requests, record=True)
        after = await asyncio.to_thread(snapshot, settings.url, models)
    requests = len(loop.latencies)
    return {
        "tool": "async_client",
        "task": settings.task,
        "profile": settings.profile,
        "concurrency": settings.concurrency,
        "batch": settings.rows_per_request,
        "duration_s": round(elapsed, 3),
        "requests": requests,
        "sequences": loop.sequences,
        "failed": loop.failed,
        "errors": loop.errors,
        "requests_per_s": round(requests / elapsed, 3) if elapsed else None,
        "seq_per_s": round(loop.sequences / elapsed, 3) if elapsed else None,
        **percentiles_ms(loop.latencies),
        "foreign_cpu": foreign.share,
        "steal_cpu": foreign.steal,
        "server": server_breakdown(before, after),
    }


def run_load(settings: LoadSettings, rows: list[Row]) -> dict:
    """The closed-loop load of `settings` over `rows` (cycled); see the module docstring for the figures."""
    return asyncio.run(run_load_async(settings, rows))


def run_load_sweep(
    task: str, url: str, rows: list[Row], concurrency: list[int], log=print, **options: Any
) -> list[dict]:
    points = []
    for c in concurrency:
        point = run_load(LoadSettings(task=task, url=url, concurrency=c, **options), rows)
        log(
            f"async client   {task:20s} c={c:<3d} b={point['batch']:<3d} {point['seq_per_s']:8.1f} seq/s "
            f"p50 {point['p50_ms'] or 0:7.1f} p90 {point['p90_ms'] or 0:7.1f} p99 {point['p99_ms'] or 0:7.1f} ms "
            f"failed {point['failed']} (other processes: {100 * (point['foreign_cpu'] or 0):.0f}% CPU)"
        )
        points.append(point)
    return points


def settings_dict(settings: LoadSettings) -> dict:
    return {k: v for k, v in asdict(settings).items() if k != "url"}
