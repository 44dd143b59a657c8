"""Serving-parameter tuning: the same text load against variants of one built repository, rounds interleaved.

Each variant is a copy of the repository (graphs hard-linked, nothing rebuilt) whose `<task>_onnx` configs change
the knobs the runner exposes: instances x streams x intra-op threads, the dynamic batcher's queue delay and
preferred batch sizes, and trimming of bucket padding. Configs are edited as `model_config_pb2` messages, never as
text. Variants are measured in turn within a round and rounds repeat, so a burst of machine load hits one round of
each variant, not all of one; the best round per variant counts (the median is kept too). `python -m perf tune`
prints and writes the table the README's "Tuning" section shows."""

from __future__ import annotations

import shutil
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

from deploy.build import place_file
from deploy.model_configs import BatchingSettings, CpuSettings, parse_config, write_config
from deploy.tasks import DEPLOYMENTS

from .environment import wait_until_quiet
from .load import run_load_sweep
from .serving import build_record, server_for


@dataclass(frozen=True)
class Variant:
    """Runner settings to try; what is not given is the shipped default (deploy.model_configs)."""

    name: str
    instances: int = CpuSettings.instances
    threads: int = CpuSettings.intra_op_threads
    streams: int = CpuSettings.streams  # parallel inferences inside one instance (one copy of the weights)
    max_queue_delay_us: int = BatchingSettings.max_queue_delay_us
    preferred: tuple[int, ...] = BatchingSettings.preferred_batch_sizes
    trim_padding: bool = CpuSettings.trim_padding
    max_run_tokens: int = CpuSettings.max_run_tokens
    pack_runs: bool = CpuSettings.pack_runs

    def describe(self) -> str:
        pref = "/".join(str(p) for p in self.preferred) or "none"
        trim = "" if self.trim_padding else ", no trim"
        runs = f", runs <= {self.max_run_tokens} tokens" + ("" if self.pack_runs else " in arrival order")
        layout = (
            f"{self.instances}x{self.threads}"
            if self.streams == 1
            else f"{self.instances}x{self.streams}x{self.threads}"
        )
        return f"{layout}, delay {self.max_queue_delay_us / 1000:g} ms, preferred {pref}{trim}{runs}"


# What was tried on the 2-core machine (README "Tuning"); the first is the shipped default, the others change one
# thing each (the layout variants: how the 2 cores are split).
DEFAULT_VARIANTS: tuple[Variant, ...] = (
    Variant("default"),
    Variant("2instances", instances=2, streams=1),
    Variant("1x2", instances=1, threads=2, streams=1),
    Variant("3streams", instances=1, streams=3),
    Variant("delay5", max_queue_delay_us=5000),
    Variant("delay0.5", max_queue_delay_us=500),
    Variant("pref8-16", preferred=(8, 16)),
    Variant("no-trim", trim_padding=False),
    Variant("runs1024", max_run_tokens=1024),
    Variant("runs-unbounded", max_run_tokens=64 * 512),
    Variant("runs-in-order", pack_runs=False),
)


def variant_repository(source: Path, dest: Path, variant: Variant, tasks: list[str]) -> Path:
    """A copy of `source` at `dest` with `variant` applied to the ONNX runners of `tasks` (graphs hard-linked)."""
    source, dest = Path(source), Path(dest)
    shutil.rmtree(dest, ignore_errors=True)

    def link_graphs(src: str, dst: str) -> None:
        if src.endswith((".onnx", ".onnx.data")):
            place_file(Path(src), Path(dst))  # 30-100 MB each: hard-linked where the filesystem allows
        else:
            shutil.copy2(src, dst)

    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__"), copy_function=link_graphs)
    for task in tasks:
        model_dir = dest / DEPLOYMENTS[task].onnx_model
        config = parse_config(model_dir / "config.pbtxt")
        del config.instance_group[:]
        group = config.instance_group.add()
        group.kind = group.KIND_CPU
        group.count = variant.instances
        config.parameters["intra_op_threads"].string_value = str(variant.threads)
        config.parameters["streams"].string_value = str(variant.streams)
        config.parameters["trim_padding"].string_value = "true" if variant.trim_padding else "false"
        config.parameters["max_run_tokens"].string_value = str(variant.max_run_tokens)
        config.parameters["pack_runs"].string_value = "true" if variant.pack_runs else "false"
        if config.HasField("dynamic_batching"):
            config.dynamic_batching.max_queue_delay_microseconds = variant.max_queue_delay_us
            del config.dynamic_batching.preferred_batch_size[:]
            config.dynamic_batching.preferred_batch_size.extend(variant.preferred)
        write_config(config, model_dir)
    return dest


def run_tuning(
    repository: Path,
    tasks: list[str],
    rows: dict[str, list],
    out: Path,
    *,
    variants: tuple[Variant, ...] = DEFAULT_VARIANTS,
    concurrency: list[int],
    seconds: float,
    rounds: int,
    profile: str,
    max_foreign: float = 0.15,
    wait_s: float = 600.0,
    log=print,
) -> dict:
    """Every variant, `rounds` times interleaved; per variant and task the best and median round's top throughput."""
    build_record(repository)  # fails early, with the build command, when the repository is not built
    work = Path(out) / "variants"
    for v in variants:
        variant_repository(repository, work / v.name, v, tasks)
    measured: dict[str, dict[str, list[dict]]] = {v.name: {t: [] for t in tasks} for v in variants}
    failed = {v.name: dict.fromkeys(tasks, 0) for v in variants}
    points_seen: list[dict] = []
    for round_index in range(rounds):
        for v in variants:
            wait_until_quiet(max_foreign, wait_s)
            log(f"-- round {round_index + 1} of {rounds}: {v.name} ({v.describe()})")
            with server_for(work / v.name, tasks, log_file=Path(out) / f"tritonserver-{v.name}.log") as server:
                for task in tasks:
                    points = run_load_sweep(
                        task,
                        server.grpc_url,
                        rows[task],
                        concurrency,
                        log=log,
                        metrics_url=server.metrics_url,
                        seconds=seconds,
                        profile=profile,
                    )
                    measured[v.name][task].append(max(points, key=lambda p: p["seq_per_s"] or 0))
                    failed[v.name][task] += sum(p["failed"] for p in points)
                    points_seen += [{"variant": v.name, "round": round_index + 1, **p} for p in points]
    shutil.rmtree(work, ignore_errors=True)
    table = []
    for v in variants:
        row = {"variant": v.name, "settings": asdict(v), "describe": v.describe(), "tasks": {}}
        for task in tasks:
            best_points = measured[v.name][task]
            best = max(best_points, key=lambda p: p["seq_per_s"] or 0)
            row["tasks"][task] = {
                "best_seq_per_s": best["seq_per_s"],
                "median_seq_per_s": statistics.median(p["seq_per_s"] or 0 for p in best_points),
                "concurrency": best["concurrency"],
                "p50_ms": best["p50_ms"],
                "p99_ms": best["p99_ms"],
                "failed": failed[v.name][task],  # over every point of every round
            }
        table.append(row)
    return {
        "tasks": tasks,
        "profile": profile,
        "rounds": rounds,
        "seconds": seconds,
        "concurrency": concurrency,
        "variants": table,
        "points": points_seen,
    }


def markdown(tuning: dict) -> list[str]:
    tasks = tuning["tasks"]
    head = " | ".join(f"{t} seq/s (median; p50 ms at best)" for t in tasks)
    lines = [
        f"## Tuning: variants of the CPU runner config ({tuning['profile']} input, best of {tuning['rounds']} "
        f"interleaved rounds, {tuning['seconds']:g} s per concurrency level)",
        "",
        f"| variant | instances x [streams x] threads, queue delay, preferred batch, trim, run bound | {head} |",
        "|---|---|" + "---:|" * len(tasks),
    ]
    base = tuning["variants"][0]
    for row in tuning["variants"]:
        cells = []
        for t in tasks:
            f = row["tasks"][t]
            rel = f["best_seq_per_s"] / base["tasks"][t]["best_seq_per_s"]
            cells.append(
                f"{f['best_seq_per_s']:.1f} ({f['median_seq_per_s']:.1f}; {f['p50_ms'] or 0:.0f} ms) x{rel:.2f}"
            )
        lines.append(f"| {row['variant']} | {row['describe']} | " + " | ".join(cells) + " |")
    lines += ["", f"x: relative to the first variant ({base['variant']}, the shipped default).", ""]
    return lines
