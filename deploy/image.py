"""`python -m deploy image`: build the CPU container image with podman and serve it here.

The build context is assembled under artifacts/image/context: wheels/ (`pip wheel` of the project's `serve` extra
with constraints.txt, on the host: pip inside a build cannot verify TLS here, and air-gapped builds work the same
way) and repository/ (the models build.json lists, copied). On this machine no registry can be reached, so
`--debian-base` builds the base image with debootstrap (Debian bookworm minbase, ~30 s) and imports it as
localhost/debian:bookworm; users build FROM the default python:3.11-slim instead.

Podman runs as root with runc and cgroupfs (crun refuses this host's hybrid cgroups) and an empty default_ulimits
(setrlimit is refused otherwise); `ensure_host_tools` installs and configures that where missing.

python -m deploy image --debian-base                 # build, then serve on 127.0.0.1:8000/8001/8002 until Ctrl-C
python -m deploy image --debian-base --no-run        # build only
python -m deploy image --push registry.example.com/mobilebert-triton   # tag and push the built image
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from export.graph_engines import OPENVINO_CACHE

from .build_record import BUILD_RECORD, read_build_record
from .server import READY_PATH

logger = logging.getLogger("deploy.image")
ROOT = Path(__file__).resolve().parent.parent
CONTAINER_DIR = Path(__file__).resolve().parent / "container"
CONTAINERFILE = CONTAINER_DIR / "Containerfile"
IMAGE_NAME = "localhost/mobilebert-triton"
DEBIAN_BASE = "localhost/debian:bookworm"
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager=cgroupfs"]
CONTAINERS_CONF = Path("/etc/containers/containers.conf")
HOST_PACKAGES = {"podman": "podman", "runc": "runc", "debootstrap": "debootstrap"}
ADMIN_KEY_PATH = "/run/secrets/admin-key"  # the image's --admin-key-file (Containerfile CMD)
CONTAINER_PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}  # the image's defaults (Containerfile CMD)


class ImageError(RuntimeError):
    """The image could not be built, or its container did not serve or stop cleanly."""


def project_version() -> str:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    match = re.search(r'^version = "([^"]+)"', text, re.M)
    if match is None:
        raise ImageError("pyproject.toml has no [project] version")
    return match.group(1)


def _run(args: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, check=False, **kwargs)
    if result.returncode != 0:
        raise ImageError(f"{what} failed (exit {result.returncode}):\n{(result.stderr or result.stdout)[-3000:]}")
    return result


# --------------------------------------------------------------------------------------------- host set-up


def ensure_host_tools() -> None:
    """podman, runc and debootstrap from Debian (installed where missing), and podman's ulimit setting."""
    missing = [pkg for tool, pkg in HOST_PACKAGES.items() if shutil.which(tool) is None]
    if missing:
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        logger.info("apt-get install %s", " ".join(missing))
        _run([*sudo, "apt-get", "update", "-qq"], "apt-get update")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        _run([*sudo, "apt-get", "install", "-y", "-qq", *missing], "apt-get install", env=env)
    if not CONTAINERS_CONF.exists():
        # Without it every container start fails: setrlimit is refused for podman's default ulimits here.
        CONTAINERS_CONF.parent.mkdir(parents=True, exist_ok=True)
        CONTAINERS_CONF.write_text("[containers]\ndefault_ulimits = []\n", encoding="utf-8")


def _apt_mirror() -> str:
    """The Debian archive apt already uses (deb822 or one-line sources)."""
    for path in [*Path("/etc/apt/sources.list.d").glob("*.sources"), Path("/etc/apt/sources.list")]:
        with contextlib.suppress(OSError):
            for line in path.read_text(encoding="utf-8").splitlines():
                match = re.match(r"^(?:URIs:\s*|deb\s+(?:\[[^]]*\]\s+)?)(\S+/debian)/?(?:\s|$)", line)
                if match:
                    return match.group(1)
    return "http://deb.debian.org/debian"


def ensure_debian_base(name: str = DEBIAN_BASE) -> str:
    """A Debian bookworm base image in podman's store, built with debootstrap if absent."""
    if subprocess.run([*PODMAN, "image", "exists", name], check=False).returncode == 0:
        return name
    with tempfile.TemporaryDirectory(prefix="debootstrap-") as rootfs:
        logger.info("debootstrap bookworm (minbase) from %s", _apt_mirror())
        _run(["debootstrap", "--variant=minbase", "bookworm", rootfs, _apt_mirror()], "debootstrap")
        tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        try:
            _run([*PODMAN, "import", "-", name], "podman import", stdin=tar.stdout)
        finally:
            tar.stdout.close()
            tar.wait()
    return name


# ------------------------------------------------------------------------------------------ build context


def build_wheelhouse(target: Path) -> list[str]:
    """Wheels of the project's `serve` extra and every dependency, pinned by constraints.txt."""
    target.mkdir(parents=True, exist_ok=True)
    for old in target.glob("mobilebert_triton-*.whl"):
        old.unlink()  # the project's own wheel is rebuilt every time: the source changes, the version may not
    _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(target), "-c", str(ROOT / "constraints.txt"),
         f"{ROOT}[serve]"],
        "pip wheel (the wheelhouse)",
    )  # fmt: skip
    return sorted(p.name for p in target.glob("*.whl"))


def stage_repository(repository: Path, target: Path) -> list[str]:
    """Copy the models build.json lists (and build.json) into `target`; hard links become files."""
    record = read_build_record(repository)
    if record is None:
        raise ImageError(f"{repository} has no {BUILD_RECORD}: build it first (python -m deploy build --demo)")
    missing = [m for m in record["models"] if not (Path(repository) / m).is_dir()]
    if missing:
        raise ImageError(f"{repository} lacks models its {BUILD_RECORD} lists: {missing}")
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    # OpenVINO's compiled-model cache is this CPU's (and large): the image's CPU compiles and caches its own
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", OPENVINO_CACHE)
    for model in record["models"]:
        shutil.copytree(Path(repository) / model, target / model, ignore=ignore)
    shutil.copy2(Path(repository) / BUILD_RECORD, target / BUILD_RECORD)
    return record["models"]


@dataclass
class ImageBuild:
    repository: Path = Path("triton_repo")
    tag: str = ""  # default: IMAGE_NAME:<project version>
    base_image: str | None = None  # None: the Containerfile's default (python:3.11-slim)
    context: Path = Path("artifacts/image/context")
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.tag = self.tag or f"{IMAGE_NAME}:{project_version()}"

    def build(self) -> str:
        start = time.monotonic()
        models = stage_repository(self.repository, self.context / "repository")
        self.timings["stage repository"] = time.monotonic() - start
        start = time.monotonic()
        wheels = build_wheelhouse(self.context / "wheels")
        self.timings["wheelhouse"] = time.monotonic() - start
        logger.info("context: %d models, %d wheels", len(models), len(wheels))
        args = [*PODMAN, "build", "--network=host", "-t", self.tag, "-f", str(CONTAINERFILE)]
        args += ["--build-arg", f"VERSION={project_version()}"]
        if self.base_image:
            args += ["--build-arg", f"BASE_IMAGE={self.base_image}"]
        start = time.monotonic()
        _run([*args, str(self.context)], f"podman build {self.tag}")
        self.timings["podman build"] = time.monotonic() - start
        return self.tag


# ---------------------------------------------------------------------------------------------- running


@dataclass
class Container:
    """The image serving on published loopback ports (the container itself listens on all its addresses)."""

    image: str
    host_ports: dict[str, int] = field(default_factory=lambda: dict(CONTAINER_PORTS))
    admin_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    name: str = field(default_factory=lambda: f"mobilebert-triton-{secrets.token_hex(4)}")
    extra_args: list[str] = field(default_factory=list)  # appended to the image's CMD (e.g. --model-config-name)
    started: bool = False
    _key_dir: Path | None = field(default=None, init=False, repr=False)

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.host_ports['grpc']}"

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.host_ports['http']}"

    def start(self, timeout_s: float = 180.0) -> Container:
        # The key as a read-only file mount at the image's --admin-key-file, readable by the image's uid only. (A
        # podman secret cannot target /run/secrets on a read-only root: runc cannot create the mount point.)
        self._key_dir = Path(tempfile.mkdtemp(prefix="mobilebert-admin-"))
        key = self._key_dir / "admin-key"
        key.write_text(self.admin_key + "\n", encoding="utf-8")
        os.chown(key, 1000, 1000)
        key.chmod(0o400)
        publish = [a for n, p in self.host_ports.items() for a in ("-p", f"127.0.0.1:{p}:{CONTAINER_PORTS[n]}")]
        # As the Helm chart runs it: read-only root (podman mounts a tmpfs on /tmp), no capabilities, no privilege
        # escalation, a 1 GiB /dev/shm for the Python backend's tensors.
        cmd = [*PODMAN, "run", "-d", "--name", self.name, *publish, "--shm-size=1g", "--read-only"]
        cmd += ["--cap-drop=all", "--security-opt=no-new-privileges", "-v", f"{key}:{ADMIN_KEY_PATH}:ro", self.image]
        if self.extra_args:  # the image's CMD again, then the extras
            cmd += [*_image_cmd(self.image), *self.extra_args]
        self.started = True  # from here on stop() cleans up, even after a failed run (a created container)
        _run(cmd, f"podman run {self.image}")
        self.wait_until_ready(timeout_s)
        return self

    def wait_until_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.state() != "running":
                raise ImageError(f"the container exited ({self.state()}) before becoming ready:\n{self.logs()}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"http://{self.http_url}{READY_PATH}", timeout=2) as response,
            ):
                if response.status == 200:
                    return
            time.sleep(0.5)
        raise ImageError(f"the container was not ready after {timeout_s:.0f}s:\n{self.logs()}")

    def state(self) -> str:
        result = subprocess.run(
            [*PODMAN, "inspect", "--format", "{{.State.Status}}", self.name], capture_output=True, text=True
        )
        return result.stdout.strip() or "gone"

    def logs(self, tail: int = 60) -> str:
        result = subprocess.run([*PODMAN, "logs", "--tail", str(tail), self.name], capture_output=True, text=True)
        return (result.stdout + result.stderr).strip()

    def stop(self, grace_s: int = 45) -> tuple[int, str]:
        """SIGTERM (podman stop), SIGKILL after `grace_s`; returns the exit code and the container's output."""
        if not self.started:
            return 0, ""
        subprocess.run([*PODMAN, "stop", "-t", str(grace_s), self.name], capture_output=True, check=False)
        code = subprocess.run(
            [*PODMAN, "inspect", "--format", "{{.State.ExitCode}}", self.name], capture_output=True, text=True
        ).stdout.strip()
        output = self.logs(tail=200)
        subprocess.run([*PODMAN, "rm", "-f", self.name], capture_output=True, check=False)
        shutil.rmtree(self._key_dir, ignore_errors=True)
        self.started = False
        return int(code) if code.lstrip("-").isdigit() else -1, output

    def __enter__(self) -> Container:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _image_cmd(image: str) -> list[str]:
    result = _run([*PODMAN, "image", "inspect", "--format", "{{json .Config.Cmd}}", image], "podman image inspect")
    return json.loads(result.stdout)


def push(tag: str, reference: str) -> None:
    target = reference if ":" in reference.rsplit("/", 1)[-1] else f"{reference}:{tag.rsplit(':', 1)[1]}"
    _run([*PODMAN, "tag", tag, target], "podman tag")
    _run([*PODMAN, "push", target], f"podman push {target}")
    print(f"pushed {target}")


# -------------------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m deploy image", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", type=Path, default=Path("triton_repo"), help="a built repository")
    parser.add_argument("--tag", default="", help=f"default {IMAGE_NAME}:<project version>")
    base = parser.add_mutually_exclusive_group()
    base.add_argument("--base-image", help="FROM this image (default: the Containerfile's python:3.11-slim)")
    base.add_argument("--debian-base", action="store_true", help="FROM a local debootstrap bookworm (no registry)")
    parser.add_argument("--context", type=Path, default=Path("artifacts/image/context"))
    parser.add_argument("--no-run", action="store_true", help="build only")
    parser.add_argument("--push", metavar="REFERENCE", help="tag the image as REFERENCE and push it")
    parser.add_argument("--http-port", type=int, default=8000, help="host port (loopback) for the container's 8000")
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        ensure_host_tools()
        base = ensure_debian_base() if args.debian_base else args.base_image
        build = ImageBuild(repository=args.repository, tag=args.tag, base_image=base, context=args.context)
        tag = build.build()
        print(f"built {tag}: " + ", ".join(f"{k} {v:.0f}s" for k, v in build.timings.items()))
        if args.push:
            push(tag, args.push)
        if args.no_run:
            return 0
        ports = {"http": args.http_port, "grpc": args.grpc_port, "metrics": args.metrics_port}
        container = Container(tag, host_ports=ports)
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        container.start()
    except ImageError as exc:
        print(f"image failed: {exc}", file=sys.stderr)
        return 1
    try:
        print(
            f"container {container.name} is READY: gRPC {container.grpc_url}, HTTP {container.http_url}; "
            f"admin key {container.admin_key}. Ctrl-C to stop.",
            flush=True,
        )
        while not stop.wait(1.0):
            if container.state() != "running":
                print(f"the container exited:\n{container.logs()}", file=sys.stderr)
                return 1
    finally:
        code, _ = container.stop()
    print(f"container stopped (exit code {code})")
    return 0 if code == 0 else 1
