"""Where the figures were measured: machine, load, versions; and how to run perf_analyzer.

perf_analyzer ships in the tritonclient wheel (`bin/perf_analyzer`, next to the venv's python). It links Debian's
libb64 (`libb64-0d`) and the CUDA runtime even on CPU-only machines; the runtime comes from PyPI's
`nvidia-cuda-runtime-cu12` (the `bench` extra), whose lib/ directory has to be on LD_LIBRARY_PATH.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

PACKAGES = (
    "torch",
    "transformers",
    "onnxruntime",
    "tokenizers",
    "numpy",
    "tritonclient",
    "nvidia-pytriton",
    "nvidia-cuda-runtime-cu12",
    "grpcio",
)


class PerfAnalyzerUnavailable(RuntimeError):
    """perf_analyzer is missing or cannot start (e.g. libcudart.so.12 or libb64 not installed); says which."""


def perf_analyzer_binary() -> Path:
    """The perf_analyzer of this environment (the venv's bin/, else PATH)."""
    local = Path(sys.executable).parent / "perf_analyzer"
    if local.is_file():
        return local
    found = shutil.which("perf_analyzer")
    if found:
        return Path(found)
    raise PerfAnalyzerUnavailable(
        "perf_analyzer not found: it ships in the tritonclient wheel (pip install 'tritonclient[grpc]==2.51.0')"
    )


def cuda_runtime_lib_dir() -> Path | None:
    """lib/ of PyPI's nvidia-cuda-runtime-cu12 (holds libcudart.so.12), or None when not installed."""
    try:
        spec = importlib.util.find_spec("nvidia.cuda_runtime")
    except ModuleNotFoundError:
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    lib = Path(next(iter(spec.submodule_search_locations))) / "lib"
    return lib if (lib / "libcudart.so.12").exists() else None


def perf_analyzer_env() -> dict[str, str]:
    env = dict(os.environ)
    lib = cuda_runtime_lib_dir()
    if lib is not None:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(lib), env.get("LD_LIBRARY_PATH", "")) if p)
    return env


def check_perf_analyzer() -> str:
    """perf_analyzer's version line; raises PerfAnalyzerUnavailable naming what is missing."""
    binary = perf_analyzer_binary()
    try:
        done = subprocess.run(
            [str(binary), "--version"], env=perf_analyzer_env(), capture_output=True, text=True, timeout=30
        )
    except OSError as exc:
        raise PerfAnalyzerUnavailable(f"{binary} cannot be executed: {exc}") from exc
    output = (done.stdout + done.stderr).strip()
    if "error while loading shared libraries" in output:
        missing = output.split("error while loading shared libraries:")[-1].split(":")[0].strip()
        hint = {
            "libcudart.so.12": "pip install nvidia-cuda-runtime-cu12 (the project's `bench` extra)",
            "libb64.so.0d": "apt-get install libb64-0d (make setup does it)",
        }.get(missing, "install the library that provides it")
        raise PerfAnalyzerUnavailable(f"perf_analyzer cannot start: {missing} is missing; {hint}")
    if done.returncode != 0:
        raise PerfAnalyzerUnavailable(f"perf_analyzer --version failed (exit {done.returncode}): {output[-500:]}")
    return output.splitlines()[-1] if output else "perf_analyzer"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return sorted(flags & {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8"})
    except OSError:
        pass
    return []


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def machine() -> dict:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_flags": cpu_flags(),
        "memory_gib": memory_gib(),
        "os": platform.platform(),
        "load_average": load_average(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _process_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, CPU ticks used so far) for every process readable in /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                raw = f.read().decode(errors="replace")
        except OSError:
            continue
        fields = raw[raw.rfind(")") + 2 :].split()  # after "pid (comm) "
        try:
            table[int(entry)] = (int(fields[1]), int(fields[11]) + int(fields[12]))  # ppid, utime + stime
        except (IndexError, ValueError):
            continue
    return table


def _steal_ticks() -> int | None:
    """CPU ticks the hypervisor gave to other guests (the `steal` column of /proc/stat), summed over CPUs."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return int(fields[8]) if fields[0] == "cpu" and len(fields) > 8 else None
    except (OSError, ValueError):
        return None


class ForeignCpu:
    """How much CPU processes outside this process tree used during a measurement (the machine may be shared).

    `share` = their CPU seconds / (wall seconds x cores): 0.0 means the measurement had the machine to itself; 0.5
    means other processes took half of all cores meanwhile. Our own children (the server and its stubs, perf_analyzer)
    are ours, not foreign. Processes that start and end within the measurement are not seen. `steal` is the same
    share for the time a hypervisor ran other virtual machines on our CPUs (0.0 on bare metal).
    """

    def __init__(self) -> None:
        self.before: dict[int, tuple[int, int]] = {}
        self.steal_before: int | None = None
        self.started = 0.0
        self.share: float | None = None
        self.steal: float | None = None

    def __enter__(self) -> ForeignCpu:
        self.before = _process_table()
        self.steal_before = _steal_ticks()
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        after = _process_table()
        steal_after = _steal_ticks()
        elapsed = time.monotonic() - self.started
        children: dict[int, list[int]] = {}
        for pid, (ppid, _) in after.items():
            children.setdefault(ppid, []).append(pid)
        ours, stack = set(), [os.getpid()]
        while stack:
            pid = stack.pop()
            if pid not in ours:
                ours.add(pid)
                stack.extend(children.get(pid, []))
        ticks = sum(t - self.before.get(pid, (0, 0))[1] for pid, (_, t) in after.items() if pid not in ours)
        seconds = ticks / os.sysconf("SC_CLK_TCK")
        capacity = elapsed * (os.cpu_count() or 1)
        self.share = round(seconds / capacity, 3) if elapsed > 0 else None
        if elapsed > 0 and steal_after is not None and self.steal_before is not None:
            self.steal = round((steal_after - self.steal_before) / os.sysconf("SC_CLK_TCK") / capacity, 3)


def foreign_probe(seconds: float = 3.0) -> float | None:
    """Share of the machine's CPU that processes outside this process tree use right now (sampled for `seconds`)."""
    with ForeignCpu() as foreign:
        time.sleep(seconds)
    return foreign.share


def wait_until_quiet(max_foreign: float, timeout_s: float, max_load: float | None = None, log=print) -> dict:
    """Wait (up to timeout_s) until other processes use at most `max_foreign` of the CPU (a 3 s probe) and, when
    given, the 1-minute load average is at most `max_load` (meaningful only before this process has worked: its own
    load stays in the average for a minute or two). Returns what it saw last: {"load_average", "foreign_cpu"}."""
    deadline = time.monotonic() + timeout_s
    while True:
        load = load_average()
        share = foreign_probe()
        busy = (share is not None and share > max_foreign) or (max_load is not None and load and load[0] > max_load)
        if not busy or time.monotonic() >= deadline:
            if busy:
                log(f"warning: still busy after {timeout_s:.0f}s (others {share:.0%} CPU, load {load}); going on")
            return {"load_average": load, "foreign_cpu": share}
        log(f"waiting for a quiet machine: other processes use {share:.0%} of the CPU, load average {load}")
        time.sleep(10)
