"""Latency percentiles, and Triton's per-model statistics diffed around a measurement.

Triton keeps cumulative counters per model (tritonclient's get_inference_statistics): requests, executions, and
the nanoseconds requests spent queued, gathering inputs, in the model's execute, and returning outputs. Reading
them before and after a run and subtracting gives the server-side breakdown of exactly that run, for every model
of the ensemble (tokenizer, <task>_onnx, <task>_post) and the ensemble itself - what perf_analyzer prints for
ensembles, but per model and reliably.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import re
import time
import urllib.request

import numpy as np

logger = logging.getLogger(__name__)

PERCENTILES = (50, 90, 99)
STAGES = ("queue", "compute_input", "compute_infer", "compute_output")
# The ONNX runner's own counters on Triton's metrics endpoint (deploy/python_models/onnx_runner.py: _RunnerTiming)
RUNNER_COUNTERS = {
    "mobilebert_runner_requests_total": "runner_requests",
    "mobilebert_runner_request_compute_us_total": "runner_compute_us",
}
_SAMPLE = re.compile(r"^(\w+)\{([^}]*)\}\s+(\S+)")


def percentiles_ms(latencies_s: list[float]) -> dict[str, float | None]:
    """{"p50_ms", "p90_ms", "p99_ms", "mean_ms"} of latencies in seconds; None when there are none."""
    if not latencies_s:
        return {**{f"p{p}_ms": None for p in PERCENTILES}, "mean_ms": None}
    values = np.asarray(latencies_s, dtype=np.float64) * 1e3
    out = {f"p{p}_ms": round(float(np.percentile(values, p)), 3) for p in PERCENTILES}
    out["mean_ms"] = round(float(values.mean()), 3)
    return out


def _ns(stat: dict, key: str) -> tuple[int, int]:
    entry = stat.get(key, {})
    return int(entry.get("count", 0)), int(entry.get("ns", 0))


def snapshot(
    url: str, models: list[str], settle_s: float = 2.0, metrics_url: str | None = None
) -> dict[str, dict[str, int]]:
    """Cumulative counters of each model (version-summed): success/fail counts, stage ns, executions, inferences;
    with `metrics_url` (Triton's metrics endpoint, host:port) also the ONNX runners' own timing counters.

    Triton records a composing model's statistics just after the ensemble's response has gone out, so counters read
    right after the last answer can still move; they are read until two reads 50 ms apart agree (at most
    `settle_s`), which with no requests in flight means the bookkeeping is done.
    """

    def read() -> dict[str, dict[str, int]]:
        counters = _read_counters(url, models)
        if metrics_url:
            runners = runner_counters(metrics_url)
            if not runners:
                logger.warning("no ONNX runner counters at %s: 'onnx infer ms' falls back to Triton's", metrics_url)
            for model, figures in runners.items():
                if model in counters:
                    counters[model].update(figures)
        return counters

    last = read()
    deadline = time.monotonic() + settle_s
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = read()
        if now == last:
            break
        last = now
    return last


def runner_counters(metrics_url: str, timeout_s: float = 10.0) -> dict[str, dict[str, int]]:
    """The ONNX runners' timing counters from Triton's Prometheus text endpoint, per model (versions summed);
    {} where the endpoint cannot be read (the breakdown then falls back to Triton's statistics)."""
    try:
        with urllib.request.urlopen(f"http://{metrics_url.removeprefix('http://')}/metrics", timeout=timeout_s) as f:
            text = f.read().decode("utf-8", errors="replace")
    except (OSError, http.client.HTTPException, ValueError):  # down, a broken answer, a malformed URL
        return {}
    out: dict[str, dict[str, int]] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match or match.group(1) not in RUNNER_COUNTERS:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
        figures = out.setdefault(labels.get("model", ""), dict.fromkeys(RUNNER_COUNTERS.values(), 0))
        with contextlib.suppress(ValueError):  # NaN or Inf: not a count
            figures[RUNNER_COUNTERS[match.group(1)]] += int(float(match.group(3)))
    return out


def _read_counters(url: str, models: list[str]) -> dict[str, dict[str, int]]:
    import tritonclient.grpc as grpcclient

    out: dict[str, dict[str, int]] = {}
    client = grpcclient.InferenceServerClient(url)
    try:
        for model in models:
            answer = client.get_inference_statistics(model_name=model, as_json=True, client_timeout=30)
            totals = {"success": 0, "fail": 0, "executions": 0, "inferences": 0, "success_ns": 0}
            totals.update({f"{s}_ns": 0 for s in STAGES})
            for version in answer.get("model_stats", []):
                stats = version.get("inference_stats", {})
                count, ns = _ns(stats, "success")
                totals["success"] += count
                totals["success_ns"] += ns
                totals["fail"] += _ns(stats, "fail")[0]
                for stage in STAGES:
                    totals[f"{stage}_ns"] += _ns(stats, stage)[1]
                totals["executions"] += int(version.get("execution_count", 0))
                totals["inferences"] += int(version.get("inference_count", 0))
            out[model] = totals
    finally:
        with contextlib.suppress(Exception):
            client.close()
    return out


def server_breakdown(before: dict, after: dict) -> dict[str, dict]:
    """Per model, for the requests between two snapshots: counts and mean ms per request in each stage.

    avg_batch = inferences / executions: how many rows the model ran per execute call (the dynamic batcher's work).
    runner_compute_ms: the ONNX runner's own per-request compute time, where its counters were read (else None).
    """
    out: dict[str, dict] = {}
    for model, end in after.items():
        start = before.get(model, {})
        d = {k: v - start.get(k, 0) for k, v in end.items() if k in start or not k.startswith("runner_")}
        requests = d["success"]
        row = {
            "requests": requests,
            "failed": d["fail"],
            "executions": d["executions"],
            "inferences": d["inferences"],
            "avg_batch": round(d["inferences"] / d["executions"], 2) if d["executions"] else None,
            "total_ms": round(d["success_ns"] / requests / 1e6, 3) if requests else None,
        }
        for stage in STAGES:
            row[f"{stage}_ms"] = round(d[f"{stage}_ns"] / requests / 1e6, 3) if requests else None
        # the runner's own figure: its batch's compute per request, whether or not its streams are pipelined; only
        # where both snapshots read it and its counters did not restart (a reloaded stub starts from zero)
        timed = d.get("runner_requests", 0)
        measured = timed > 0 and d.get("runner_compute_us", -1) >= 0
        row["runner_requests"] = timed if measured else None
        row["runner_compute_ms"] = round(d["runner_compute_us"] / timed / 1e3, 3) if measured else None
        out[model] = row
    return out
