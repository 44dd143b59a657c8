"""What the balancer costs: one task's closed-loop text load (perf/load.py) against the same replica served
directly, and through haproxy with 1 and with 2 replicas behind it (deploy/cluster.py).

One cluster of 2 replicas serves all three modes, so every mode meets the same processes:
- `direct`: replica r0's own gRPC address;
- `haproxy x1`: the balancer's address with r1 in maintenance (haproxy's admin socket), so r0 takes every request;
- `haproxy x2`: the balancer's address with both replicas in rotation.
Modes are interleaved within each round and each concurrency level (the order rotating per round), so a drift of
the machine's load spreads over all of them; per mode and concurrency the best round counts (as `perf compare`).
Prometheus is not started: the figures are the balancer's cost alone.

On a machine with fewer cores than replicas x instances, a second replica cannot add throughput (both share the
same cores); what it buys is failover (tests/test_cluster.py). The figures to read are the throughput ratio against
direct at each mode's best concurrency and the latency haproxy adds per request.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from deploy.cluster import Cluster, ClusterConfig

from .inputs import Row
from .load import LoadSettings, run_load
from .serving import build_record, models_for

MODES = ("direct", "haproxy x1", "haproxy x2")


@dataclass
class ClusterBenchSettings:
    repository: Path
    task: str = "fill_mask"
    concurrency: list[int] = field(default_factory=lambda: [1, 4, 8, 16])
    seconds: float = 6.0
    rounds: int = 2
    warmup_s: float = 1.0
    profile: str = "corpus"

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.seconds <= 0 or not self.concurrency:
            raise ValueError("cluster bench: rounds >= 1, seconds > 0 and at least one concurrency level")


def _use_mode(cluster: Cluster, mode: str) -> str:
    """Put the balancer in `mode`; returns the gRPC address to load."""
    if mode == "direct":
        return cluster.replicas[0].grpc_url
    one = mode == "haproxy x1"
    if (cluster.backend_status().get("r1") == "MAINT") != one:
        cluster.set_maintenance(1, on=one)
        if not one:
            cluster.wait_until_routed([1], up=True, timeout_s=30.0)
    return cluster.grpc_url


def run_cluster_bench(
    settings: ClusterBenchSettings, rows: list[Row], workdir: Path, log=print, quiet=lambda: None
) -> dict:
    """Every (round, concurrency, mode) point, and per mode and concurrency the best round. `quiet()` is called
    before each concurrency level of each round (e.g. to wait for a quieter machine)."""
    repository = Path(settings.repository)
    models = models_for([settings.task], build_record(repository), repository)
    config = ClusterConfig(repository, replicas=2, models=models, prometheus=False, workdir=workdir)
    points: list[dict] = []
    with Cluster(config) as cluster:
        for round_ in range(settings.rounds):
            for c in settings.concurrency:
                quiet()
                for mode in MODES[round_ % 3 :] + MODES[: round_ % 3]:
                    url = _use_mode(cluster, mode)
                    load = LoadSettings(
                        tasks=(settings.task,),
                        url=url,
                        concurrency=c,
                        seconds=settings.seconds,
                        warmup_s=settings.warmup_s,
                        profile=settings.profile,
                    )
                    point = {"mode": mode, "round": round_, **run_load(load, {settings.task: rows})}
                    point.pop("server", None)  # per-model breakdown: not what this bench compares
                    points.append(point)
                    log(
                        f"round {round_ + 1} c={c:<3d} {mode:11s} {point['seq_per_s']:8.1f} seq/s "
                        f"p50 {point['p50_ms'] or 0:7.2f} p99 {point['p99_ms'] or 0:7.2f} ms failed {point['failed']} "
                        f"(other processes: {100 * (point['foreign_cpu'] or 0):.0f}% CPU)"
                    )
    best: dict[tuple[str, int], dict] = {}
    for p in points:
        key = (p["mode"], p["concurrency"])
        if key not in best or (p["seq_per_s"] or 0) > (best[key]["seq_per_s"] or 0):
            best[key] = p
    return {"settings": {**settings.__dict__, "repository": str(repository)}, "points": points, "best": best}


def summary(best: dict[tuple[str, int], dict]) -> list[dict]:
    """Per mode: the best concurrency, its seq/s, the ratio against direct's best, and the latency added per
    request against direct at the same concurrency (p50 and p99; at 1 in flight, the balancer's own cost)."""
    levels = sorted({c for _, c in best})
    direct_best = max((best[("direct", c)] for c in levels), key=lambda p: p["seq_per_s"] or 0)
    rows = []
    for mode in MODES:
        top = max((best[(mode, c)] for c in levels), key=lambda p: p["seq_per_s"] or 0)
        one = levels[0]
        rows.append(
            {
                "mode": mode,
                "best_concurrency": top["concurrency"],
                "seq_per_s": top["seq_per_s"],
                "ratio_vs_direct": round(top["seq_per_s"] / direct_best["seq_per_s"], 3),
                "lowest_concurrency": one,
                "added_p50_ms": round(best[(mode, one)]["p50_ms"] - best[("direct", one)]["p50_ms"], 3),
                "added_p99_ms": round(best[(mode, one)]["p99_ms"] - best[("direct", one)]["p99_ms"], 3),
                "added_p50_ms_at_best": round(top["p50_ms"] - best[("direct", top["concurrency"])]["p50_ms"], 3),
            }
        )
    return rows


def markdown(results: dict, machine: dict) -> str:
    best, s = results["best"], results["settings"]
    lines = [
        f"# python -m perf cluster: {s['task']}, {s['profile']} text, {s['seconds']:g} s per point, "
        f"best of {s['rounds']} rounds",
        "",
        f"CPU: {machine['cpu']} ({machine['cores']} cores; {', '.join(machine['cpu_flags']) or 'no AVX flags'}); "
        f"load average at the end {machine.get('load_average_after')}",
        "",
        "| mode | concurrency | seq/s | p50 ms | p99 ms | failed | other processes' CPU |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for (mode, c), p in sorted(best.items(), key=lambda kv: (kv[0][1], MODES.index(kv[0][0]))):
        lines.append(
            f"| {mode} | {c} | {p['seq_per_s']:.1f} | {p['p50_ms']:.2f} | {p['p99_ms']:.2f} | {p['failed']} | "
            f"{100 * (p['foreign_cpu'] or 0):.0f}% |"
        )
    one = min(c for _, c in best)
    lines += [
        "",
        "| mode | best concurrency | seq/s | x direct (best vs best) "
        f"| added p50 ms (c={one}) | added p99 ms (c={one}) | added p50 ms (at its best c) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in summary(best):
        lines.append(
            f"| {r['mode']} | {r['best_concurrency']} | {r['seq_per_s']:.1f} | {r['ratio_vs_direct']:.3f} | "
            f"{r['added_p50_ms']:+.2f} | {r['added_p99_ms']:+.2f} | {r['added_p50_ms_at_best']:+.2f} |"
        )
    return "\n".join(lines) + "\n"


def results_json(results: dict) -> dict:
    """JSON-ready: the best points keyed "mode@concurrency"."""
    return {
        **results,
        "best": {f"{m}@{c}": p for (m, c), p in results["best"].items()},
        "summary": summary(results["best"]),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
