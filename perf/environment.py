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


def wait_for_quiet_machine(max_load: float, timeout_s: float, poll_s: float = 15.0, log=print) -> list[float]:
    """Wait (up to timeout_s) until the 1-minute load average is <= max_load; returns the last load average."""
    deadline = time.monotonic() + timeout_s
    load = load_average()
    while load and load[0] > max_load and time.monotonic() < deadline:
        log(f"load average {load[0]:.2f} > {max_load}: waiting for the machine to quieten")
        time.sleep(poll_s)
        load = load_average()
    return load
