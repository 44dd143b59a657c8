"""The peers' virtual environments: one per peer, created on first use and cached, keyed by its pinned requirements.

The peers (Optimum, OpenVINO) pin transformers versions that conflict with ours (constraints.txt), so each runs in
its own venv under `root` (artifacts/peer-envs/<name>-<key>/), and our process only ever talks to it through a
subprocess (perf/peer_worker.py). The key is a hash of the requirement lines (comments and blank lines dropped,
order ignored) and the interpreter's version: a new pin makes a new venv, an edited comment does not. A venv is
built in a temporary folder and renamed into place only after pip succeeded, so a killed install never leaves a
venv that looks ready.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REQUIREMENTS_DIR = Path(__file__).resolve().parent / "peer_requirements"
DEFAULT_ROOT = Path("artifacts/peer-envs")
READY = ".ready"  # written last: its presence (holding the key) is what makes a venv usable


class PeerEnvError(RuntimeError):
    """A peer's venv could not be created (pip failed); the message carries pip's last lines."""


@dataclass(frozen=True)
class PeerEnv:
    name: str  # "optimum" or "openvino": perf/peer_requirements/<name>.txt
    root: Path = DEFAULT_ROOT
    python: str = field(default=sys.executable)  # the interpreter the venv is made from

    @property
    def requirements(self) -> Path:
        return REQUIREMENTS_DIR / f"{self.name}.txt"

    def key(self) -> str:
        return cache_key(self.requirements.read_text(encoding="utf-8"), _python_version(self.python))

    def path(self) -> Path:
        return Path(self.root) / f"{self.name}-{self.key()}"

    def interpreter(self) -> Path:
        # absolute (the worker runs in another cwd) but not resolved: bin/python links to the base interpreter,
        # and only the link's own path puts Python in the venv
        return (self.path() / "bin" / "python").absolute()

    def ready(self) -> bool:
        marker = self.path() / READY
        return marker.is_file() and marker.read_text(encoding="utf-8").strip() == self.key()


def requirement_lines(text: str) -> list[str]:
    """The pins of a requirements file, normalised: comments and blanks dropped, names lower-cased, sorted."""
    lines = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, rest = line.partition("==")
        lines.append(f"{name.strip().lower().replace('_', '-')}{sep}{rest.strip()}")
    return sorted(lines)


def cache_key(requirements_text: str, python_version: str) -> str:
    """12 hex digits identifying a venv: the same pins on the same Python give the same key."""
    digest = hashlib.sha256(python_version.encode())
    for line in requirement_lines(requirements_text):
        digest.update(b"\n" + line.encode())
    return digest.hexdigest()[:12]


def _python_version(python: str) -> str:
    if python == sys.executable:
        return ".".join(map(str, sys.version_info[:3]))
    out = subprocess.run(
        [python, "-c", "import sys; print('.'.join(map(str, sys.version_info[:3])))"],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def ensure(env: PeerEnv, log=print) -> Path:
    """The venv's interpreter, creating the venv first when no ready one has this key (minutes: torch, the peer's
    libraries). Stale venvs of the same peer (other keys) are removed once the new one is ready."""
    target = env.path()
    if env.ready():
        return env.interpreter()
    Path(env.root).mkdir(parents=True, exist_ok=True)
    building = target.with_name(target.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    log(f"peer env {env.name}: creating {target} from {env.requirements.name} (minutes, once per pin set)")
    started = time.time()
    # built under a temporary name, then renamed: the interpreter finds its venv from its own location (pyvenv.cfg
    # beside bin/), so it works after the move; bin/ scripts keep the old path in their shebang, hence `python -m`
    subprocess.run([env.python, "-m", "venv", str(building)], check=True)
    pip = [str(building / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    result = subprocess.run(
        # --no-deps: the file is the whole resolved set, pinned; pip installs exactly it and resolves nothing
        # (openvino.txt leaves out one declared dependency on purpose; see there)
        [*pip, "--no-input", "--no-deps", "-r", str(env.requirements)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        shutil.rmtree(building, ignore_errors=True)
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise PeerEnvError(f"peer env {env.name}: pip install -r {env.requirements} failed:\n{tail}")
    shutil.rmtree(target, ignore_errors=True)
    building.rename(target)
    (target / READY).write_text(env.key() + "\n", encoding="utf-8")
    for stale in Path(env.root).glob(f"{env.name}-*"):
        if stale != target and not stale.name.endswith(".building"):
            shutil.rmtree(stale, ignore_errors=True)
    log(f"peer env {env.name}: ready in {time.time() - started:.0f} s")
    return env.interpreter()
