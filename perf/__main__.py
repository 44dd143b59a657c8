"""`python -m perf`: throughput perf tests of the served tasks; every command writes a results folder.

  python -m perf analyzer --repository triton_repo --task fill_mask --concurrency 1,2,4,8 --batch 1,8
  python -m perf load     --repository triton_repo --task question_answering --concurrency 1,4,16 --seconds 10
  python -m perf compare  --repository triton_repo          # (a) HF eager, (b) ORT INT8 in-process, (c) Triton,
                                                            # peers (d) Optimum, (e) OpenVINO (--no-peers: without)
  python -m perf sweep    --repository triton_repo          # everything (make bench)
  python -m perf tune     --repository triton_repo          # runner config variants side by side
  python -m perf cluster  --repository triton_repo          # direct vs haproxy with 1 and 2 replicas
  python -m perf memory   --repository triton_repo          # RSS/PSS per server process, whole repository loaded

`analyzer` and `load` start a server for the repository on free ports, or use `--url host:port` of a running one.
Results: artifacts/perf/<time>-<command>/ (or --out): results.json, points.csv, comparison.csv, results.md, PNGs.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from deploy.server import ServerError

from . import environment
from .analyzer import AnalyzerSettings, PerfAnalyzerError, run_analyzer
from .compare import TASKS, CompareSettings, run_comparison
from .environment import PerfAnalyzerUnavailable
from .inputs import ANALYZER_INPUTS, PROFILES, make_rows
from .load import LOAD_TASKS, run_load_sweep
from .memory import run_memory
from .report import write_report
from .serving import RepositoryNotBuilt, build_record, onnx_runner_settings, server_for
from .sweep import DEFAULT_ANALYZER_PLAN, QUICK_ANALYZER_PLAN, SweepSettings, run_sweep
from .tune import DEFAULT_VARIANTS, run_tuning


def _ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m perf", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, tasks: tuple[str, ...], default_tasks: list[str]) -> None:
        p.add_argument("--repository", type=Path, default=Path("triton_repo"), help="a built model repository")
        p.add_argument("--task", action="append", choices=tasks, help=f"repeatable; default {', '.join(default_tasks)}")
        p.add_argument("--out", type=Path, help="results folder (default artifacts/perf/<time>-<command>)")
        p.add_argument("--no-plots", action="store_true")

    analyzer = sub.add_parser("analyzer", help="perf_analyzer sweep over concurrency and batch size")
    common(analyzer, tuple(ANALYZER_INPUTS), list(TASKS))
    analyzer.add_argument("--url", help="gRPC host:port of a running server (default: start one)")
    analyzer.add_argument("--metrics-url", help="with --url: its metrics host:port (the ONNX runners' own timing)")
    analyzer.add_argument("--concurrency", type=_ints, default=[1, 2, 4, 8, 16])
    analyzer.add_argument("--batch", type=_ints, default=[1], help="rows per request, e.g. 1,8")
    analyzer.add_argument("--profile", choices=PROFILES, default="corpus", help="input length profile")
    analyzer.add_argument("--interval-ms", type=int, default=4000, help="perf_analyzer measurement window")
    analyzer.add_argument("--request-count", type=int, help="fixed-count measurement instead of stabilised windows")

    load = sub.add_parser("load", help="closed-loop text load through the async client")
    common(load, LOAD_TASKS, list(TASKS))
    load.add_argument("--url", help="gRPC host:port of a running server (default: start one)")
    load.add_argument("--metrics-url", help="with --url: its metrics host:port (the ONNX runners' own timing)")
    load.add_argument("--concurrency", type=_ints, default=[1, 4, 16])
    load.add_argument("--seconds", type=float, default=10.0)
    load.add_argument("--requests", type=int, help="stop after this many calls (with --seconds 0: only that)")
    load.add_argument("--rows-per-request", type=int, default=1)
    load.add_argument("--profile", choices=PROFILES, default="corpus")

    tune = sub.add_parser("tune", help="the same text load against variants of the runner config, rounds interleaved")
    common(tune, TASKS, list(TASKS))
    tune.add_argument("--variant", action="append", choices=[v.name for v in DEFAULT_VARIANTS], help="default: all")
    tune.add_argument("--concurrency", type=_ints, default=[8, 16, 32])
    tune.add_argument("--seconds", type=float, default=8.0, help="per concurrency level")
    tune.add_argument("--rounds", type=int, default=2, help="rounds per variant; the best counts")
    tune.add_argument("--profile", choices=PROFILES, default="seq128")
    tune.add_argument("--max-foreign", type=float, default=0.15, help="before each variant: wait for a quiet machine")
    tune.add_argument("--wait", type=float, default=600.0, help="longest wait for a quiet machine, seconds")

    memory = sub.add_parser("memory", help="RSS and PSS of every server process, the whole repository under load")
    common(memory, LOAD_TASKS, list(LOAD_TASKS))
    memory.add_argument("--seconds", type=float, default=6.0, help="load on every task before reading the memory")
    memory.add_argument("--concurrency", type=int, default=16, help="per task; tasks are loaded one at a time")
    memory.add_argument("--profile", choices=PROFILES, default="seq128", help="texts (seq128: the largest batches)")

    cluster = sub.add_parser("cluster", help="balancer overhead: direct vs haproxy with 1 and 2 replicas (one task)")
    cluster.add_argument("--repository", type=Path, default=Path("triton_repo"), help="a built model repository")
    cluster.add_argument(
        "--task", choices=("fill_mask", "question_answering", "text_classification"), default="fill_mask"
    )
    cluster.add_argument("--out", type=Path, help="results folder (default artifacts/perf/<time>-cluster)")
    cluster.add_argument("--concurrency", type=_ints, default=[1, 4, 8, 16])
    cluster.add_argument("--seconds", type=float, default=6.0, help="per point")
    cluster.add_argument("--rounds", type=int, default=2, help="rounds of every (concurrency, mode); the best counts")
    cluster.add_argument("--profile", choices=PROFILES, default="corpus")
    cluster.add_argument("--max-foreign", type=float, default=0.3, help="before each level: wait for a quieter machine")
    cluster.add_argument("--wait", type=float, default=60.0, help="longest wait for a quiet machine, seconds")

    for name, text in (
        ("compare", "(a) transformers eager, (b) onnxruntime INT8 in-process, (c) Triton over gRPC, at ~128 tokens"),
        ("sweep", "everything: the comparison, perf_analyzer and client sweeps, one report (make bench)"),
    ):
        p = sub.add_parser(name, help=text)
        common(p, TASKS, list(TASKS))
        p.add_argument("--threads", type=int, default=2, help="thread budget of (a) and (b)")
        p.add_argument("--seconds", type=float, default=12.0, help="per batch size / concurrency level")
        p.add_argument("--rounds", type=int, default=3, help="rounds per setting; the best counts")
        p.add_argument("--items", type=int, default=64, help="distinct texts per task")
        p.add_argument("--hf-batch", type=_ints, default=[1, 8], help="batch sizes tried for (a)")
        p.add_argument("--ort-batch", type=_ints, default=[1, 8, 16], help="batch sizes tried for (b)")
        p.add_argument(
            "--ort-sessions",
            type=_ints,
            default=[1],
            help="(b) session layouts: sessions sharing the thread budget (the served layout is added)",
        )
        p.add_argument("--concurrency", type=_ints, default=[4, 8, 16, 32], help="(c) concurrency levels, 1 text/call")
        p.add_argument("--bulk-rows", type=int, default=8, help="(c bulk): texts per call; 0: skip")
        p.add_argument("--bulk-concurrency", type=_ints, default=[2, 4], help="(c bulk) concurrency levels")
        p.add_argument(
            "--peer",
            action="append",
            choices=["optimum", "openvino"],
            help="peers to compare, each in its own cached venv (artifacts/peer-envs); default: both",
        )
        p.add_argument("--no-peers", action="store_true", help="compare (a)-(c) only")
        p.add_argument("--peer-batch", type=_ints, default=[8, 16], help="batch sizes tried for the peers")
        p.add_argument("--peer-envs", type=Path, default=Path("artifacts/peer-envs"), help="the peers' venvs")
        p.add_argument("--max-load", type=float, default=1.5, help="before starting: wait for this 1-min load average")
        p.add_argument(
            "--max-foreign", type=float, default=0.15, help="before each phase: wait until other processes use <= this"
        )
        p.add_argument("--wait", type=float, default=600.0, help="longest wait for a quiet machine, seconds")
        if name == "sweep":
            p.add_argument("--quick", action="store_true", help="fewer, shorter perf_analyzer/client points")
            p.add_argument("--interval-ms", type=int, default=4000)
    return parser


def _out(args: argparse.Namespace) -> Path:
    return args.out or Path("artifacts/perf") / f"{time.strftime('%Y%m%d-%H%M%S')}-{args.command}"


@contextlib.contextmanager
def _server_urls(args: argparse.Namespace, tasks: list[str], out: Path) -> Iterator[tuple[str, str | None]]:
    """(gRPC URL, metrics URL) of `--url`'s server (metrics: `--metrics-url`, if given) or of one started here."""
    if args.url:
        yield args.url, args.metrics_url
        return
    with server_for(args.repository, tasks, log_file=out / "tritonserver.log") as server:
        yield server.grpc_url, server.metrics_url


def _meta(args: argparse.Namespace, argv: list[str], tasks: list[str]) -> dict:
    meta = {
        "title": f"python -m perf {args.command}",
        "command": "python -m perf " + shlex.join(argv),
        "machine": environment.machine(),
        "versions": environment.versions(),
        "tasks": tasks,
    }
    try:
        meta["perf_analyzer"] = environment.check_perf_analyzer()
    except PerfAnalyzerUnavailable as exc:
        meta["perf_analyzer"] = f"unavailable: {exc}"
    if not getattr(args, "url", None):
        record = build_record(args.repository)
        meta["repository"] = {
            "path": str(args.repository),
            "built_at": record.get("built_at"),
            "runner": {t: onnx_runner_settings(args.repository, t) for t in tasks},
        }
    return meta


def _tokenizer(args: argparse.Namespace, task: str):
    from model_def import MobileBertTokenizer

    record = build_record(args.repository)
    return MobileBertTokenizer.from_pretrained(record["checkpoints"][task])


def _compare_settings(args: argparse.Namespace, tasks: list[str]) -> CompareSettings:
    return CompareSettings(
        repository=args.repository,
        tasks=tasks,
        threads=args.threads,
        items=args.items,
        seconds=args.seconds,
        rounds=args.rounds,
        hf_batches=args.hf_batch,
        ort_batches=args.ort_batch,
        ort_sessions=args.ort_sessions,
        concurrency=args.concurrency,
        bulk_rows=args.bulk_rows or None,
        bulk_concurrency=args.bulk_concurrency,
        peers=[] if args.no_peers else (args.peer or ["optimum", "openvino"]),
        peer_batches=args.peer_batch,
        peer_envs=args.peer_envs,
    )


def _cluster(args: argparse.Namespace, argv: list[str]) -> int:
    """`python -m perf cluster`: prints the balancer-overhead table, writes results.json and results.md."""
    import json

    from .cluster_bench import ClusterBenchSettings, markdown, results_json, run_cluster_bench

    out = _out(args)
    try:
        settings = ClusterBenchSettings(
            args.repository, args.task, args.concurrency, args.seconds, args.rounds, profile=args.profile
        )
        tokenizer = _tokenizer(args, args.task) if args.profile == "seq128" else None
        rows = make_rows(args.task, args.profile, tokenizer)
        machine = environment.machine()
        out.mkdir(parents=True, exist_ok=True)
        results = run_cluster_bench(
            settings, rows, out / "cluster", quiet=lambda: environment.wait_until_quiet(args.max_foreign, args.wait)
        )
    except (RepositoryNotBuilt, ServerError, ValueError) as exc:
        print(f"perf cluster failed: {exc}", file=sys.stderr)
        return 1
    machine["load_average_after"] = environment.load_average()
    text = markdown(results, machine)
    record = {"meta": {"command": "python -m perf " + shlex.join(argv), "machine": machine}, **results_json(results)}
    (out / "results.json").write_text(json.dumps(record, indent=1, default=str), encoding="utf-8")
    (out / "results.md").write_text(text, encoding="utf-8")
    print("\n" + text + f"\nresults in {out}/: results.json, results.md")
    failed = sum(p["failed"] for p in results["points"])
    if failed:
        print(f"FAILED REQUESTS: {failed}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.command == "cluster":
        return _cluster(args, argv)
    tasks = args.task or list(TASKS)
    out = _out(args)
    try:
        if args.command == "memory" and not args.task:  # every task of the repository that a client call serves
            tasks = [t for t in LOAD_TASKS if t in build_record(args.repository)["tasks"]]
        meta = _meta(args, argv, tasks)
        out.mkdir(parents=True, exist_ok=True)
        results: dict = {"meta": meta}
        if args.command in ("analyzer", "load"):
            with _server_urls(args, tasks, out) as (url, metrics_url):
                for task in tasks:
                    tokenizer = _tokenizer(args, task) if args.profile == "seq128" else None
                    rows = make_rows(task, args.profile, tokenizer)
                    if args.command == "analyzer":
                        settings = AnalyzerSettings(
                            task=task,
                            url=url,
                            metrics_url=metrics_url,
                            concurrency=args.concurrency,
                            batch_sizes=args.batch,
                            measurement_interval_ms=args.interval_ms,
                            request_count=args.request_count,
                            profile=args.profile,
                        )
                        results.setdefault("analyzer", []).extend(
                            run_analyzer(
                                settings, rows, out / "perf_analyzer", errors=results.setdefault("analyzer_errors", [])
                            )
                        )
                    else:
                        results.setdefault("load", []).extend(
                            run_load_sweep(
                                task,
                                url,
                                rows,
                                args.concurrency,
                                metrics_url=metrics_url,
                                seconds=args.seconds or None,
                                requests=args.requests,
                                rows_per_request=args.rows_per_request,
                                profile=args.profile,
                            )
                        )
        elif args.command == "tune":
            rows = {
                t: make_rows(t, args.profile, _tokenizer(args, t) if args.profile == "seq128" else None) for t in tasks
            }
            variants = tuple(v for v in DEFAULT_VARIANTS if not args.variant or v.name in args.variant)
            results["tuning"] = run_tuning(
                args.repository,
                tasks,
                rows,
                out,
                variants=variants,
                concurrency=args.concurrency,
                seconds=args.seconds,
                rounds=args.rounds,
                profile=args.profile,
                max_foreign=args.max_foreign,
                wait_s=args.wait,
            )
        elif args.command == "memory":
            meta["repository"]["runner"] = {
                t: onnx_runner_settings(args.repository, t) for t in build_record(args.repository)["tasks"]
            }
            # seq128 has no multiple-choice rows (a prompt and its choices): that task takes the corpus's
            rows = {
                t: make_rows(t, "seq128", _tokenizer(args, t))
                if args.profile == "seq128" and t in ANALYZER_INPUTS
                else make_rows(t, "corpus")
                for t in tasks
            }
            measured = run_memory(
                args.repository, rows, args.seconds, args.concurrency, out / "tritonserver.log", args.profile
            )
            results["memory"] = measured.pop("memory")
            results["memory_load"] = measured
        elif args.command == "compare":
            meta["machine_at_start"] = environment.wait_until_quiet(args.max_foreign, args.wait, args.max_load)
            results["comparison"] = run_comparison(
                _compare_settings(args, tasks),
                server_log=out / "tritonserver.log",
                quiet=lambda: environment.wait_until_quiet(args.max_foreign, args.wait),
            )
        else:
            settings = SweepSettings(
                compare=_compare_settings(args, tasks),
                analyzer_plan=QUICK_ANALYZER_PLAN if args.quick else DEFAULT_ANALYZER_PLAN,
                interval_ms=args.interval_ms,
                load_seconds=4.0 if args.quick else 8.0,
                max_load=args.max_load,
                max_foreign=args.max_foreign,
                wait_s=args.wait,
            )
            results.update(
                run_sweep(settings, out, save=lambda partial: write_report(out, {**results, **partial}, plots=False))
            )
        meta["load_average_after"] = environment.load_average()
        files = write_report(out, results, plots=not args.no_plots)
    except (RepositoryNotBuilt, PerfAnalyzerUnavailable, PerfAnalyzerError, ServerError, ValueError) as exc:
        print(f"perf {args.command} failed: {exc}", file=sys.stderr)
        return 1
    print()
    print(files["markdown"].read_text(encoding="utf-8"))
    print(f"results in {out}/: " + ", ".join(sorted(p.name for p in files.values())))
    failed = sum(p.get("failed", 0) for key in ("analyzer", "load") for p in results.get(key, []))
    for row in (results.get("tuning") or {}).get("variants", []):
        failed += sum(t["failed"] for t in row["tasks"].values())
    failed += sum(t["failed"] for t in (results.get("memory_load") or {}).get("tasks", {}).values())
    for t in (results.get("comparison") or {}).get("tasks", {}).values():
        failed += sum(t[k]["failed"] for k in ("c", "c_bulk") if k in t)
    if failed:
        print(f"FAILED REQUESTS: {failed}", file=sys.stderr)
        return 2
    if results.get("analyzer_errors"):
        print(f"{len(results['analyzer_errors'])} perf_analyzer point(s) could not be measured", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
