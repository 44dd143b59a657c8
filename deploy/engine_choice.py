"""Which engine serves each graph on this CPU: a short measurement at build time among the validated candidates.

Candidates: onnxruntime on the profile's graph (always; the INT8-dynamic graph by default), and every other engine
the export validated on this CPU and that passed the serving gates (the manifest's `engines`: OpenVINO on the FP32
graph at f32 or bf16, and on the INT8-QDQ graph). Each runs in the layout it would serve in (streams x threads of
one instance, every stream busy from its own thread), on the same synthetic batches, for a few interleaved rounds;
the fastest best round wins. Which engine is fastest depends on the CPU (OpenVINO's bf16 on AMX, onnxruntime's VNNI
INT8 kernels elsewhere), which is why it is measured here and not written down once. The choice and the table go
into the config and build.json.

The batches are a mix of sizes and lengths, as the dynamic batcher and the runner's padding trim hand them over, not
one full batch: on an AMD EPYC Zen 4 OpenVINO's INT8-QDQ graph at bf16 beat onnxruntime's INT8-dynamic graph by 15%
on 8 x 128 tokens alone (QA, one thread), and lost to it by 4-18% on this mix (OpenVINO is slower per row at small
batches), and the server built on the single-shape trial was the slower one.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from deploy.python_models.bounded_runs import run_bounded
from export.cpu import cpu_signature, same_kernels
from export.graph_engines import ENGINES, EngineSpec, open_engine, page_out_mapped_files
from export.pipeline import Manifest

AUTO = "auto"


# (batch, length) of the trial's batches as fractions of the largest (`batch` x `length`): what a dynamic batcher
# with preferred sizes 4/8 and a trimmed padding hands the runner, small batches and shorter lengths included
_MIX = ((1, 1), (1 / 2, 3 / 4), (1 / 4, 1), (1 / 8, 1 / 2), (3 / 4, 1), (3 / 8, 3 / 4), (1, 3 / 4), (5 / 8, 1))
_MIX += ((1 / 8, 1), (7 / 8, 1 / 2), (1 / 2, 1), (1 / 4, 1 / 2))


@dataclass(frozen=True)
class EngineTrial:
    """How long the build measures each candidate: `rounds` interleaved rounds of `seconds`, the best counts, over a
    mix of batches up to `batch` x `length` tokens (`shapes()`); and the memory a candidate may take."""

    seconds: float = 1.0
    rounds: int = 2
    batch: int = 8
    length: int = 128
    # Memory the chosen engines may take beyond each task's leanest candidate, per task built, summed over the
    # repository (`allot`): a faster engine serves where what it costs in memory fits. Issue 15's target is 1.6 GB for
    # the full repository of 8 tasks, and the repository served by the leanest engines (onnxruntime INT8) measured
    # 1.40-1.59 GB on an AMD EPYC Zen 4 and 1.56 GB on an Intel Xeon with AMX: no room is left for OpenVINO's bf16
    # FP32 graph there (~170 MB more per runner served, 1.3-2.1x as fast). This default (128 MB for 8 tasks) absorbs the
    # trial's noise between engines of about equal memory; `deploy build --engine-extra-mb-per-task` buys speed.
    extra_mb_per_task: float = 16.0
    # A candidate replaces onnxruntime only at this speed ratio or more: the trial does not resolve less on a busy
    # 2-core machine (pretraining's OpenVINO bf16 against onnxruntime measured 1.09x in one build, 0.85x in the next)
    min_gain: float = 1.1

    def __post_init__(self) -> None:
        if (
            self.seconds <= 0
            or self.rounds < 1
            or self.batch < 1
            or self.length < 2
            or not 0 <= self.extra_mb_per_task < math.inf
        ):
            raise ValueError(
                "engine trial: seconds > 0, rounds >= 1, batch >= 1, length >= 2, 0 <= extra_mb_per_task < inf "
                f"(got {self})"
            )
        if not 1 <= self.min_gain < math.inf:
            raise ValueError(f"engine trial: min_gain must be >= 1 and finite (got {self.min_gain})")

    def shapes(self) -> list[tuple[int, int]]:
        """The (batch, length) of each trial batch: the mix, scaled to `batch` x `length`, distinct, in mix order."""
        scaled = [(max(1, round(b * self.batch)), max(2, round(n * self.length))) for b, n in _MIX]
        return list(dict.fromkeys(scaled))


@dataclass
class EngineChoice:
    spec: EngineSpec
    measured: list[dict] = field(default_factory=list)  # per candidate: label, seq/s (best round), rounds, MB
    reason: str = ""
    specs: list[EngineSpec] = field(default_factory=list)  # the candidates, in the order of `measured`

    def to_dict(self) -> dict:
        return {"chosen": self.spec.label, "spec": asdict(self.spec), "measured": self.measured, "reason": self.reason}


def candidates(
    manifests: dict[str, Manifest], ort_flavour: str, engine: str, threads: int, streams: int
) -> list[EngineSpec]:
    """The engines that may serve: onnxruntime on `ort_flavour`, plus what the export validated on this CPU."""
    if engine not in (AUTO, *ENGINES):
        raise ValueError(f"engine {engine!r} is not one of {(AUTO, *ENGINES)}")
    out = []
    if engine in (AUTO, "onnxruntime"):
        out.append(EngineSpec("onnxruntime", manifests[ort_flavour].graph, threads=threads, streams=streams))
    here = cpu_signature()
    for manifest in manifests.values():
        for figures in manifest.engines.values():
            if engine not in (AUTO, figures.get("engine")):
                continue
            if figures.get("passed") and same_kernels(figures.get("cpu"), here):
                spec = EngineSpec(figures["engine"], manifest.graph, figures["precision"], threads, streams)
                out.append(spec)
    if not out:
        raise ValueError(
            f"engine {engine!r}: no graph was validated for it on this CPU (is the runtime installed? did the "
            "graph pass its gates there? see the manifests' `engines`)"
        )
    return out


def trial_feed(
    input_dims: dict[str, int], trial: EngineTrial, vocab_size: int, seed: int = 0, shape: tuple[int, int] | None = None
) -> dict:
    """A synthetic batch of `shape` (default: `batch` rows of `length` tokens; multiple choice: 4 choices per row),
    every token attended."""
    rng = np.random.default_rng(seed)
    batch, length = shape or (trial.batch, trial.length)
    dims = (batch, length) if input_dims["input_ids"] == 2 else (batch, 4, length)
    ids = rng.integers(min(1000, vocab_size - 1), vocab_size, dims).astype(np.int64)
    feed = {"input_ids": ids, "attention_mask": np.ones(dims, np.int64), "token_type_ids": np.zeros(dims, np.int64)}
    return {k: v for k, v in feed.items() if k in input_dims}


def trial_feeds(input_dims: dict[str, int], trial: EngineTrial, vocab_size: int, seed: int = 0) -> list[dict]:
    """One synthetic batch per shape of `trial.shapes()`."""
    return [trial_feed(input_dims, trial, vocab_size, seed + i, shape) for i, shape in enumerate(trial.shapes())]


def choose(
    folder: Path, specs: list[EngineSpec], feeds: list[dict], trial: EngineTrial, max_run_tokens: int
) -> EngineChoice:
    """The fastest of `specs` over `feeds` (graphs inside `folder`): rows per second with each of a spec's streams
    running every feed in turn from its own thread, as the runner keeps one batch in flight per stream, in runs of at
    most `max_run_tokens` tokens as the runner runs them; and each one's resident memory. A single candidate is taken
    without measuring. Which one serves is `allot`'s call, across the repository's tasks."""
    if len(specs) == 1:
        return EngineChoice(specs[0], reason="the only candidate", specs=list(specs))
    sizes = [next(iter(feed.values())).shape[0] for feed in feeds]

    def stream_rows(engine, stream: int, started: float, seconds: float) -> int:
        """Rows `stream` ran: every feed in turn until `seconds` passed (0: one pass)."""
        done = 0
        while True:
            for feed, rows in zip(feeds, sizes, strict=True):
                run_bounded(lambda part: engine.run(part, stream), feed, max_run_tokens)
                done += rows
                if seconds and time.perf_counter() - started >= seconds:
                    return done
            if not seconds:
                return done

    _import_runtimes(specs)  # so the first candidate of each runtime is not charged for loading its library
    engines, memory = [], {}
    with ThreadPoolExecutor(max(spec.streams for spec in specs)) as pool:
        for spec in specs:  # each stays open while the next is measured, so each one's growth is its own
            page_out_mapped_files(str(folder))  # as an OpenVINO engine does after compiling: the last one's too
            before = resident_mb(trimmed=True)
            engine = open_engine(folder, spec)
            # warm-up, every stream at once as in serving: first-call allocations, each stream's working memory,
            # and OpenVINO's kernels and buffers for each new shape
            list(pool.map(lambda s, e=engine: stream_rows(e, s, 0.0, 0.0), range(spec.streams)))
            memory[spec.label] = max(0.0, resident_mb(trimmed=True) - before)
            engines.append((spec, engine))
        rounds: dict[str, list[float]] = {spec.label: [] for spec in specs}
        for _ in range(trial.rounds):
            for spec, engine in engines:
                started = time.perf_counter()
                jobs = [pool.submit(stream_rows, engine, s, started, trial.seconds) for s in range(spec.streams)]
                done = sum(job.result() for job in jobs)
                rounds[spec.label].append(done / (time.perf_counter() - started))
    measured = [
        {
            "label": s.label,
            "seq_per_s": round(max(rounds[s.label]), 2),
            "rounds": [round(r, 2) for r in rounds[s.label]],
            "memory_mb": round(memory[s.label], 1),
        }
        for s in specs
    ]
    best = max(range(len(specs)), key=lambda i: measured[i]["seq_per_s"])
    how = f"{len(feeds)} batches of up to {max(sizes)} rows"
    return EngineChoice(specs[best], measured, f"fastest of {len(specs)} measured on this CPU ({how})", list(specs))


def allot(choices: dict[str, EngineChoice], extra_mb: float, min_gain: float = 1.0) -> dict[str, EngineChoice]:
    """Which measured candidate serves each task, so that the memory the chosen engines take beyond each task's
    leanest candidate adds up to at most `extra_mb` over the repository: of the combinations that fit, the one with
    the highest product of speeds (each task's relative gain counts alike). A candidate other than a task's first
    (onnxruntime, the kept profile, where it is one) competes only if it is `min_gain` times as fast as the first. A
    task measured with one candidate keeps it. Returns the choices with the serving spec set and the reason saying
    what the limits changed.

    Counted beyond the leanest, not absolute: the trial's absolute figures include what a task's output alone holds
    (pretraining's full-vocabulary logits: 700-860 MB for every engine), which no choice changes."""
    allowed = {
        task: [i for i, m in enumerate(c.measured) if i == 0 or m["seq_per_s"] >= min_gain * c.measured[0]["seq_per_s"]]
        for task, c in choices.items()
    }
    # Pareto front over tasks: (extra MB, sum of log speeds, picks), keeping only states no other beats in both
    front: list[tuple[float, float, tuple[int, ...]]] = [(0.0, 0.0, ())]
    for task, choice in choices.items():
        options = [(i, choice.measured[i]) for i in allowed[task]] or [(0, {"seq_per_s": 1.0, "memory_mb": 0.0})]
        leanest = min(o["memory_mb"] for _, o in options)
        states = sorted(
            (mb + o["memory_mb"] - leanest, score + math.log(max(o["seq_per_s"], 1e-9)), (*picks, i))
            for mb, score, picks in front
            for i, o in options
        )
        front = []
        for state in states:
            if not front or state[1] > front[-1][1]:
                front.append(state)
    extra, _, picks = max((s for s in front if s[0] <= extra_mb + 1e-9), key=lambda s: s[1])
    out = {}
    for (task, choice), index in zip(choices.items(), picks, strict=True):
        if not choice.measured:
            out[task] = choice
            continue
        chosen, fastest = choice.measured[index], max(choice.measured, key=lambda m: m["seq_per_s"])
        reason = choice.reason
        gain = fastest["seq_per_s"] / max(chosen["seq_per_s"], 1e-9)
        passed = f"{chosen['label']} ({chosen['memory_mb']:g} MB), not {fastest['label']} ({fastest['memory_mb']:g} MB"
        slower = chosen["seq_per_s"] < fastest["seq_per_s"]  # not when as fast and leaner
        if slower and choice.measured.index(fastest) not in allowed[task]:
            reason += f"; within the trial's noise ({min_gain:g}x): {passed}, only {gain:.2f}x as fast)"
        elif slower:
            reason += (
                f"; engine memory beyond each task's leanest limited to {extra_mb:g} MB over the repository (this "
                f"choice: {extra:.0f} MB): {passed}, {gain:.2f}x as fast)"
            )
        out[task] = replace(choice, spec=choice.specs[index], reason=reason)
    return out


def _import_runtimes(specs: list[EngineSpec]) -> None:
    """Load the runtimes `specs` use (and OpenVINO's CPU plugin) before any engine's memory is measured."""
    if any(spec.engine == "onnxruntime" for spec in specs):
        import onnxruntime  # noqa: F401
    if any(spec.engine == "openvino" for spec in specs):
        import openvino as ov

        ov.Core().get_property("CPU", "FULL_DEVICE_NAME")


def resident_mb(trimmed: bool = False) -> float:
    """This process's resident memory, MB (Linux; 0 where /proc is absent, which turns the memory figures off).
    `trimmed`: after handing the C heap's free memory back first (glibc's malloc_trim), so that output arrays the
    trial already dropped are not counted as the engine's. What the engines keep themselves stays counted: with it,
    pretraining's candidates still measured 650-860 MB on AMX (each holds full-vocabulary logits, 125 MB per
    8 x 128 batch, in its own buffers)."""
    if trimmed:
        gc.collect()
        with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
            ctypes.CDLL(None).malloc_trim(0)
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0
