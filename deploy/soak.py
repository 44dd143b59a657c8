"""Sustained load on every task of a running server, with failures counted and memory (RSS) measured.

`python -m deploy soak --seconds 300` (what `make soak` runs) starts the server on the built repository, loads it
through perf's load generator (perf/load.py: async client workers, every task in turn, each with its own corpus rows,
no retries unless asked), and reports per task the calls made and failed, and the resident memory of tritonserver
and of every Python backend stub before and after. The test suite runs a short version.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from client import MobileBertClient
from perf.inputs import make_rows
from perf.load import LOAD_TASKS, LoadSettings, run_load
from perf.memory import by_model, server_memory

from .build import read_build_record
from .server import TritonServer, start_on_free_ports


@dataclass
class SoakReport:
    seconds: float
    concurrency: int
    calls: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    rss_before_mb: dict[str, float] = field(default_factory=dict)
    rss_after_mb: dict[str, float] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    def rss_growth_mb(self) -> dict[str, float]:
        return {k: self.rss_after_mb.get(k, 0.0) - v for k, v in self.rss_before_mb.items()}

    def table(self) -> str:
        lines = [f"{'task':22s} {'calls':>7s} {'failed':>7s}"]
        lines += [f"{t:22s} {self.calls[t]:7d} {self.failures.get(t, 0):7d}" for t in sorted(self.calls)]
        lines += ["", f"{'process':26s} {'RSS before':>10s} {'after':>8s} {'growth':>8s} (MB)"]
        for name, before in sorted(self.rss_before_mb.items()):
            after = self.rss_after_mb.get(name, 0.0)
            lines.append(f"{name:26s} {before:10.1f} {after:8.1f} {after - before:8.1f}")
        return "\n".join(lines)


def run_soak(server: TritonServer, seconds: float, concurrency: int = 4, retries: int = 0) -> SoakReport:
    """Closed-loop load over every deployed task for `seconds` from `concurrency` workers (perf/load.py).

    Every task the server offers and the client has a method for takes its turn; each task sends its own corpus
    rows (perf/inputs.py). The warm-up (one second, every task at least once) runs before the memory is read, so
    first-call allocations do not count as growth. With `retries` 0 every failed call is counted.
    """
    with MobileBertClient(server.grpc_url, timeout_s=60.0) as bert:
        offered = set(bert.tasks())
    tasks = tuple(t for t in LOAD_TASKS if t in offered)
    settings = LoadSettings(
        tasks=tasks, url=server.grpc_url, concurrency=concurrency, seconds=seconds, warmup_s=1.0, retries=retries
    )
    rows = {t: make_rows(t, "corpus") for t in tasks}
    result = run_load(settings, rows, probe=lambda: by_model(server_memory(server)))
    return SoakReport(
        seconds=seconds,
        concurrency=concurrency,
        calls={t: figures["calls"] for t, figures in result["tasks"].items()},
        failures={t: figures["failed"] for t, figures in result["tasks"].items()},  # warm-up included
        errors=result["errors"],
        rss_before_mb=result["probe"]["before"],
        rss_after_mb=result["probe"]["after"],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy soak", description=__doc__)
    parser.add_argument("--repository", type=Path, default=Path("triton_repo"))
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--retries", type=int, default=0, help="client retries; 0 (default) counts every failure")
    parser.add_argument("--json", type=Path, default=Path("artifacts/soak.json"))
    args = parser.parse_args(argv)
    record = read_build_record(args.repository)
    if record is None:
        print(f"soak failed: {args.repository} is not built; run python -m deploy build --demo", file=sys.stderr)
        return 1
    log_file = Path("artifacts/logs/soak-tritonserver.log")
    with start_on_free_ports(args.repository, models=record["models"], log_file=log_file) as server:
        report = run_soak(server, args.seconds, args.concurrency, args.retries)
    print(report.table())
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(asdict(report), indent=2) + "\n")
    print(f"\n{sum(report.calls.values())} calls in {args.seconds:.0f} s, {report.failed} failed; report {args.json}")
    return 0 if report.failed == 0 else 1
