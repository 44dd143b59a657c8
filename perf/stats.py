"""Latency percentiles, and Triton's per-model statistics diffed around a measurement.

Triton keeps cumulative counters per model (tritonclient's get_inference_statistics): requests, executions, and
the nanoseconds requests spent queued, gathering inputs, in the model's execute, and returning outputs. Reading
them before and after a run and subtracting gives the server-side breakdown of exactly that run, for every model
of the ensemble (tokenizer, <task>_onnx, <task>_post) and the ensemble itself - what perf_analyzer prints for
ensembles, but per model and reliably.
"""

from __future__ import annotations

import contextlib
import time

import numpy as np

PERCENTILES = (50, 90, 99)
STAGES = ("queue", "compute_input", "compute_infer", "compute_output")


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


def snapshot(url: str, models: list[str], settle_s: float = 2.0) -> dict[str, dict[str, int]]:
    """Cumulative counters of each model (version-summed): success/fail counts, stage ns, executions, inferences.

    Triton records a composing model's statistics just after the ensemble's response has gone out, so counters read
    right after the last answer can still move; they are read until two reads 50 ms apart agree (at most
    `settle_s`), which with no requests in flight means the bookkeeping is done.
    """
    last = _read_counters(url, models)
    deadline = time.monotonic() + settle_s
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = _read_counters(url, models)
        if now == last:
            break
        last = now
    return last


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
    """
    out: dict[str, dict] = {}
    for model, end in after.items():
        start = before.get(model, {})
        d = {k: v - start.get(k, 0) for k, v in end.items()}
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
        out[model] = row
    return out
