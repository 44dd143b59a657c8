"""The peers of the comparison, (d) Optimum and (e) OpenVINO, each a subprocess in its own venv (perf/peer_env.py).

Our process never imports their libraries: `PeerProcess` starts perf/peer_worker.py with the peer venv's
interpreter, sends it the job (checkpoint, task, the same rows as (a)-(c), the thread budget, corpus rows to
calibrate on) as one JSON line and reads JSON lines back: one "ready" answer (the variants, each with its fidelity
against PyTorch FP32), then one measurement per request. The worker stays alive between rounds (idle), so the
rounds of the comparison interleave the peers with (a)-(c) without converting the model again. Every answer is
validated here (`parse_ready`, `parse_measurement`): a peer that answers nonsense fails loudly instead of
becoming a figure in the table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .environment import ForeignCpu
from .inputs import Row
from .peer_env import DEFAULT_ROOT, PeerEnv, ensure

WORKER = Path(__file__).resolve().parent / "peer_worker.py"

# candidate key in the comparison -> peer name (perf/peer_requirements/<name>.txt); "pytorch" is the worker's
# self-check (PyTorch FP32 through the same protocol, in our own interpreter: no venv), used by the tests
PEERS = {"d": "optimum", "e": "openvino"}
NAMES = {
    "optimum": "Optimum INT8 (optimum-onnx + ORTQuantizer avx512_vnni dynamic, onnxruntime)",
    "openvino": "OpenVINO (optimum-intel export; default precision and NNCF INT8, the faster counts)",
    "pytorch": "PyTorch FP32 eager via the peer worker (protocol self-check)",
}
KEYS = {name: key for key, name in PEERS.items()}


class PeerError(RuntimeError):
    """A peer failed (conversion, import, a malformed answer); the message carries the worker's last log lines."""


@dataclass
class PeerJob:
    peer: str  # optimum, openvino (or pytorch: the self-check)
    task: str
    checkpoint: Path
    workdir: Path  # the peer's converted models go here
    rows: list[Row]
    calibration_rows: list[Row]
    threads: int = 2

    def to_json(self) -> str:
        return json.dumps(
            {
                "peer": self.peer,
                "task": self.task,
                "checkpoint": str(self.checkpoint),
                "workdir": str(self.workdir),
                "rows": self.rows,
                "calibration_rows": self.calibration_rows,
                "threads": self.threads,
            }
        )


def parse_ready(answer: dict, job: PeerJob) -> dict:
    """The worker's "ready" answer, checked: its variants, each with a fidelity (cosines in [-1, 1], top-1 share in
    [0, 1], over at least one position) and decoded sample results of the task's shape."""
    if answer.get("event") == "error":
        raise PeerError(f"{job.peer} ({job.task}): {answer.get('error')}")
    if answer.get("event") != "ready" or answer.get("task") != job.task or answer.get("peer") != job.peer:
        raise PeerError(f"{job.peer} ({job.task}): expected its ready answer, got {str(answer)[:200]}")
    variants = answer.get("variants")
    if not variants or len({v.get("name") for v in variants}) != len(variants):
        raise PeerError(f"{job.peer} ({job.task}): no variants, or two with one name: {variants!r:.200}")
    for v in variants:
        f = v.get("fidelity") or {}
        if not (
            isinstance(v.get("how"), str)
            and all(isinstance(f.get(k), (int, float)) for k in ("cosine_min", "cosine_mean", "top1_agreement"))
            and -1.0 <= f["cosine_min"] <= f["cosine_mean"] <= 1.0
            and 0.0 <= f["top1_agreement"] <= 1.0
            and int(f.get("compared") or 0) > 0
        ):
            raise PeerError(f"{job.peer} ({job.task}) {v.get('name')}: malformed fidelity {f!r}")
        _check_sample(job, v)
    return answer


def _check_sample(job: PeerJob, variant: dict) -> None:
    sample = variant.get("sample")
    if not isinstance(sample, list) or not sample:
        raise PeerError(f"{job.peer} ({job.task}) {variant['name']}: no decoded sample results")
    for result in sample:
        if job.task == "fill_mask":
            ok = isinstance(result, list) and result and {"score", "token", "token_str"} <= set(result[0])
        elif job.task == "text_classification":
            ok = isinstance(result, list) and len(result) == 1 and {"label", "score"} <= set(result[0])
        else:
            ok = isinstance(result, dict) and {"answer", "score", "start", "end"} <= set(result)
        if not ok:
            raise PeerError(
                f"{job.peer} ({job.task}) {variant['name']}: sample result of the wrong shape: {result!r:.200}"
            )


def parse_measurement(answer: dict, batch: int) -> dict:
    if answer.get("event") != "measured":
        raise PeerError(f"expected a measurement, got {str(answer)[:200]}")
    run = {k: v for k, v in answer.items() if k != "event"}
    if run.get("batch") != batch or not run.get("sequences") or not (run.get("seq_per_s") or 0) > 0:
        raise PeerError(f"malformed measurement for batch {batch}: {run!r}")
    return run


class PeerProcess:
    """One peer's worker for one task, alive from `start()` (conversion, fidelity) to `close()`."""

    def __init__(self, job: PeerJob, interpreter: Path | str, log_file: Path | None = None) -> None:
        self.job = job
        self.interpreter = str(interpreter)
        self.log_file = Path(log_file or Path(job.workdir) / "worker.log")
        self.proc: subprocess.Popen | None = None
        self.ready: dict = {}

    @property
    def variants(self) -> list[dict]:
        return self.ready.get("variants", [])

    def start(self) -> PeerProcess:
        Path(self.job.workdir).mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        # the thread budget for everything in the worker that sizes its pools from the environment (torch's
        # reference, OpenMP); onnxruntime and OpenVINO get it explicitly. PYTHONPATH is cleared: the peer venv
        # must not see our packages (the worker finds its one shared module by path).
        threads = str(self.job.threads)
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "PYTHONPATH": ""}
        self._log = self.log_file.open("ab")
        self.proc = subprocess.Popen(
            [self.interpreter, str(WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
            cwd=str(self.job.workdir),
            text=True,
        )
        self.ready = parse_ready(self._ask(self.job.to_json()), self.job)
        return self

    def _ask(self, line: str) -> dict:
        assert self.proc is not None and self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
            answer = self.proc.stdout.readline()
        except BrokenPipeError:
            answer = ""
        if not answer:
            self.proc.wait(timeout=30)
            raise PeerError(
                f"{self.job.peer} ({self.job.task}): the worker exited ({self.proc.returncode}); its log "
                f"{self.log_file} ends:\n{self.log_tail()}"
            )
        return json.loads(answer)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def warm_up(self, variant: str, batch: int) -> None:
        answer = self._ask(json.dumps({"op": "warm_up", "variant": variant, "batch": batch}))
        if answer.get("event") != "warm":
            raise PeerError(f"{self.job.peer}: warm-up of {variant} answered {answer!r:.200}")

    def measure(self, variant: str, batch: int, seconds: float) -> dict:
        """Like perf.baselines.measure_round, in the worker; the foreign-CPU share is taken here (the worker is
        our child, so its CPU counts as ours)."""
        with ForeignCpu() as foreign:
            run = parse_measurement(
                self._ask(json.dumps({"op": "measure", "variant": variant, "batch": batch, "seconds": seconds})), batch
            )
        run.update(foreign_cpu=foreign.share, steal_cpu=foreign.steal, layout=variant)
        return run

    def close(self) -> None:
        if self.proc is None:
            return
        try:
            if self.proc.poll() is None:
                self.proc.stdin.write(json.dumps({"op": "exit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=60)
        except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        finally:
            self._log.close()
            self.proc = None


@dataclass
class PeerSettings:
    names: list[str]  # peers to run: optimum, openvino
    env_root: Path = DEFAULT_ROOT
    # when set, every peer runs with this interpreter instead of its venv (the tests' pytorch self-check)
    interpreter: str | None = None


def interpreters(settings: PeerSettings, log=print) -> dict[str, str]:
    """Each peer's interpreter: its venv's, created (minutes) the first time a pin set is seen."""
    if settings.interpreter:
        return {name: settings.interpreter for name in settings.names}
    return {
        name: str(ensure(PeerEnv(name, root=Path(settings.env_root), python=sys.executable), log))
        for name in settings.names
    }
