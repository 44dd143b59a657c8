"""Start, watch and stop the pip-installed Triton server (nvidia-pytriton's bundled tritonserver 2.51).

That build has only the Python backend and needs three things set up around it: the Python backend stub matching
the running interpreter copied into the backend directory, the venv's bin/ first on PATH (the stub's embedded
interpreter finds the venv's packages through it), and the bundled shared libraries on LD_LIBRARY_PATH.
`TritonServer` does that, waits until the server and every model are READY, fails with the server's own error when
a model does not load, and stops the server cleanly (SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


class ServerError(RuntimeError):
    """The Triton server could not be started, did not become ready, or stopped unexpectedly."""


class PortTaken(ServerError):
    """A port of the config was bound by another process: before the start, or while the server was starting."""


ADMIN_HEADER = "admin-key"  # the HTTP header; Triton prefixes gRPC metadata keys:
GRPC_ADMIN_HEADER = f"triton-grpc-protocol-{ADMIN_HEADER}"
RESTRICTED_GRPC = "model-repository,shared-memory,trace,logging"
RESTRICTED_HTTP = "model-repository,shared-memory,trace,logging"
# The KServe v2 health endpoints on the HTTP port (open without the admin key); the Helm chart probes these.
READY_PATH = "/v2/health/ready"  # the server and, with --strict-readiness, every model READY
LIVE_PATH = "/v2/health/live"


@dataclass(frozen=True)
class ServerTls:
    """gRPC over TLS (PEM files). With `client_ca`, clients must present a certificate it signed (mutual TLS)."""

    certificate: Path
    private_key: Path
    client_ca: Path | None = None

    def __post_init__(self) -> None:
        for name in ("certificate", "private_key", "client_ca"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ServerError(f"TLS {name.replace('_', ' ')} {path} is not a file")


@dataclass
class ServerConfig:
    repository: Path
    grpc_port: int = 8001
    http_port: int = 8000
    metrics_port: int = 8002
    # Loopback by default: exposing the server is an explicit choice (see README).
    address: str = "127.0.0.1"
    model_config_name: str | None = None  # e.g. "gpu" selects <model>/configs/gpu.pbtxt
    log_file: Path | None = None
    log_verbose: int = 0
    exit_timeout_s: int = 30
    # Admin endpoints (model load/unload, repository index, shared memory, trace, logging) need the key in the
    # header GRPC_ADMIN_HEADER (gRPC) / ADMIN_HEADER (HTTP); None generates a random key per start (see
    # TritonServer.admin_key). Inference, health, metadata and statistics stay open.
    admin_key: str | None = None
    tls: ServerTls | None = None
    # Reload models whose Python backend stub died (deploy/watchdog.py); needs explicit model control.
    heal_stubs: bool = True
    # Models to load (explicit model control, which also allows reloading them); None loads the whole repository.
    models: list[str] | None = None
    extra_args: list[str] = field(default_factory=list)


def pytriton_root() -> Path:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ServerError("nvidia-pytriton is not installed: pip install 'mobilebert-triton[serve]'")
    return Path(next(iter(spec.submodule_search_locations))) / "tritonserver"


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int, address: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports the kernel reports free now (all sockets held open together, so no two are equal).
    Another process may still take one before the server binds it: `start_on_free_ports` retries that race."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for s in sockets:
            s.bind((address, 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def prepare_backend_directory(target: Path) -> Path:
    """backends/python/ with the bundled backend library and the stub of this interpreter's Python version."""
    root = pytriton_root()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServerError(f"nvidia-pytriton ships no Python backend stub for Python {version} (looked at {stub})")
    python_dir = target / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for source in [*(root / "backends" / "python").iterdir(), stub]:
        if source.is_file():
            _install(source, python_dir / source.name)
    return target


def _install(source: Path, target: Path) -> None:
    """Copy beside, then rename over: a restart must not write into a binary an exiting stub still executes
    (ETXTBSY), and a reader never sees a half-written file."""
    partial = target.with_name(f".{target.name}.partial")
    shutil.copy2(source, partial)
    os.replace(partial, target)


def server_environment() -> dict[str, str]:
    env = dict(os.environ)
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    libs = pytriton_root().parent.parent / "nvidia_pytriton.libs"
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(libs), env.get("LD_LIBRARY_PATH", "")) if p)
    return env


class TritonServer:
    """A tritonserver process serving one model repository; also a context manager."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.process: subprocess.Popen | None = None
        self._workdir = Path(tempfile.mkdtemp(prefix="mobilebert-triton-"))
        self.log_file = config.log_file or self._workdir / "tritonserver.log"
        self.admin_key = config.admin_key or secrets.token_urlsafe(24)
        self.watchdog = None
        self._log_offset = 0  # where this start's part of an appended log begins

    @property
    def grpc_url(self) -> str:
        return f"{self.config.address}:{self.config.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"{self.config.address}:{self.config.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"{self.config.address}:{self.config.metrics_port}"

    def command(self) -> list[str]:
        c = self.config
        args = [
            str(pytriton_root() / "bin" / "tritonserver"),
            f"--model-repository={Path(c.repository).resolve()}",
            f"--backend-directory={self._workdir / 'backends'}",
            f"--grpc-address={c.address}",
            f"--grpc-port={c.grpc_port}",
            f"--http-address={c.address}",
            f"--http-port={c.http_port}",
            f"--metrics-address={c.address}",
            f"--metrics-port={c.metrics_port}",
            f"--exit-timeout-secs={c.exit_timeout_s}",
            f"--log-verbose={c.log_verbose}",
            "--exit-on-error=true",
            "--strict-readiness=true",
        ]
        if c.models is not None:
            args.append("--model-control-mode=explicit")
            args += [f"--load-model={m}" for m in c.models]
        if c.model_config_name:
            args.append(f"--model-config-name={c.model_config_name}")
        args.append(f"--grpc-restricted-protocol={RESTRICTED_GRPC}:{ADMIN_HEADER}={self.admin_key}")
        args.append(f"--http-restricted-api={RESTRICTED_HTTP}:{ADMIN_HEADER}={self.admin_key}")
        if c.tls is not None:
            args += [
                "--grpc-use-ssl=true",
                f"--grpc-server-cert={Path(c.tls.certificate).resolve()}",
                f"--grpc-server-key={Path(c.tls.private_key).resolve()}",
            ]
            if c.tls.client_ca is not None:
                args += ["--grpc-use-ssl-mutual=true", f"--grpc-root-cert={Path(c.tls.client_ca).resolve()}"]
        return args + list(c.extra_args)

    def start(self, timeout_s: float = 120.0) -> TritonServer:
        if not Path(self.config.repository).is_dir():
            raise ServerError(f"model repository {self.config.repository} does not exist")
        for port in (self.config.grpc_port, self.config.http_port, self.config.metrics_port):
            _ensure_port_free(self.config.address, port)
        prepare_backend_directory(self._workdir / "backends")
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_file.open("ab")
        self._log_offset = log.tell()
        self.process = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, env=server_environment(), start_new_session=True
        )
        log.close()
        self.wait_until_ready(timeout_s)
        if self.config.heal_stubs and self.config.models is not None:
            from .watchdog import StubWatchdog

            self.watchdog = StubWatchdog(
                self.config.repository, self.process.pid, self.http_url, ADMIN_HEADER, self.admin_key
            ).start()
        return self

    def listening(self) -> bool:
        """Whether this process (its own log says so) bound every port: a READY answer on a port alone may come
        from another server that won a port race while this one was starting and is about to exit."""
        text = self._this_start_log()
        c = self.config
        started = (
            f"Started GRPCInferenceService at {c.address}:{c.grpc_port}",
            f"Started HTTPService at {c.address}:{c.http_port}",
            f"Started Metrics Service at {c.address}:{c.metrics_port}",
        )
        return all(line in text for line in started)

    def wait_until_ready(self, timeout_s: float) -> None:
        """Poll until this server bound its ports and it and every model are READY; raise with the server's error
        (`PortTaken` when it lost a port to another process)."""
        import tritonclient.http as http

        deadline = time.monotonic() + timeout_s
        # Closed on return: an open keep-alive connection makes the server wait out exit_timeout on shutdown.
        client = http.InferenceServerClient(self.http_url, connection_timeout=2.0, network_timeout=2.0)
        try:
            while time.monotonic() < deadline:
                if self.process is None or self.process.poll() is not None:
                    code = None if self.process is None else self.process.returncode
                    error = PortTaken if self.lost_port_race() else ServerError
                    raise error(f"tritonserver exited (code {code}) before becoming ready:\n{self.errors()}")
                with contextlib.suppress(Exception):
                    if self.listening() and client.is_server_ready():
                        return
                time.sleep(0.25)
        finally:
            client.close()
        self.stop()
        raise ServerError(f"tritonserver not ready after {timeout_s:.0f}s:\n{self.errors()}")

    def lost_port_race(self) -> bool:
        return "already in use" in self._this_start_log()

    def _this_start_log(self) -> str:
        try:
            with self.log_file.open("rb") as log:
                log.seek(self._log_offset)
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def errors(self, lines: int = 40) -> str:
        """The server's own error lines (E-prefixed log lines, model load failures), else the log's tail."""
        try:
            text = self.log_file.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no server log)"
        errors = [line for line in text if line.startswith("E") or "UNAVAILABLE" in line or "error" in line.lower()]
        return "\n".join((errors or text)[-lines:])

    def stop(self, grace_s: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after `grace_s`; returns the exit code."""
        if self.watchdog is not None:
            self.watchdog.stop()
            self.watchdog = None
        if self.process is None:
            return None
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> TritonServer:
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self._workdir / "backends", ignore_errors=True)


def _ensure_port_free(address: str, port: int) -> None:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError as exc:
            raise PortTaken(f"port {port} on {address} is already in use ({exc.strerror})") from None


def start_on_free_ports(
    repository: Path, *, attempts: int = 3, timeout_s: float = 120.0, **options: object
) -> TritonServer:
    """A started TritonServer of `repository` on free gRPC/HTTP/metrics ports (`options`: the other ServerConfig
    fields). A start that lost a port to another process (free ports are only free when picked) is retried on new
    ports, up to `attempts` times; any other failure (a model that does not load, a crash) raises at once with the
    server's log tail. Use the result as a context manager to stop it."""
    if attempts < 1:
        raise ValueError(f"start_on_free_ports: attempts must be >= 1, got {attempts}")
    taken = [k for k in ("grpc_port", "http_port", "metrics_port") if k in options]
    if taken:
        raise ValueError(f"start_on_free_ports picks the ports itself; do not pass {taken}")
    for attempt in range(1, attempts + 1):
        address = str(options.get("address", "127.0.0.1"))
        grpc_port, http_port, metrics_port = free_ports(3, address)
        config = ServerConfig(
            repository=Path(repository),
            grpc_port=grpc_port,
            http_port=http_port,
            metrics_port=metrics_port,
            **options,  # type: ignore[arg-type]
        )
        server = TritonServer(config)
        try:
            return server.start(timeout_s)
        except PortTaken:
            server.stop()
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")
