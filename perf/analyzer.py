"""perf_analyzer against a task ensemble: one (concurrency, batch) point per run, realistic text, server breakdown.

Each point is its own perf_analyzer process (gRPC, synchronous requests, `--input-data` from perf.inputs) with
Triton's statistics read just before and after it, so every point gets the per-model breakdown (queue, compute
input, compute infer, compute output, rows per execution) of the tokenizer, the ONNX graph, the post-processing
and the ensemble. Throughput and client-side p50/p90/p99 come from perf_analyzer's CSV (`-f --verbose-csv`).

perf_analyzer stabilises (three consecutive windows within `stability_percent` of each other); on a busy 2-core
machine that can fail, and then the point is measured once more with the looser `fallback_stability_percent` and
marked `stable: false`. Windows are `measurement_interval_ms` long, or hold `request_count` requests each
(count_windows: the smoke test uses it, a short and fixed amount of work).
"""

from __future__ import annotations

import csv
import io
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .environment import (
    ForeignCpu,
    PerfAnalyzerUnavailable,
    check_perf_analyzer,
    perf_analyzer_binary,
    perf_analyzer_env,
)
from .inputs import Row, write_analyzer_data
from .serving import ensemble_models
from .stats import server_breakdown, snapshot

__all__ = ["AnalyzerSettings", "PerfAnalyzerError", "PerfAnalyzerUnavailable", "run_analyzer", "run_point"]

# perf_analyzer's CSV columns (microseconds) -> our names (milliseconds)
CSV_COLUMNS = {
    "p50 latency": "p50_ms",
    "p90 latency": "p90_ms",
    "p95 latency": "p95_ms",
    "p99 latency": "p99_ms",
    "Avg latency": "mean_ms",
    "Client Send": "client_send_ms",
    "Network+Server Send/Recv": "network_server_ms",
    "Server Queue": "server_queue_ms",
    "Server Compute Input": "server_compute_input_ms",
    "Server Compute Infer": "server_compute_infer_ms",
    "Server Compute Output": "server_compute_output_ms",
    "Client Recv": "client_recv_ms",
}


class PerfAnalyzerError(RuntimeError):
    """perf_analyzer ran but failed (requests failed, bad arguments...); the message has its own output."""


@dataclass
class AnalyzerSettings:
    task: str
    url: str  # gRPC host:port
    metrics_url: str | None = None  # Triton's metrics endpoint: the ONNX runners' own timing in the breakdown
    concurrency: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    batch_sizes: list[int] = field(default_factory=lambda: [1])
    measurement_interval_ms: int = 4000
    stability_percent: int = 15
    max_trials: int = 6
    request_count: int | None = None  # windows of this many requests instead of measurement_interval_ms
    fallback_stability_percent: int = 60  # re-measure with this when the stabilisation fails (then with any 3 windows)
    profile: str = "corpus"  # input length profile (perf.inputs), recorded with the results
    timeout_s: float = 600.0


def _command(settings: AnalyzerSettings, data: Path, csv_path: Path, concurrency: int, batch: int, stability: int):
    command = [
        str(perf_analyzer_binary()),
        "-m",
        settings.task,
        "-u",
        settings.url,
        "-i",
        "grpc",
        "--input-data",
        str(data),
        "--concurrency-range",
        f"{concurrency}:{concurrency}",
        "-b",
        str(batch),
        "-f",
        str(csv_path),
        "--verbose-csv",
        "-s",
        str(stability),
        "-r",
        str(settings.max_trials),
    ]
    if settings.request_count:
        return [
            *command,
            "--measurement-mode",
            "count_windows",
            "--measurement-request-count",
            str(settings.request_count),
        ]
    return [*command, "--measurement-interval", str(settings.measurement_interval_ms)]


def parse_csv(text: str) -> dict:
    """The first data row of perf_analyzer's CSV as {seq_per_s, p50_ms, ...} (latencies converted to ms)."""
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows:
        raise PerfAnalyzerError("perf_analyzer wrote no measurement row")
    row = rows[0]
    out = {"seq_per_s": round(float(row["Inferences/Second"]), 3)}
    for column, name in CSV_COLUMNS.items():
        if column in row and row[column] != "":
            out[name] = round(float(row[column]) / 1000.0, 3)
    return out


def _errors(output: str) -> list[str]:
    keep = ("error", "Failed", "failed")
    return [line.strip() for line in output.splitlines() if any(k in line for k in keep)][:10]


def run_point(settings: AnalyzerSettings, data: Path, workdir: Path, concurrency: int, batch: int) -> dict:
    """One perf_analyzer measurement at (concurrency, batch), with the server breakdown of that run."""
    workdir.mkdir(parents=True, exist_ok=True)
    models = ensemble_models(settings.task)
    stem = f"{settings.task}_c{concurrency}_b{batch}"
    # the last attempt accepts any three windows: a figure, marked unstable, rather than none
    attempts = [settings.stability_percent, settings.fallback_stability_percent, 1000]
    outputs = []
    for attempt, stability in enumerate(attempts):
        csv_path = workdir / f"{stem}.csv"
        csv_path.unlink(missing_ok=True)
        before = snapshot(settings.url, models, metrics_url=settings.metrics_url)
        started = time.monotonic()
        with ForeignCpu() as foreign:
            done = subprocess.run(
                _command(settings, data, csv_path, concurrency, batch, stability),
                env=perf_analyzer_env(),
                capture_output=True,
                text=True,
                timeout=settings.timeout_s,
            )
        elapsed = time.monotonic() - started
        after = snapshot(settings.url, models, metrics_url=settings.metrics_url)
        output = done.stdout + done.stderr
        outputs.append(output)
        (workdir / f"{stem}.log").write_text("\n".join(outputs), encoding="utf-8")
        breakdown = server_breakdown(before, after)
        failed = sum(b["failed"] for b in breakdown.values() if b is not None)
        if done.returncode == 0 and csv_path.is_file():
            point = {
                "tool": "perf_analyzer",
                "task": settings.task,
                "profile": settings.profile,
                "concurrency": concurrency,
                "batch": batch,
                **parse_csv(csv_path.read_text(encoding="utf-8")),
                "failed": failed,
                "mode": "count_windows" if settings.request_count else "time_windows",
                "stability_percent": stability,
                # False: no stable measurement within `stability_percent`; this one is within the looser fallback
                "stable": attempt == 0,
                "wall_s": round(elapsed, 2),
                "foreign_cpu": foreign.share,
                "steal_cpu": foreign.steal,
                "server": breakdown,
                "raw_csv": csv_path.name,
            }
            point["requests_per_s"] = round(point["seq_per_s"] / batch, 3)
            return point
        unstable = "Failed to obtain stable measurement" in output
        if not unstable:
            break
    error = "\n".join(_errors(outputs[-1])) or outputs[-1][-2000:]
    raise PerfAnalyzerError(
        f"perf_analyzer failed on {settings.task} at concurrency {concurrency}, batch {batch} "
        f"(exit {done.returncode}; log {workdir / (stem + '.log')}):\n{error}"
    )


def run_analyzer(
    settings: AnalyzerSettings, rows: list[Row], workdir: Path, log=print, errors: list[dict] | None = None
) -> list[dict]:
    """Every (batch, concurrency) point of the sweep, in order; writes the input data file into `workdir`.

    With `errors` given, a point perf_analyzer cannot measure is appended there (and logged) instead of raising, so
    one bad point does not lose a long sweep.
    """
    check_perf_analyzer()
    workdir = Path(workdir)
    data = write_analyzer_data(rows, workdir / f"{settings.task}_{settings.profile}_input.json")
    points = []
    for batch in settings.batch_sizes:
        for concurrency in settings.concurrency:
            try:
                point = run_point(settings, data, workdir, concurrency, batch)
            except PerfAnalyzerError as exc:
                if errors is None:
                    raise
                log(f"perf_analyzer {settings.task:20s} c={concurrency:<3d} b={batch:<3d} NOT MEASURED: {exc}")
                errors.append(
                    {"task": settings.task, "profile": settings.profile, "concurrency": concurrency, "batch": batch}
                    | {"error": str(exc)}
                )
                continue
            note = (
                ""
                if point["stable"]
                else f" (unstable at -s {settings.stability_percent}: re-measured at -s {point['stability_percent']})"
            )
            log(
                f"perf_analyzer {settings.task:20s} c={concurrency:<3d} b={batch:<3d} {point['seq_per_s']:8.1f} seq/s "
                f"p50 {point['p50_ms']:7.1f} p90 {point['p90_ms']:7.1f} p99 {point['p99_ms']:7.1f} ms "
                f"failed {point['failed']} (other processes: {100 * (point['foreign_cpu'] or 0):.0f}% CPU){note}"
            )
            points.append(point)
    return points
