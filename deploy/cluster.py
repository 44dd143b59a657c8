"""A local scale-out deployment, shaped like Triton's k8s-onprem chart: N replicas behind one load balancer, and
Prometheus scraping every replica with the autoscaling signal (queue time per request) as a recording rule.

Balancer: haproxy (Debian), not nginx. Open-source nginx has only passive failure detection (max_fails on errors
of real requests), so a replica that reports NOT READY (drained: its model unloaded) keeps getting traffic until
requests fail. haproxy checks every replica actively on Triton's HTTP /v2/health/ready and on
/v2/models/<task>/ready of every task the cluster serves, and routes gRPC (h2 on both sides, balanced per request,
i.e. per h2 stream) only to replicas that pass; a connection failure is retried on another replica
(`retry-on conn-failure`) before the client sees it. The per-task checks are needed because Triton's strict
readiness counts only *loaded* models: a replica whose model was unloaded (drained) still answers 200 on
/v2/health/ready (measured on tritonserver 2.51).

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

from .server import GRPC_ADMIN_HEADER, READY_PATH, ServerError, TritonServer, free_ports, start_on_free_ports
from .tasks import DEPLOYMENTS

# The prometheus-adapter rule (Triton's k8s-onprem chart), kept per replica: the HPA signal, target 50 us.
QUEUE_TIME_RULE = "queue_time_per_request_us"
QUEUE_TIME_EXPR = (
    "avg by (replica) (delta(nv_inference_queue_duration_us[30s]) / (1 + delta(nv_inference_request_success[30s])))"
)


class ClusterError(ServerError):
    """A part of the cluster (replica, balancer, Prometheus) could not be started or is missing."""


@dataclass(frozen=True)
class HealthCheck:
    """haproxy's active check of each replica (server ready, then each served task ready): every `interval_ms`,
    down after `fall` failures, back after `rise` successes. A dead replica refuses the connection and a drained one
    answers 400 at once, so either stops being routed to within about fall x interval. A replica that hangs is
    caught by `timeout_ms` (the longest a check may wait for an answer): fall x (interval + timeout). The timeout is
    generous because on a busy machine a live Triton can take more than one interval to answer, and a check that
    times out twice would take a healthy replica out of rotation."""

    interval_ms: int = 500
    fall: int = 2
    rise: int = 2
    timeout_ms: int = 2000

    def __post_init__(self) -> None:
        if self.interval_ms < 50 or self.fall < 1 or self.rise < 1 or self.timeout_ms < 1:
            raise ValueError(f"health check: interval_ms >= 50, fall, rise and timeout_ms >= 1 (got {self})")

    def stop_routing_bound_s(self, margin_s: float = 1.0) -> float:
        """The longest a dead or drained replica keeps being routed to: the first failing check comes at most one
        interval after the failure, then `fall - 1` more; `margin_s` covers a busy machine's scheduling delays."""
        return self.fall * self.interval_ms / 1000 + margin_s

    def rejoin_bound_s(self, margin_s: float = 1.0) -> float:
        """The longest from a replica READY again to haproxy routing to it (`rise` passing checks)."""
        return self.rise * self.interval_ms / 1000 + margin_s


@dataclass
class ClusterConfig:
    repository: Path
    replicas: int = 2
    models: list[str] | None = None  # None: every model of the repository
    grpc_port: int = 0  # the balancer's addresses; 0 picks a free port
    http_port: int = 0
    prometheus_port: int = 0  # 0 picks a free port; None: no Prometheus
    prometheus: bool = True
    # Short on purpose: the queue-time signal must move within seconds of load here (tests, drills); a real
    # cluster scrapes every 15-30 s (the rule's 30 s window still sees two samples at 15 s).
    scrape_interval_s: float = 1.0
    health: HealthCheck = field(default_factory=HealthCheck)
    workdir: Path | None = None  # configs and logs; None: a temporary directory
    admin_key: str | None = None  # one key for every replica (drain = unload a model with it)

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ValueError(f"cluster: replicas must be >= 1, got {self.replicas}")
        if self.scrape_interval_s <= 0:
            raise ValueError(f"cluster: scrape_interval_s must be > 0, got {self.scrape_interval_s}")
        if not Path(self.repository).is_dir():
            raise ClusterError(f"model repository {self.repository} does not exist")

    def served_tasks(self) -> list[str]:
        """The task ensembles clients call: each is checked for readiness on every replica."""
        if self.models is not None:
            return [m for m in self.models if m in DEPLOYMENTS]
        return [t for t in DEPLOYMENTS if (Path(self.repository) / t / "config.pbtxt").is_file()]


def haproxy_config(
    grpc_port: int,
    http_port: int,
    replicas: list[TritonServer],
    health: HealthCheck,
    sock: Path,
    tasks: list[str] | None = None,
) -> str:
    """haproxy's config: gRPC (h2) and HTTP frontends, one backend each over the same replicas. Only the HTTP
    backend runs the checks (server ready, then every task in `tasks` ready, each on its own connection); the gRPC
    backend's servers `track` them, so both backends agree and each replica is probed once per interval."""
    check = f"check inter {health.interval_ms} fall {health.fall} rise {health.rise}"
    grpc_servers = "\n".join(
        f"    server r{i} {r.grpc_url} proto h2 track http_replicas/r{i}" for i, r in enumerate(replicas)
    )
    http_servers = "\n".join(f"    server r{i} {r.http_url} {check}" for i, r in enumerate(replicas))
    checks = "\n".join(
        f"    http-check connect default\n    http-check send meth GET uri {uri}\n    http-check expect status 200"
        for uri in [READY_PATH, *(f"/v2/models/{t}/ready" for t in tasks or [])]
    )
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
    timeout check {health.timeout_ms}ms
    option httpchk
{checks}
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
        # Absolute: haproxy reads a relative `stats socket` path as an address and refuses the config.
        self.workdir = Path(config.workdir or tempfile.mkdtemp(prefix="mobilebert-cluster-")).resolve()
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
                    self.grpc_port,
                    self.http_port,
                    self.replicas,
                    self.config.health,
                    self.workdir / "haproxy.sock",
                    self.config.served_tasks(),
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

    def _balancer_command(self, command: str) -> str:
        """One command on haproxy's admin socket (it answers, then closes the connection)."""
        import socket

        with contextlib.closing(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)) as s:
            s.settimeout(2.0)
            s.connect(str(self.workdir / "haproxy.sock"))
            s.sendall(command.encode() + b"\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return data.decode()

    def set_maintenance(self, index: int, on: bool) -> None:
        """Take a replica out of (or back into) rotation in the balancer, as an operator would: MAINT on the checked
        server propagates to the gRPC backend's tracking one. The replica itself keeps running."""
        answer = self._balancer_command(f"set server http_replicas/r{index} state {'maint' if on else 'ready'}")
        if answer.strip():
            raise ClusterError(f"haproxy refused to change r{index}: {answer.strip()}")

    def replica_stats(self, backend: str = "grpc_replicas") -> dict[str, dict[str, str]]:
        """haproxy's `show stat` row of each replica in `backend` (status, stot: requests sent, wretr: retries,
        wredis: redispatches to another replica, eresp: response errors, ...)."""
        lines = self._balancer_command("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        rows = {}
        for line in lines[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("pxname") == backend and row.get("svname", "").startswith("r"):
                rows[row["svname"]] = row
        return rows

    def backend_status(self, backend: str = "grpc_replicas") -> dict[str, str]:
        """haproxy's status of each replica (UP, DOWN, MAINT, ...), from its stats socket."""
        return {name: row["status"].split(" ")[0] for name, row in self.replica_stats(backend).items()}

    def balancer_counters(self, backend: str = "grpc_replicas") -> dict[str, int]:
        """Retries, redispatches and response errors summed over the replicas of `backend`."""
        rows = self.replica_stats(backend).values()
        return {key: sum(int(r.get(key) or 0) for r in rows) for key in ("wretr", "wredis", "eresp", "econ")}

    def wait_until_routed(self, replicas, up: bool = True, timeout_s: float = 30.0) -> float:
        """Wait until haproxy reports each replica of `replicas` UP (or, with up=False, out of rotation: DOWN or in
        MAINT) in both backends; returns the seconds it took."""
        started, states = time.monotonic(), []
        while time.monotonic() - started < timeout_s:
            self._check_alive()
            try:
                states = [self.backend_status(b) for b in ("grpc_replicas", "http_replicas")]
            except OSError:  # the stats socket is not there yet: haproxy is starting
                states = []
            if states and all((s.get(f"r{i}") == "UP") == up and f"r{i}" in s for s in states for i in replicas):
                return time.monotonic() - started
            time.sleep(0.05)
        want = "UP" if up else "out of rotation"
        raise ClusterError(f"replicas {list(replicas)} not {want} in haproxy after {timeout_s:.0f}s: {states}")

    def in_flight(self, index: int) -> int:
        """Requests haproxy has sent to a replica and not yet seen answered (`scur` of its gRPC and HTTP servers)."""
        return sum(int(self.replica_stats(b)[f"r{index}"].get("scur") or 0) for b in ("grpc_replicas", "http_replicas"))

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
        """SIGKILL a replica's whole process group (server and backend stubs), as a crashed host. Its watchdog (a
        thread of this process, part of `deploy serve` on a real host) goes with it rather than trying to heal
        stubs of a dead server."""
        server = self.replicas[index]
        if server.watchdog is not None:
            server.watchdog.stop()
            server.watchdog = None
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait()

    def drain_replica(self, index: int, graceful: bool = False, timeout_s: float = 30.0) -> None:
        """Unload every served task's ensemble on one replica with its admin key: it then reports not ready on
        /v2/models/<task>/ready, the balancer's checks fail, and it gets no new traffic. The composing models stay
        loaded (an ensemble has no stub of its own, so the watchdog leaves it alone). Requests the balancer routes
        to it between the unload and its next failing check get Triton's "unknown model" error; `graceful` first
        takes it out of rotation in haproxy (MAINT) and waits (up to `timeout_s`) for its requests in flight."""
        import tritonclient.grpc as grpcclient

        if graceful:
            self.set_maintenance(index, on=True)
            deadline = time.monotonic() + timeout_s
            while self.in_flight(index) and time.monotonic() < deadline:
                time.sleep(0.05)
        server = self.replicas[index]
        client = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            for task in self.config.served_tasks():
                client.unload_model(task, headers={GRPC_ADMIN_HEADER: server.admin_key})
        finally:
            client.close()

    def restore_replica(self, index: int, timeout_s: float = 300.0) -> None:
        """Load the served tasks of a drained replica again (returns once they are READY) and put it back in
        rotation if a graceful drain took it out; haproxy routes to it after `rise` passing checks."""
        import tritonclient.grpc as grpcclient

        server = self.replicas[index]
        client = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            for task in self.config.served_tasks():
                client.load_model(task, headers={GRPC_ADMIN_HEADER: server.admin_key}, client_timeout=timeout_s)
        finally:
            client.close()
        if self.backend_status("http_replicas").get(f"r{index}") == "MAINT":
            self.set_maintenance(index, on=False)

    def served_requests(self, index: int, model: str) -> int:
        """Successful requests of `model` on one replica so far (Triton's own statistics; they lag the reply by a
        little: compare figures read once the load has stopped)."""
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(self.replicas[index].grpc_url)
        try:
            stats = client.get_inference_statistics(model, as_json=True)
        finally:
            client.close()
        return sum(int(m["inference_stats"]["success"].get("count", 0)) for m in stats["model_stats"])

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


def _drills(cluster: Cluster) -> None:
    """`--drill`: the fault drills of tests/test_cluster.py on this cluster, figures printed."""
    from .cluster_drills import DrillLoad, drain_drill, kill_drill, queue_time_drill, reference_answers

    texts = [f"sentence number {i} has a [MASK] in it." for i in range(24)]
    health = cluster.config.health
    print(
        f"health check every {health.interval_ms} ms, fall {health.fall}, rise {health.rise}: stop-routing bound "
        f"{health.stop_routing_bound_s():.1f} s, rejoin bound {health.rejoin_bound_s():.1f} s",
        flush=True,
    )
    for line in queue_time_drill(cluster, texts, DrillLoad(threads=2, max_seconds=60.0)).lines():
        print(line, flush=True)
    for line in drain_drill(cluster, 0, texts, DrillLoad(threads=2, max_calls=100)).lines():
        print(line, flush=True)
    reference = reference_answers(cluster.replicas[-1].grpc_url, texts)
    report = kill_drill(cluster, 0, texts, reference, DrillLoad(threads=2, retries=60), load_through_restart=True)
    for line in report.lines():
        print(line, flush=True)


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
    parser.add_argument("--scrape-interval", type=float, default=1.0, help="Prometheus scrape interval, seconds")
    parser.add_argument("--check-interval-ms", type=int, default=HealthCheck.interval_ms, help="haproxy's checks")
    parser.add_argument("--fall", type=int, default=HealthCheck.fall, help="failed checks before a replica is DOWN")
    parser.add_argument("--rise", type=int, default=HealthCheck.rise, help="passed checks before it is UP again")
    parser.add_argument(
        "--drill",
        action="store_true",
        help="run the fault drills once (queue time idle/loaded, drain r0, SIGKILL r0 under load), print, stop",
    )
    args = parser.parse_args(argv)
    record = read_build_record(args.repository)
    if record is None:
        print(f"cluster failed: {args.repository} is not built; run python -m deploy build --demo", file=sys.stderr)
        return 1
    if args.drill and args.replicas < 2:
        print("cluster failed: the drills kill and drain a replica; they need --replicas 2 or more", file=sys.stderr)
        return 1
    if args.drill and "fill_mask" not in record.get("tasks", []):
        print("cluster failed: the drills load fill_mask, which this repository was built without", file=sys.stderr)
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
            scrape_interval_s=args.scrape_interval,
            health=HealthCheck(args.check_interval_ms, args.fall, args.rise),
        )
        with Cluster(config) as cluster:
            if args.drill:
                _drills(cluster)
                return 0
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
