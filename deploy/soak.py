"""Sustained load on every task of a running server, with failures counted and memory (RSS) measured.

`python -m deploy soak --seconds 300` (what `make soak` runs) starts the server on the built repository, loads it
from several client threads (every task in turn, realistic corpus text), and reports per task the calls made and
failed, and the resident memory of tritonserver and of every Python backend stub before and after. The test suite
runs a short version.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from client import MobileBertClient
from model_def.corpus import corpus_lines, qa_examples

from .build import read_build_record
from .server import TritonServer, start_on_free_ports
from .watchdog import stub_processes


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def memory_snapshot(server: TritonServer) -> dict[str, float]:
    """RSS in MB of the server and each stub (keyed by model name)."""
    snapshot = {"tritonserver": rss_mb(server.process.pid)}
    for pid, model in stub_processes(server.config.repository, server.process.pid).items():
        snapshot[model] = snapshot.get(model, 0.0) + rss_mb(pid)
    return snapshot


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


def _calls(bert: MobileBertClient) -> dict[str, object]:
    lines = [line for line in corpus_lines() if len(line.split()) > 6]
    qa = qa_examples()
    cycle = itertools.count()

    def line() -> str:
        return lines[next(cycle) % len(lines)]

    def example() -> dict:
        return qa[next(cycle) % len(qa)]

    return {
        "fill_mask": lambda: bert.fill_mask(line() + " [MASK]."),
        "text_classification": lambda: bert.classify([line(), line()], top_k=None),
        "next_sentence": lambda: bert.next_sentence(line(), line()),
        "multiple_choice": lambda: bert.multiple_choice(line(), [line(), line(), line()]),
        "token_classification": lambda: bert.tag(line()),
        "question_answering": lambda: bert.answer(example()["question"], example()["context"]),
        "feature_extraction": lambda: bert.embed(line()),
    }


def run_soak(server: TritonServer, seconds: float, concurrency: int = 4) -> SoakReport:
    """Closed-loop load over every deployed task for `seconds` from `concurrency` threads."""
    report = SoakReport(seconds=seconds, concurrency=concurrency)
    bert = MobileBertClient(server.grpc_url, timeout_s=60.0, retries=2)
    tasks = _calls(bert)
    offered = set(bert.tasks())
    order = [t for t in tasks if t in offered]
    for task in order:  # warm every path once so first-call allocations do not count as growth
        tasks[task]()
    report.rss_before_mb = memory_snapshot(server)
    calls, failures, lock = Counter(), Counter(), threading.Lock()
    deadline = time.monotonic() + seconds

    def worker(offset: int) -> None:
        for i in itertools.count(offset):
            if time.monotonic() >= deadline:
                return
            task = order[i % len(order)]
            try:
                tasks[task]()
                with lock:
                    calls[task] += 1
            except Exception as exc:  # counted and reported, never hidden
                with lock:
                    failures[task] += 1
                    calls[task] += 1
                    report.errors.append(f"{task}: {exc}"[:300])

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report.rss_after_mb = memory_snapshot(server)
    report.calls, report.failures = dict(calls), dict(failures)
    bert.close()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy soak", description=__doc__)
    parser.add_argument("--repository", type=Path, default=Path("triton_repo"))
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--json", type=Path, default=Path("artifacts/soak.json"))
    args = parser.parse_args(argv)
    record = read_build_record(args.repository)
    if record is None:
        print(f"soak failed: {args.repository} is not built; run python -m deploy build --demo", file=sys.stderr)
        return 1
    log_file = Path("artifacts/logs/soak-tritonserver.log")
    with start_on_free_ports(args.repository, models=record["models"], log_file=log_file) as server:
        report = run_soak(server, args.seconds, args.concurrency)
    print(report.table())
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(asdict(report), indent=2) + "\n")
    print(f"\n{sum(report.calls.values())} calls in {args.seconds:.0f} s, {report.failed} failed; report {args.json}")
    return 0 if report.failed == 0 else 1
