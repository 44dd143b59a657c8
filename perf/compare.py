"""The comparison: (a) transformers eager FP32, (b) onnxruntime INT8 in-process, (c) our Triton ensembles over gRPC.

Equal work per item: the same ~128-token texts (perf.inputs' seq128 profile, 100..128 tokens with special tokens),
text in and decoded results out for every candidate, the same thread budget (`threads`: torch's intra-op threads
for (a), onnxruntime's for (b), the server's ONNX runner as built for (c)), one after the other on the same machine,
never concurrently. The server runs only during (c) (it is started after (a) and (b), and stopped before anything
else runs), unless a running server's URL is given (smoke tests), which the results then say.

(a) and (b) are measured at each batch size in `hf_batches` / `ort_batches` and the best is kept. (c) is the async
client's closed-loop load, one text per call (online serving: the server's dynamic batcher makes the batches), at
each concurrency in `concurrency`, best kept; and, when `bulk_rows` is set, "(c) bulk": `bulk_rows` texts per call
(what `client.fill_mask(list)` / `client.map` do for bulk work) at each of `bulk_concurrency`, reported beside it.
Every setting gets `seconds`, split into `rounds` rounds, and its best round counts (the machine may be shared:
other processes only ever slow a round down; medians are kept too). Ratios of sequences/s: b/a, c/a, c/b (and
c_bulk/a, c_bulk/b).
"""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import environment
from .baselines import HfEager, OrtInt8, measure
from .inputs import seq128_rows, token_lengths
from .load import LoadSettings, run_load
from .serving import build_record, onnx_runner_settings, server_for

TASKS = ("fill_mask", "question_answering")


@dataclass
class CompareSettings:
    repository: Path
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    threads: int = 2
    items: int = 64  # distinct texts per task
    min_tokens: int = 100
    max_tokens: int = 128
    seconds: float = 10.0  # per measurement (one batch size or concurrency level), split into `rounds`
    rounds: int = 3  # the best round counts: other processes on the machine can only slow a round down
    hf_batches: list[int] = field(default_factory=lambda: [1, 8])
    ort_batches: list[int] = field(default_factory=lambda: [1, 8])
    concurrency: list[int] = field(default_factory=lambda: [4, 8, 16, 32])  # (c): one text per call
    bulk_rows: int | None = 8  # (c) bulk: texts per call; None: not measured
    bulk_concurrency: list[int] = field(default_factory=lambda: [2, 4])
    server_url: str | None = None  # a running server to use for (c) instead of starting one

    def __post_init__(self) -> None:
        self.repository = Path(self.repository)
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown:
            raise ValueError(f"compare: no comparison for {unknown}; tasks: {', '.join(TASKS)}")


def prepare(settings: CompareSettings) -> dict[str, dict]:
    """Per task: the checkpoint and graph the repository was built from, and the ~128-token rows."""
    from model_def import MobileBertTokenizer

    record = build_record(settings.repository)
    plan = {}
    for task in settings.tasks:
        if task not in record.get("tasks", []):
            raise ValueError(f"{settings.repository} was built without {task}")
        checkpoint = Path(record["checkpoints"][task])
        tokenizer = MobileBertTokenizer.from_pretrained(checkpoint)
        rows = seq128_rows(task, tokenizer, settings.items, settings.min_tokens, settings.max_tokens)
        lengths = token_lengths(rows, tokenizer)
        plan[task] = {
            "checkpoint": checkpoint,
            "runner": onnx_runner_settings(settings.repository, task),
            "rows": rows,
            "tokens": {"min": min(lengths), "median": statistics.median(lengths), "max": max(lengths)},
        }
    return plan


def _best(runs: list[dict]) -> dict:
    return max(runs, key=lambda r: r["seq_per_s"])


def run_in_process(settings: CompareSettings, plan: dict[str, dict], log=print) -> dict[str, dict]:
    """(a) and (b) for every task, best batch of each; models are freed before the next candidate loads."""
    out: dict[str, dict] = {}
    for task, p in plan.items():
        out[task] = {}
        for key, make, batches in (
            ("a", lambda p=p, task=task: HfEager(task, p["checkpoint"], settings.threads), settings.hf_batches),
            (
                "b",
                lambda p=p, task=task: OrtInt8(
                    task, Path(p["runner"]["graph_path"]), p["checkpoint"], settings.threads
                ),
                settings.ort_batches,
            ),
        ):
            candidate = make()
            runs = []
            for batch in batches:
                load = environment.load_average()
                run = measure(candidate, p["rows"], batch, settings.seconds, settings.rounds)
                run["load_average_before"] = load
                run["load_average_after"] = environment.load_average()
                runs.append(run)
                log(f"({key}) {candidate.name:28s} {task:20s} batch {batch:<3d} {run['seq_per_s']:8.2f} seq/s")
            out[task][key] = {"candidate": candidate.name, "how": candidate.how, "best": _best(runs), "runs": runs}
            del candidate
            gc.collect()
    return out


def _triton_point(settings: CompareSettings, task: str, rows: list, url: str, concurrency: int, k: int) -> dict:
    load = environment.load_average()
    rounds = [
        run_load(
            LoadSettings(
                task=task,
                url=url,
                concurrency=concurrency,
                seconds=settings.seconds / max(1, settings.rounds),
                rows_per_request=k,
                warmup_s=min(2.0, settings.seconds) if r == 0 else 0.0,
                profile="seq128",
            ),
            rows,
        )
        for r in range(max(1, settings.rounds))
    ]
    run = dict(_best(rounds))  # the best round, with its own server breakdown
    run["rounds"] = [x["seq_per_s"] for x in rounds]
    run["seq_per_s_median"] = statistics.median(run["rounds"])
    run["failed"] = sum(x["failed"] for x in rounds)
    run["errors"] = [e for x in rounds for e in x["errors"]][:5]
    run["load_average_before"] = load
    run["load_average_after"] = environment.load_average()
    return run


def run_triton(settings: CompareSettings, plan: dict[str, dict], url: str, log=print) -> dict[str, dict]:
    """(c) for every task: the async client's closed loop at each concurrency, best kept (and the bulk variant)."""
    out: dict[str, dict] = {}
    for task, p in plan.items():
        r = p["runner"]
        server = (
            f"server: {r['graph']}, {r['instances']} instance(s) x {r['intra_op_threads']} ORT thread(s), dynamic "
            f"batching preferred {r['preferred_batch_sizes']}, queue delay {r['max_queue_delay_us']} us"
        )
        modes = [("c", 1, settings.concurrency)]
        if settings.bulk_rows:
            modes.append(("c_bulk", settings.bulk_rows, settings.bulk_concurrency))
        out[task] = {}
        for key, k, levels in modes:
            runs = []
            for concurrency in levels:
                run = _triton_point(settings, task, p["rows"], url, concurrency, k)
                runs.append(run)
                log(
                    f"({key}) Triton, {k} text(s)/call {task:20s} conc. {concurrency:<3d} {run['seq_per_s']:8.2f} "
                    f"seq/s p50 {run['p50_ms'] or 0:.1f} p99 {run['p99_ms'] or 0:.1f} ms failed {run['failed']}"
                )
            out[task][key] = {
                "candidate": f"Triton ensemble over gRPC, {k} text{'s' if k > 1 else ''}/call",
                "how": f"AsyncMobileBertClient, {k} text(s) per call, closed loop, no retries; {server}",
                "best": _best(runs),
                "runs": runs,
                "failed": sum(x["failed"] for x in runs),
            }
    return out


def _ratio(x: float, y: float) -> float | None:
    return round(x / y, 3) if y else None


def combine(settings: CompareSettings, plan: dict, in_process: dict, triton: dict) -> dict:
    tasks = {}
    for task in plan:
        entry = {"tokens": plan[task]["tokens"], "items": len(plan[task]["rows"]), **in_process[task], **triton[task]}
        rate = {k: entry[k]["best"]["seq_per_s"] for k in ("a", "b", "c", "c_bulk") if k in entry}
        entry["ratios"] = {"b/a": _ratio(rate["b"], rate["a"]), "c/a": _ratio(rate["c"], rate["a"])}
        entry["ratios"]["c/b"] = _ratio(rate["c"], rate["b"])
        if "c_bulk" in rate:
            entry["ratios"]["c_bulk/a"] = _ratio(rate["c_bulk"], rate["a"])
            entry["ratios"]["c_bulk/b"] = _ratio(rate["c_bulk"], rate["b"])
        tasks[task] = entry
    return {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(settings).items()},
        "server_during_in_process": settings.server_url is not None,
        "tasks": tasks,
    }


def run_comparison(settings: CompareSettings, log=print, server_log: Path | None = None) -> dict:
    """(a), (b), then (c) with its own server (or settings.server_url); returns the comparison section."""
    plan = prepare(settings)
    started = time.time()
    in_process = run_in_process(settings, plan, log)
    if settings.server_url:
        triton = run_triton(settings, plan, settings.server_url, log)
    else:
        with server_for(settings.repository, list(plan), log_file=server_log) as server:
            triton = run_triton(settings, plan, server.grpc_url, log)
    result = combine(settings, plan, in_process, triton)
    result["wall_s"] = round(time.time() - started, 1)
    return result
