"""The comparison: (a) transformers eager FP32, (b) onnxruntime INT8 in-process, (c) our Triton ensembles over gRPC,
and the peers a user would pick instead: (d) Optimum INT8, (e) OpenVINO (perf/peers.py, each in its own venv).

Equal work per item: the same ~128-token texts (perf.inputs' seq128 profile, 100..128 tokens with special tokens),
text in and decoded results out for every candidate, the same thread budget (`threads`: torch's intra-op threads
for (a), onnxruntime's for (b); for (c) the server's ONNX runner as built: instances x streams x threads), one after the
other on the same machine, never concurrently. The server runs only during (c): each round starts it after (a) and (b)
and stops it before the next round, unless a running server's URL is given (smoke tests), which the results say.

(a) and (b) are measured at each batch size in `hf_batches` / `ort_batches`, the best kept. (c) is the async client's
closed-loop load, one text per call (online serving: the server's dynamic batcher makes the batches), at each
concurrency in `concurrency`, best kept; and, when `bulk_rows` is set, "(c) bulk": `bulk_rows` texts per call (what
`client.fill_mask(list)` / `client.map` do for bulk work) at each of `bulk_concurrency`, reported beside it.
The peers, when `peers` names them, run in subprocesses (perf/peers.py) with the same rows, threads and batch
sizes `peer_batches`, text in and decoded results out, measured in the in-process phase beside (a) and (b); every
variant of a peer (OpenVINO: default precision and NNCF INT8) is a setting, the fastest counts, and each variant's
fidelity against PyTorch FP32 (cosine of the logits, top-1 agreement) is kept beside its speed.
Every setting is measured once per round for seconds / rounds; rounds are the outer loop, so a burst of load from
other processes (the machine may be shared) hits one round of every candidate rather than all of one, and the best
round of each setting counts (other processes only ever slow a round down). Medians, every round and the share of
the CPU other processes took during each round are kept. Ratios of sequences/s: b/a, c/a, c/b (c_bulk/a, c_bulk/b),
and per peer p: p/a, c/p, c_bulk/p.
"""

from __future__ import annotations

import gc
import shutil
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from deploy.model_configs import CpuSettings

from . import environment
from .baselines import HfEager, OrtInt8, measure_round, warm_up
from .inputs import corpus_rows, seq128_rows, token_lengths
from .load import LoadSettings, run_load
from .memory import server_memory, summary
from .peer_env import DEFAULT_ROOT, PeerEnvError
from .peers import NAMES, PeerError, PeerJob, PeerProcess, PeerSettings, interpreters
from .serving import build_record, onnx_runner_settings, server_for

TASKS = ("fill_mask", "question_answering", "text_classification")
# candidate key of each peer; "pytorch" is the peer worker's self-check (tests), not a peer
PEER_KEYS = {"optimum": "d", "openvino": "e", "pytorch": "p"}


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
    ort_batches: list[int] = field(default_factory=lambda: [1, 8, 16])
    # (b) session layouts: how many sessions split the thread budget. 1 = one session with every thread; the
    # served layout (instances x streams x threads of the runner) is added when it differs, so (b) is the best of both.
    ort_sessions: list[int] = field(default_factory=lambda: [1])
    concurrency: list[int] = field(default_factory=lambda: [4, 8, 16, 32])  # (c): one text per call
    bulk_rows: int | None = 8  # (c) bulk: texts per call; None: not measured
    bulk_concurrency: list[int] = field(default_factory=lambda: [2, 4])
    server_url: str | None = None  # a running server to use for (c) instead of starting one
    server_metrics_url: str | None = None  # that server's metrics host:port (the ONNX runners' own timing)
    peers: list[str] = field(default_factory=list)  # optimum (d), openvino (e); [] = none (the CLI adds both)
    peer_batches: list[int] = field(default_factory=lambda: [8, 16])
    peer_envs: Path = DEFAULT_ROOT  # where the peers' venvs are created and cached
    peer_interpreter: str | None = None  # run the peer worker with this interpreter instead of the peer's venv

    def __post_init__(self) -> None:
        self.repository = Path(self.repository)
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown:
            raise ValueError(f"compare: no comparison for {unknown}; tasks: {', '.join(TASKS)}")
        unknown = [p for p in self.peers if p not in PEER_KEYS]
        if unknown:
            raise ValueError(f"compare: unknown peers {unknown}; peers: optimum, openvino")


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


def _settings_of(settings: CompareSettings, plan: dict, task: str) -> list:
    """(candidate key, rows per call, level) of every measured setting: level is the concurrency for (c), the number
    of sessions for (b), 0 for (a)."""
    out = [("a", b, 0) for b in settings.hf_batches]
    out += [("b", b, n) for n in _ort_sessions(settings, plan, task) for b in settings.ort_batches]
    out += [("c", 1, c) for c in settings.concurrency]
    if settings.bulk_rows:
        out += [("c_bulk", settings.bulk_rows, c) for c in settings.bulk_concurrency]
    # peers: level is the variant's name (OpenVINO: default, nncf-int8)
    for key, variants in plan[task].get("peer_variants", {}).items():
        out += [(key, b, v) for v in variants for b in settings.peer_batches]
    return out


def _ort_sessions(settings: CompareSettings, plan: dict, task: str) -> list[int]:
    sessions = list(settings.ort_sessions)
    r = plan[task]["runner"]
    served = int(r.get("instances") or 1) * int(r.get("streams") or 1)  # parallel inferences the runner keeps
    if served * int(r.get("intra_op_threads") or 0) == settings.threads and served not in sessions:
        sessions.append(served)
    return sessions


def load_candidates(settings: CompareSettings, plan: dict[str, dict]) -> dict[tuple[str, str, int], object]:
    """(a) and (b) (each session layout) of every task, loaded once and kept for every round."""
    out: dict[tuple[str, str, int], object] = {}
    for task, p in plan.items():
        out[(task, "a", 0)] = HfEager(task, p["checkpoint"], settings.threads)
        for n in _ort_sessions(settings, plan, task):
            # (b) is onnxruntime's INT8 graph whichever engine the build chose to serve
            graph = Path(p["runner"]["graph_path"]).with_name(f"model.{CpuSettings.graph_flavour}.onnx")
            out[(task, "b", n)] = OrtInt8(task, graph, p["checkpoint"], settings.threads, sessions=n)
    return out


def start_peers(settings: CompareSettings, plan: dict, workdir: Path, log_dir: Path | None, log=print) -> dict:
    """Every peer of every task started (conversion, quantization, fidelity; minutes for full-size models), one at
    a time. {(task, key): PeerProcess}; a peer that fails is logged and recorded in plan[task]["peer_errors"], and
    the comparison goes on without it."""
    procs: dict[tuple[str, str], PeerProcess] = {}
    if not settings.peers:
        return procs
    try:
        found = interpreters(PeerSettings(settings.peers, Path(settings.peer_envs), settings.peer_interpreter), log)
    except PeerEnvError as exc:
        for task in plan:
            plan[task]["peer_errors"] = {PEER_KEYS[p]: str(exc) for p in settings.peers}
        log(f"peers skipped: {exc}")
        return procs
    for task, p in plan.items():
        p["peer_variants"], p["peer_errors"], p["peers"] = {}, {}, {}
        for peer in settings.peers:
            key = PEER_KEYS[peer]
            job = PeerJob(
                peer=peer,
                task=task,
                checkpoint=p["checkpoint"],
                workdir=workdir / f"{peer}-{task}",
                rows=p["rows"],
                calibration_rows=corpus_rows(task, seed=1),
                threads=settings.threads,
            )
            log_file = (log_dir / f"peer-{peer}-{task}.log") if log_dir else None
            proc = PeerProcess(job, found[peer], log_file)
            log(f"({key}) {peer} {task}: converting and checking fidelity (log {proc.log_file})")
            started = time.time()
            try:
                proc.start()
            except (PeerError, OSError, ValueError) as exc:
                proc.close()
                p["peer_errors"][key] = str(exc)
                log(f"({key}) {peer} {task} failed: {exc}")
                continue
            procs[(task, key)] = proc
            p["peer_variants"][key] = [v["name"] for v in proc.variants]
            p["peers"][key] = {
                "peer": peer,
                "versions": proc.ready.get("versions"),
                "prepare_s": round(time.time() - started, 1),
                "variants": {v["name"]: {"how": v["how"], "fidelity": v["fidelity"]} for v in proc.variants},
            }
            for v in proc.variants:
                f = v["fidelity"]
                log(
                    f"({key}) {peer} {task} {v['name']}: cosine vs PyTorch FP32 min {f['cosine_min']:.4f} "
                    f"mean {f['cosine_mean']:.4f}, top-1 {f['top1_agreement']:.3f} ({f['compared']} compared)"
                )
    return procs


def run_peer_round(settings: CompareSettings, plan: dict, procs: dict, warmed: set, log=print) -> dict:
    """One round of every peer variant at every batch size (the first visit warms it up)."""
    out = {}
    peer_keys = set(PEER_KEYS.values())
    for task in plan:
        for key, batch, variant in (x for x in _settings_of(settings, plan, task) if x[0] in peer_keys):
            proc = procs[(task, key)]
            if (task, key, batch, variant) not in warmed:
                proc.warm_up(variant, batch)
                warmed.add((task, key, batch, variant))
            run = proc.measure(variant, batch, settings.seconds / max(1, settings.rounds))
            out[(task, key, batch, variant)] = run
            label = f"({key}) {proc.job.peer}"
            log(
                f"{label:38s} {task:20s} {f'batch {batch}, {variant}':26s} {run['seq_per_s']:8.2f} seq/s "
                f"(other processes: {100 * (run['foreign_cpu'] or 0):.0f}% CPU)"
            )
    return out


def run_in_process_round(
    settings: CompareSettings, plan: dict, candidates: dict, warmed: set, log=print
) -> dict[tuple[str, str, int], dict]:
    """One round of (a) and (b) at every batch size; the first visit of a setting warms it up first."""
    out = {}
    for task, p in plan.items():
        for key, batch, level in (x for x in _settings_of(settings, plan, task) if x[0] in ("a", "b")):
            candidate = candidates[(task, key, level)]
            if (task, key, batch, level) not in warmed:
                warm_up(candidate, p["rows"], batch)
                warmed.add((task, key, batch, level))
            run = measure_round(candidate, p["rows"], batch, settings.seconds / max(1, settings.rounds))
            if key == "b":
                run["layout"] = candidate.layout
            out[(task, key, batch, level)] = run
            label = f"({key}) {candidate.name}"
            setting = f"batch {batch}" + (f", {candidate.layout}" if key == "b" else "")
            log(
                f"{label:38s} {task:20s} {setting:26s} {run['seq_per_s']:8.2f} seq/s "
                f"(other processes: {100 * (run['foreign_cpu'] or 0):.0f}% CPU)"
            )
    return out


def run_triton_round(
    settings: CompareSettings, plan: dict, url: str, log=print, metrics_url: str | None = None
) -> dict[tuple[str, str, int], dict]:
    """One round of (c) (and (c) bulk) at every concurrency, through the async client (`metrics_url`: the server's
    metrics endpoint, for the ONNX runners' own timing)."""
    out = {}
    for task, p in plan.items():
        for key, k, concurrency in (x for x in _settings_of(settings, plan, task) if x[0].startswith("c")):
            run = run_load(
                LoadSettings(
                    tasks=(task,),
                    url=url,
                    metrics_url=metrics_url,
                    concurrency=concurrency,
                    seconds=settings.seconds / max(1, settings.rounds),
                    rows_per_request=k,
                    warmup_s=1.0,
                    profile="seq128",
                ),
                {task: p["rows"]},
            )
            out[(task, key, k, concurrency)] = run
            label = f"({key}) Triton, {k} text(s)/call"
            log(
                f"{label:38s} {task:20s} conc. {concurrency:<3d} {run['seq_per_s']:8.2f} "
                f"seq/s p50 {run['p50_ms'] or 0:.1f} p99 {run['p99_ms'] or 0:.1f} ms failed {run['failed']} "
                f"(other processes: {100 * (run['foreign_cpu'] or 0):.0f}% CPU)"
            )
    return out


def aggregate(settings: CompareSettings, plan: dict, rounds: list[dict]) -> dict[str, dict]:
    """Per task and candidate: every setting's best round (with all rounds' figures), and the best setting."""
    out: dict[str, dict] = {}
    for task, p in plan.items():
        r = p["runner"]
        server = (
            f"server: {r['engine']} ({r['precision']}) on {r['graph']}, {r['instances']} instance(s) x "
            f"{r['streams']} stream(s) x {r['intra_op_threads']} thread(s), dynamic "
            f"batching preferred {r['preferred_batch_sizes']}, queue delay {r['max_queue_delay_us']} us"
        )
        out[task] = {}
        for key in ("a", "b", "c", "c_bulk", *PEER_KEYS.values()):
            runs = []
            for k, rows_per_call, level in _settings_of(settings, plan, task):
                if k != key:
                    continue
                setting = (task, key, rows_per_call, level)
                measured = [x[setting] for x in rounds if setting in x]
                run = dict(_best(measured))
                run["rounds"] = [x["seq_per_s"] for x in measured]
                run["seq_per_s_median"] = round(statistics.median(run["rounds"]), 3)
                run["foreign_cpu_rounds"] = [x.get("foreign_cpu") for x in measured]
                run["failed"] = sum(x["failed"] for x in measured)
                if key.startswith("c"):
                    run["errors"] = [e for x in measured for e in x.get("errors", [])][:5]
                runs.append(run)
            if not runs:
                continue
            if key in ("a", "b"):
                name, how = plan[task]["names"][key]
            elif key in PEER_KEYS.values():
                info = plan[task]["peers"][key]
                name = NAMES[info["peer"]]
                how = "; ".join(f"{v}: {x['how']}" for v, x in info["variants"].items())
            else:
                k = 1 if key == "c" else settings.bulk_rows
                name = f"Triton ensemble over gRPC, {k} text{'s' if k > 1 else ''}/call"
                how = f"AsyncMobileBertClient, {k} text(s) per call, closed loop, no retries; {server}"
            out[task][key] = {
                "candidate": name,
                "how": how,
                "best": _best(runs),
                "runs": runs,
                "failed": sum(x["failed"] for x in runs),
            }
            if key in PEER_KEYS.values():
                _add_peer_variants(out[task][key], plan[task]["peers"][key], runs)
    return out


def _add_peer_variants(entry: dict, info: dict, runs: list[dict]) -> None:
    """Each variant's best run beside its fidelity (both are reported; the faster counts as the peer's figure)."""
    entry["versions"] = info["versions"]
    entry["prepare_s"] = info["prepare_s"]
    entry["variants"] = {}
    for name, v in info["variants"].items():
        mine = [r for r in runs if r.get("layout") == name]
        entry["variants"][name] = {**v, "best": _best(mine) if mine else None}
    entry["fidelity"] = info["variants"][entry["best"]["layout"]]["fidelity"]


def _ratio(x: float, y: float) -> float | None:
    return round(x / y, 3) if y else None


def combine(settings: CompareSettings, plan: dict, measured: dict) -> dict:
    tasks = {}
    for task in plan:
        entry = {"tokens": plan[task]["tokens"], "items": len(plan[task]["rows"]), **measured[task]}
        peers = [k for k in PEER_KEYS.values() if k in entry]
        rate = {k: entry[k]["best"]["seq_per_s"] for k in ("a", "b", "c", "c_bulk", *peers) if k in entry}
        entry["ratios"] = {"b/a": _ratio(rate["b"], rate["a"]), "c/a": _ratio(rate["c"], rate["a"])}
        entry["ratios"]["c/b"] = _ratio(rate["c"], rate["b"])
        if "c_bulk" in rate:
            entry["ratios"]["c_bulk/a"] = _ratio(rate["c_bulk"], rate["a"])
            entry["ratios"]["c_bulk/b"] = _ratio(rate["c_bulk"], rate["b"])
        for k in peers:
            entry["ratios"][f"{k}/a"] = _ratio(rate[k], rate["a"])
            entry["ratios"][f"c/{k}"] = _ratio(rate["c"], rate[k])
            if "c_bulk" in rate:
                entry["ratios"][f"c_bulk/{k}"] = _ratio(rate["c_bulk"], rate[k])
        if plan[task].get("peer_errors"):
            entry["peer_errors"] = plan[task]["peer_errors"]
        tasks[task] = entry
    return {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(settings).items()},
        "server_during_in_process": settings.server_url is not None,
        "tasks": tasks,
    }


def run_comparison(settings: CompareSettings, log=print, server_log: Path | None = None, quiet=None) -> dict:
    """`rounds` rounds of: (a) and (b) with no server running, then (c) with a freshly started server (or the running
    `settings.server_url`). Rounds spread every candidate over the whole run, so a burst of load from other
    processes hits one round of each, not all of one; the best round per setting counts. `quiet()`, when given, is
    called before each phase (e.g. to wait for a quiet machine); what it returns is recorded per round."""
    plan = prepare(settings)
    started = time.time()
    candidates = load_candidates(settings, plan)
    for task in plan:
        a = candidates[(task, "a", 0)]
        b = next(c for (t, k, _), c in candidates.items() if t == task and k == "b")
        layouts = ", ".join(c.layout for (t, k, _), c in candidates.items() if t == task and k == "b")
        plan[task]["names"] = {"a": (a.name, a.how), "b": (b.name, f"{b.how}; session layouts: {layouts}")}
    workdir = Path(tempfile.mkdtemp(prefix="perf-peers-"))
    try:
        procs = start_peers(settings, plan, workdir, server_log.parent if server_log else None, log)
        try:
            rounds, loads, memory = _rounds(settings, plan, candidates, procs, server_log, log, quiet)
        finally:
            for proc in procs.values():
                proc.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    del candidates
    gc.collect()
    result = combine(settings, plan, aggregate(settings, plan, rounds))
    result["load_average_before"] = loads
    if memory is not None:
        result["memory"] = memory  # the served models' processes after the last (c) round
    result["wall_s"] = round(time.time() - started, 1)
    return result


def _rounds(settings, plan, candidates, procs, server_log, log, quiet) -> tuple[list[dict], list[dict], dict | None]:
    warmed: set = set()
    rounds: list[dict] = []
    loads: list[dict] = []
    memory = None
    for r in range(max(1, settings.rounds)):
        log(f"-- round {r + 1} of {settings.rounds}")
        load_in_process = quiet() if quiet else environment.load_average()
        measured = run_in_process_round(settings, plan, candidates, warmed, log)
        measured.update(run_peer_round(settings, plan, procs, warmed, log))
        load_server = quiet() if quiet else environment.load_average()
        if settings.server_url:
            measured.update(run_triton_round(settings, plan, settings.server_url, log, settings.server_metrics_url))
        else:
            with server_for(settings.repository, list(plan), log_file=server_log) as server:
                measured.update(run_triton_round(settings, plan, server.grpc_url, log, server.metrics_url))
                memory = summary(server_memory(server))
        rounds.append(measured)
        loads.append({"round": r + 1, "before_in_process": load_in_process, "before_server": load_server})
    return rounds, loads, memory
