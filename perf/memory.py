"""Memory of a running server: resident (RSS) and proportional (PSS) memory of tritonserver and of every model's
Python-backend stub process, one row per process, with totals.

RSS counts each shared page (the Python runtime, onnxruntime's and OpenVINO's libraries) once per process, so the
sum of RSS over processes is what a container's memory limit sees only roughly; PSS splits each shared page between
the processes that map it, so the sum of PSS is the memory the server really holds. Both are reported: targets are
written against the RSS sum (the stricter one), PSS says how much of it is sharing.

`python -m perf memory` serves the whole built repository, runs a short load over every task (so each runner has
allocated for real batches), then reads every process; `perf compare` records the same for the tasks it served and
`deploy soak` reads it before and after its load.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from pathlib import Path

from deploy.server import TritonServer
from deploy.watchdog import stub_processes

SERVER = "tritonserver"


@dataclass(frozen=True)
class ProcessMemory:
    name: str  # "tritonserver" or the model a stub serves
    pid: int
    rss_mb: float
    pss_mb: float


def read_process_memory(pid: int) -> tuple[float, float]:
    """(RSS, PSS) of `pid` in MB, from /proc/<pid>/smaps_rollup (PSS 0.0 where the kernel has no rollup)."""
    rss = pss = 0.0
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key, _, value = line.partition(":")
            if key == "Rss":
                rss = int(value.split()[0]) / 1024
            elif key == "Pss":
                pss = int(value.split()[0]) / 1024
    if rss == 0.0:  # no rollup (old kernel) or a process that just left: status still has RSS
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) / 1024
    return rss, pss


def server_memory(server: TritonServer) -> list[ProcessMemory]:
    """One row per process of `server`: tritonserver first, then each stub by model name (a model with two instances
    has two stubs)."""
    rows = [ProcessMemory(SERVER, server.process.pid, *read_process_memory(server.process.pid))]
    stubs = stub_processes(server.config.repository, server.process.pid)
    for pid, model in sorted(stubs.items(), key=lambda item: (item[1], item[0])):
        rows.append(ProcessMemory(model, pid, *read_process_memory(pid)))
    return rows


def by_model(rows: list[ProcessMemory]) -> dict[str, float]:
    """RSS in MB per model (its stubs summed) and of tritonserver: the shape soak reports before and after."""
    out: dict[str, float] = {}
    for row in rows:
        out[row.name] = out.get(row.name, 0.0) + row.rss_mb
    return out


def summary(rows: list[ProcessMemory]) -> dict:
    """The rows as dicts plus totals (processes, RSS and PSS sums, in MB)."""
    return {
        "processes": [asdict(r) for r in rows],
        "process_count": len(rows),
        "rss_total_mb": round(sum(r.rss_mb for r in rows), 1),
        "pss_total_mb": round(sum(r.pss_mb for r in rows), 1),
    }


def markdown(memory: dict, runners: dict[str, dict] | None = None) -> list[str]:
    """A table of `summary()`'s rows (models with several stubs summed, with their count), then the totals.
    `runners`: `<task>_onnx` model -> its engine settings, shown beside the model (engine, instances x streams)."""
    per_model: dict[str, list[dict]] = {}
    for row in memory["processes"]:
        per_model.setdefault(row["name"], []).append(row)
    lines = [
        "| process | count | RSS MB | PSS MB | serving |",
        "|---|---:|---:|---:|---|",
    ]
    for name, rows in per_model.items():
        runner = (runners or {}).get(name)
        how = ""
        if runner:
            how = f"{runner['engine']} {Path(runner['graph']).stem.removeprefix('model.')}"
            how += f" {runner['instances']} inst. x {runner['streams']} streams"
        rss, pss = sum(r["rss_mb"] for r in rows), sum(r["pss_mb"] for r in rows)
        lines.append(f"| {name} | {len(rows)} | {rss:.1f} | {pss:.1f} | {how} |")
    lines.append(
        f"| **total** | {memory['process_count']} | **{memory['rss_total_mb']:.1f}** | {memory['pss_total_mb']:.1f} | |"
    )
    return lines


def run_memory(
    repository: Path,
    rows: dict[str, list],
    seconds: float,
    concurrency: int,
    log_file: Path | None,
    profile: str = "corpus",
) -> dict:
    """Serve every model of the built `repository`, load each task of `rows` in turn (its rows: `profile`'s texts)
    for `seconds` after a warm-up at `concurrency`, one task at a time so each runner gets the largest batches that
    concurrency makes (seq128 texts, 100..128 tokens: the working memory's high-water mark), and read every server
    process after the last: {"memory": summary(), "tasks": calls and failures per task}."""
    from deploy.server import start_on_free_ports

    from .load import LoadSettings, run_load
    from .serving import build_record

    record = build_record(repository)  # RepositoryNotBuilt says how to build one
    loaded = {}
    with start_on_free_ports(repository, models=record["models"], log_file=log_file) as server:
        for task, task_rows in rows.items():
            settings = LoadSettings(
                tasks=(task,), url=server.grpc_url, concurrency=concurrency, seconds=seconds, warmup_s=1.0
            )
            result = run_load(settings, {task: task_rows})
            loaded[task] = {"calls": result["tasks"][task]["calls"], "failed": result["tasks"][task]["failed"]}
        memory = summary(server_memory(server))
    return {"memory": memory, "tasks": loaded, "seconds": seconds, "concurrency": concurrency, "profile": profile}
