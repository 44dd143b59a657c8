"""`python -m deploy demo` (what `make demo` runs): the main job end to end on a fresh machine.

demo checkpoints -> build (export every head, assemble triton_repo/) -> serve (pip-installed tritonserver) -> one
call per task through the client library -> a short throughput figure per task -> clean shutdown.
The demo checkpoints have random weights (no model hub here), so answers are arbitrary but real: every number comes
from the served graphs. Point `--checkpoint` at a real Hugging Face MobileBERT checkpoint for meaningful output.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from client import MobileBertClient
from perf.inputs import make_rows
from perf.load import LoadSettings, run_load

from .build import BuildError, BuildSettings, build_repository, read_build_record
from .build_plan import build_summary, deployment_plan
from .server import ServerError, start_on_free_ports

logger = logging.getLogger("deploy.demo")


def _show(title: str, value: object) -> None:
    def plain(v: object) -> object:
        if isinstance(v, np.ndarray):
            head = v.reshape(-1)[:4].tolist()
            shown = ", ".join(f"{x:.3f}" if isinstance(x, float) else str(x) for x in head)
            return f"{v.dtype}{list(v.shape)} [{shown}, ...]"
        if isinstance(v, float):
            return round(v, 4)
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, list):
            return [plain(x) for x in v]
        return v

    print(f"\n== {title}\n{json.dumps(plain(value), ensure_ascii=False, indent=1)[:900]}")


def call_every_task(bert: MobileBertClient, tasks: list[str]) -> None:
    """One call per deployed task, printed."""
    if "fill_mask" in tasks:
        _show("fill_mask", bert.fill_mask("The capital of France is [MASK].", top_k=3))
    if "text_classification" in tasks:
        _show("classify", bert.classify("What a wonderful, sunny day!", top_k=2))
    if "next_sentence" in tasks:
        _show("next_sentence", bert.next_sentence("I went to the bakery.", "They had fresh bread."))
    if "multiple_choice" in tasks:
        _show("multiple_choice", bert.multiple_choice("Where is the Eiffel Tower?", ["Paris", "Rome", "Oslo"]))
    if "token_classification" in tasks:
        _show("tag", bert.tag("Ada Lovelace worked with Charles Babbage in London."))
    if "question_answering" in tasks:
        _show("answer", bert.answer("Where did Ada work?", "Ada Lovelace worked with Charles Babbage in London."))
    if "feature_extraction" in tasks:
        _show("embed", bert.embed(["A sentence to embed.", "Another one."]))
    if "pretraining" in tasks:
        out = bert.infer_tensors("pretraining", {"TEXT": np.array([[b"Raw pre-training heads."]], dtype=object)})
        _show("pretraining (raw tensors)", {k: v for k, v in out.items()})


# The demo's short throughput table: one row per task, a few seconds each (`python -m perf` measures them all).
THROUGHPUT_TASKS = ("fill_mask", "question_answering", "text_classification")


def throughput(url: str, tasks: list[str], seconds: float, concurrency: int) -> list[dict]:
    """Closed-loop load of one corpus text per call on each offered demo task, through perf's load generator."""
    return [
        run_load(
            LoadSettings(tasks=(task,), url=url, concurrency=concurrency, seconds=seconds, warmup_s=0.5),
            {task: make_rows(task, "corpus")},
        )
        for task in THROUGHPUT_TASKS
        if task in tasks
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy demo", description=__doc__)
    parser.add_argument("--checkpoint", type=Path, help="a checkpoint (set) to serve instead of the demo checkpoints")
    parser.add_argument("--small", action="store_true", help="2-layer demo checkpoints (fast)")
    parser.add_argument("--repository", type=Path, default=Path("triton_repo"))
    parser.add_argument("--seconds", type=float, default=8.0, help="load time per task for the throughput figure")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--skip-build", action="store_true", help="serve the repository as last built")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("deploy").setLevel(logging.INFO)
    logging.getLogger("export").setLevel(logging.INFO)

    if not args.skip_build:
        from export.errors import ExportError

        try:
            plan = deployment_plan(args.checkpoint, small=args.small)
            built = build_repository(args.repository, plan, BuildSettings())
        except (BuildError, ExportError, ValueError) as exc:
            print(f"build failed: {exc}", file=sys.stderr)
            return 1
        print(build_summary(built, args.repository))
    record = read_build_record(args.repository)
    if record is None:
        print(f"demo failed: {args.repository} has no build record; run without --skip-build", file=sys.stderr)
        return 1
    try:
        started = time.monotonic()
        log_file = Path("artifacts/logs/demo-tritonserver.log")
        with start_on_free_ports(args.repository, models=record["models"], log_file=log_file) as server:
            ready_s = time.monotonic() - started
            print(f"\nTriton READY in {ready_s:.1f}s on {server.grpc_url} ({len(record['models'])} models)")
            with MobileBertClient(server.grpc_url, timeout_s=60.0) as bert:
                tasks = bert.tasks()
                print(f"tasks offered: {', '.join(tasks)}")
                call_every_task(bert, tasks)
            rows = throughput(server.grpc_url, tasks, args.seconds, args.concurrency)
            load = f"concurrency {args.concurrency}, {args.seconds:.0f} s each"
            print(f"\nthroughput (text in, results out over gRPC; {load})")
            print(f"{'task':22s} {'req/s':>7s} {'p50 ms':>8s} {'p99 ms':>8s} {'failed':>7s}")
            for r in rows:
                print(
                    f"{r['task']:22s} {r['requests_per_s'] or 0:7.1f} {r['p50_ms'] or 0:8.1f} {r['p99_ms'] or 0:8.1f} "
                    f"{r['failed']:7d}"
                )
            median_ok = statistics.median([r["requests_per_s"] or 0 for r in rows]) if rows else 0
            logger.info("median throughput %.1f req/s; stopping Triton", median_ok)
        print("Triton stopped cleanly.")
    except (ServerError, BuildError) as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    return 0 if all(r["failed"] == 0 for r in rows) else 1
