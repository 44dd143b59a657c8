"""A local scale-out deployment, shaped like Triton's k8s-onprem chart: N replicas behind one load balancer, and
Prometheus scraping every replica with the autoscaling signal (queue time per request) as a recording rule.

Balancer: haproxy (Debian), not nginx. Open-source nginx has only passive failure detection (max_fails on errors
of real requests), so a replica that reports NOT READY (drained: its model unloaded) keeps getting traffic until
requests fail. haproxy checks every replica actively on Triton's HTTP /v2/health/ready (strict readiness: every
model READY) and routes gRPC (h2 on both sides, balanced per request, i.e. per h2 stream) only to replicas that
pass; a connection failure is retried on another replica (`retry-on conn-failure`) before the client sees it.

Everything binds 127.0.0.1: replicas on free ports (deploy.server.start_on_free_ports), the balancer's gRPC and
HTTP addresses, its stats socket, and Prometheus. `Cluster.stop()` stops all of it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .server import ServerError, TritonServer, free_ports, start_on_free_ports

# The prometheus-adapter rule (Triton's k8s-onprem chart), kept per replica: the HPA signal, target 50 us.
QUEUE_TIME_RULE = "queue_time_per_request_us"
QUEUE_TIME_EXPR = (
    "avg by (replica) (delta(nv_inference_queue_duration_us[30s]) / (1 + delta(nv_inference_request_success[30s])))"
)


class ClusterError(ServerError):
    """A part of the cluster (replica, balancer, Prometheus) could not be started or is missing."""


@dataclass(frozen=True)
class HealthCheck:
    """haproxy's active check of each replica's /v2/health/ready: every `interval_ms`, down after `fall` failures,
    back after `rise` successes. Worst case to stop routing to a dead replica: about fall x interval."""

    interval_ms: int = 500
    fall: int = 2
    rise: int = 2

    def __post_init__(self) -> None:
        if self.interval_ms < 50 or self.fall < 1 or self.rise < 1:
            raise ValueError(f"health check: interval_ms >= 50, fall >= 1 and rise >= 1 (got {self})")


@dataclass
class ClusterConfig:
    repository: Path
    replicas: int = 2
    models: list[str] | None = None  # None: every model of the repository
    grpc_port: int = 0  # the balancer's addresses; 0 picks a free port
    http_port: int = 0
    prometheus_port: int = 0  # 0 picks a free port; None: no Prometheus
    prometheus: bool = True
    scrape_interval_s: float = 1.0
    health: HealthCheck = field(default_factory=HealthCheck)
    workdir: Path | None = None  # configs and logs; None: a temporary directory
    admin_key: str | None = None  # one key for every replica (drain = unload a model with it)

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ValueError(f"cluster: replicas must be >= 1, got {self.replicas}")
        if not Path(self.repository).is_dir():
            raise ClusterError(f"model repository {self.repository} does not exist")


def haproxy_config(
    grpc_port: int, http_port: int, replicas: list[TritonServer], health: HealthCheck, sock: Path
) -> str:
    check = f"check inter {health.interval_ms} fall {health.fall} rise {health.rise}"
    grpc_servers = "\n".join(
        # The check goes to the replica's HTTP port over HTTP/1.1; the traffic to its gRPC port over h2.
        f"    server r{i} {r.grpc_url} proto h2 {check} port {r.config.http_port} check-proto h1"
        for i, r in enumerate(replicas)
    )
    http_servers = "\n".join(f"    server r{i} {r.http_url} {check}" for i, r in enumerate(replicas))
    return f"""global
    maxconn 4096
    stats socket {sock} mode 600 level admin

defaults
    mode http
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    # A replica that refuses the connection (killed, restarting): the request goes to another one.
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout
    option httpchk
    http-check send meth GET uri /v2/health/ready
    http-check expect status 200

frontend grpc
    bind 127.0.0.1:{grpc_port} proto h2
    default_backend grpc_replicas

frontend http
    bind 127.0.0.1:{http_port}
    default_backend http_replicas

backend grpc_replicas
    balance roundrobin
{grpc_servers}

backend http_replicas
    balance roundrobin
{http_servers}
"""


def prometheus_config(replicas: list[TritonServer], scrape_interval_s: float, rules: Path) -> str:
    targets = [
        {"targets": [f"{r.config.address}:{r.config.metrics_port}"], "labels": {"replica": f"r{i}"}}
        for i, r in enumerate(replicas)
    ]
    return json.dumps(  # YAML is a superset of JSON: no YAML writer needed
        {
            "global": {"scrape_interval": f"{scrape_interval_s:g}s", "evaluation_interval": f"{scrape_interval_s:g}s"},
            "rule_files": [str(rules)],
            "scrape_configs": [{"job_name": "triton", "static_configs": targets}],
        },
        indent=1,
    )


def prometheus_rules() -> str:
    return json.dumps({"groups": [{"name": "triton", "rules": [{"record": QUEUE_TIME_RULE, "expr": QUEUE_TIME_EXPR}]}]})


def _binary(name: str) -> str:
    path = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").is_file() else None)
    if path is None:
        raise ClusterError(f"{name} is not installed: make system-deps (Debian package {name})")
    return path


class Cluster:
    """Replicas + haproxy + Prometheus; a context manager. `grpc_url`/`http_url` are the balancer's addresses."""

    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        self.workdir = Path(config.workdir or tempfile.mkdtemp(prefix="mobilebert-cluster-"))
        self.replicas: list[TritonServer] = []
        self.balancer: subprocess.Popen | None = None
        self.prometheus: subprocess.Popen | None = None
        grpc_port, http_port, prom_port = free_ports(3)
        self.grpc_port = config.grpc_port or grpc_port
        self.http_port = config.http_port or http_port
        self.prometheus_port = config.prometheus_port or prom_port

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"

    def start(self, timeout_s: float = 300.0) -> Cluster:
        haproxy, prometheus = _binary("haproxy"), _binary("prometheus") if self.config.prometheus else None
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            for i in range(self.config.replicas):
                self.replicas.append(
                    start_on_free_ports(
                        self.config.repository,
                        models=self.config.models,
                        log_file=self.workdir / f"replica-r{i}.log",
                        admin_key=self.config.admin_key,
                        timeout_s=timeout_s,
                    )
                )
            cfg = self.workdir / "haproxy.cfg"
            cfg.write_text(
                haproxy_config(
                    self.grpc_port, self.http_port, self.replicas, self.config.health, self.workdir / "haproxy.sock"
                )
            )
            self.balancer = _spawn([haproxy, "-db", "-f", str(cfg)], self.workdir / "haproxy.log")
            if prometheus is not None:
                rules = self.workdir / "rules.yml"
                rules.write_text(prometheus_rules())
                prom_cfg = self.workdir / "prometheus.yml"
                prom_cfg.write_text(prometheus_config(self.replicas, self.config.scrape_interval_s, rules))
                self.prometheus = _spawn(
                    [
                        prometheus,
                        f"--config.file={prom_cfg}",
                        f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                        f"--web.listen-address=127.0.0.1:{self.prometheus_port}",
                    ],
                    self.workdir / "prometheus.log",
                )
            self.wait_until_routed(range(len(self.replicas)), timeout_s=30.0)
            if self.prometheus is not None:
                self._wait_for_prometheus(timeout_s=30.0)
        except BaseException:
            self.stop()
            raise
        return self

    # -- the balancer's view -----------------------------------------------------------------------------------------

    def backend_status(self, backend: str = "grpc_replicas") -> dict[str, str]:
        """haproxy's status of each replica (UP, DOWN, ...), from its stats socket."""
        import socket

        with contextlib.closing(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)) as s:
            s.settimeout(2.0)
            s.connect(str(self.workdir / "haproxy.sock"))
            s.sendall(b"show stat\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        lines = data.decode().splitlines()
        header = lines[0].lstrip("# ").split(",")
        status = {}
        for line in lines[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("pxname") == backend and row.get("svname", "").startswith("r"):
                status[row["svname"]] = row["status"].split(" ")[0]
        return status

    def wait_until_routed(self, replicas, up: bool = True, timeout_s: float = 30.0) -> float:
        """Wait until haproxy reports each replica of `replicas` UP (or, with up=False, DOWN) in both backends;
        returns the seconds it took."""
        want = "UP" if up else "DOWN"
        started, states = time.monotonic(), []
        while time.monotonic() - started < timeout_s:
            self._check_alive()
            try:
                states = [self.backend_status(b) for b in ("grpc_replicas", "http_replicas")]
            except OSError:  # the stats socket is not there yet: haproxy is starting
                states = []
            if states and all(s.get(f"r{i}") == want for s in states for i in replicas):
                return time.monotonic() - started
            time.sleep(0.05)
        raise ClusterError(f"replicas {list(replicas)} not {want} in haproxy after {timeout_s:.0f}s: {states}")

    # -- Prometheus ---------------------------------------------------------------------------------------------------

    def query(self, expr: str) -> dict[str, float]:
        """A Prometheus instant query; {replica label: value}."""
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=5.0) as response:
            body = json.load(response)
        if body.get("status") != "success":
            raise ClusterError(f"Prometheus query {expr!r} failed: {body}")
        return {r["metric"].get("replica", ""): float(r["value"][1]) for r in body["data"]["result"]}

    def queue_time_per_request_us(self) -> dict[str, float]:
        return self.query(QUEUE_TIME_RULE)

    def _wait_for_prometheus(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._check_alive()
            with contextlib.suppress(OSError, ValueError, ClusterError):
                up = self.query("up")
                if len(up) == len(self.replicas) and all(v == 1.0 for v in up.values()):
                    return
            time.sleep(0.2)
        raise ClusterError(
            f"Prometheus does not scrape every replica after {timeout_s:.0f}s; log {self._tail('prometheus.log')}"
        )

    # -- life cycle ---------------------------------------------------------------------------------------------------

    def kill_replica(self, index: int) -> None:
        """SIGKILL a replica's whole process group (server and backend stubs), as a crashed host."""
        server = self.replicas[index]
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait()

    def restart_replica(self, index: int, timeout_s: float = 300.0) -> None:
        """Start a stopped or killed replica again on its own ports (the balancer knows those)."""
        server = self.replicas[index]
        server.stop()
        server.start(timeout_s)

    def _check_alive(self) -> None:
        for name, proc in (("haproxy", self.balancer), ("prometheus", self.prometheus)):
            if proc is not None and proc.poll() is not None:
                raise ClusterError(f"{name} exited (code {proc.returncode}): {self._tail(name + '.log')}")

    def _tail(self, name: str, lines: int = 20) -> str:
        with contextlib.suppress(FileNotFoundError):
            return "\n".join((self.workdir / name).read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    def processes(self) -> list[int]:
        """Every process id this cluster started (replicas, their stubs' group leaders, balancer, Prometheus)."""
        procs = [r.process for r in self.replicas] + [self.balancer, self.prometheus]
        return [p.pid for p in procs if p is not None]

    def stop(self) -> None:
        for proc in (self.balancer, self.prometheus):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for server in self.replicas:
            server.stop()
            shutil.rmtree(server._workdir, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self.start() if not self.replicas else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _spawn(command: list[str], log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def main(argv: list[str] | None = None) -> int:
    """`python -m deploy cluster`: start the cluster on a built repository and keep it up until Ctrl-C."""
    import argparse
    import sys
    import threading

    from .build import read_build_record

    parser = argparse.ArgumentParser(prog="python -m deploy cluster", description=__doc__)
    parser.add_argument("--repository", type=Path, default=Path("triton_repo"))
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--grpc-port", type=int, default=8001, help="the balancer's gRPC port")
    parser.add_argument("--http-port", type=int, default=8000, help="the balancer's HTTP port")
    parser.add_argument("--prometheus-port", type=int, default=9090)
    parser.add_argument("--workdir", type=Path, default=Path("artifacts/cluster"))
    args = parser.parse_args(argv)
    record = read_build_record(args.repository)
    if record is None:
        print(f"cluster failed: {args.repository} is not built; run python -m deploy build --demo", file=sys.stderr)
        return 1
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        config = ClusterConfig(
            args.repository,
            replicas=args.replicas,
            models=record["models"],
            grpc_port=args.grpc_port,
            http_port=args.http_port,
            prometheus_port=args.prometheus_port,
            workdir=args.workdir,
        )
        with Cluster(config) as cluster:
            replicas = ", ".join(f"r{i} {r.grpc_url}" for i, r in enumerate(cluster.replicas))
            print(
                f"cluster READY: gRPC {cluster.grpc_url}, HTTP {cluster.http_url} (haproxy) -> {replicas}; "
                f"Prometheus {cluster.prometheus_url} (rule {QUEUE_TIME_RULE}); logs {cluster.workdir}. Ctrl-C stops.",
                flush=True,
            )
            while not stop.wait(1.0):
                cluster._check_alive()
        print("cluster stopped.")
    except (ServerError, ValueError) as exc:
        print(f"cluster failed: {exc}", file=sys.stderr)
        return 1
    return 0
