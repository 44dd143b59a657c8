"""`python -m deploy`: build the Triton model repository from checkpoints, and serve it.

python -m deploy build --demo                  # demo checkpoints -> export -> triton_repo/
python -m deploy build --checkpoint DIR        # every task DIR's architecture serves
python -m deploy serve                         # the pip-installed tritonserver on triton_repo/, until Ctrl-C
python -m deploy image --debian-base           # the container image (deploy/container/), built and served here
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import sys
import threading
from pathlib import Path

from export.cpu import cpu_signature

# Serving imports no build module at load time: the container image has no torch/onnx (deploy/container/).
from .build_record import read_build_record
from .cpu_check import graphs_not_validated_here
from .model_configs import BatchingSettings, CpuSettings
from .server import ADMIN_HEADER, GRPC_ADMIN_HEADER, ServerConfig, ServerError, ServerTls, TritonServer
from .tasks import DEPLOYMENTS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m deploy", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="the main job end to end: build, serve, call every task, throughput", add_help=False)
    sub.add_parser("soak", help="sustained load on every task with failures and memory reported", add_help=False)
    sub.add_parser("cluster", help="replicas behind haproxy, with Prometheus (deploy/cluster.py)", add_help=False)
    sub.add_parser("image", help="build the container image with podman and serve it here", add_help=False)
    build = sub.add_parser("build", help="checkpoint(s) -> export of every head -> a complete model repository")
    source = build.add_mutually_exclusive_group(required=True)
    source.add_argument("--demo", action="store_true", help="the demo checkpoints (random weights; written if absent)")
    source.add_argument("--checkpoint", type=Path, help="a Hugging Face checkpoint dir, or a dir of per-kind ones")
    build.add_argument("--small", action="store_true", help="with --demo: 2-layer demo checkpoints (fast, tests)")
    build.add_argument("--task", action="append", choices=sorted(DEPLOYMENTS), help="only these tasks (repeatable)")
    build.add_argument("--task-checkpoint", action="append", default=[], metavar="TASK=DIR")
    build.add_argument("--repository", type=Path, default=Path("triton_repo"))
    build.add_argument("--export-dir", type=Path, default=Path("artifacts/onnx"))
    build.add_argument("--max-batch-size", type=int, default=BatchingSettings.max_batch_size)
    build.add_argument("--queue-delay-us", type=int, default=BatchingSettings.max_queue_delay_us)
    build.add_argument("--threads", type=int, default=CpuSettings.intra_op_threads, help="threads per inference")
    build.add_argument("--instances", type=int, default=CpuSettings.instances, help="runner instances per graph")
    build.add_argument(
        "--streams", type=int, default=CpuSettings.streams, help="parallel inferences per instance (one weight copy)"
    )
    build.add_argument(
        "--max-run-tokens",
        type=int,
        default=CpuSettings.max_run_tokens,
        help="tokens one engine run holds at most (larger batches run as slices: bounded memory)",
    )
    build.add_argument(
        "--runs-in-order",
        action="store_true",
        help="run a batch's rows in arrival order, not rows of similar length together (less padding)",
    )
    build.add_argument(
        "--engine",
        choices=("auto", "onnxruntime", "openvino"),
        default=CpuSettings.engine,
        help="CPU engine: auto = the fastest validated one, measured on this CPU at build time",
    )
    build.add_argument(
        "--engine-extra-mb-per-task",
        type=float,
        help="memory the chosen engines may take beyond each task's leanest candidate, per task, summed over the "
        "repository, in MB (default: deploy.engine_choice.EngineTrial's, 16): a faster engine serves where it fits",
    )
    build.add_argument("--force", action="store_true", help="export heads whose weights the checkpoint lacks")
    serve = sub.add_parser("serve", help="start tritonserver and wait until every model is READY")
    serve.add_argument("--repository", type=Path, default=Path("triton_repo"))
    serve.add_argument("--grpc-port", type=int, default=8001)
    serve.add_argument("--http-port", type=int, default=8000)
    serve.add_argument("--metrics-port", type=int, default=8002)
    serve.add_argument("--address", default="127.0.0.1", help="listen address (loopback unless told otherwise)")
    serve.add_argument("--model-config-name", help="alternative config under <model>/configs/, e.g. gpu")
    serve.add_argument("--log-file", type=Path, default=Path("artifacts/logs/tritonserver.log"))
    serve.add_argument("--ready-timeout", type=float, default=300.0)
    serve.add_argument(
        "--admin-key-file",
        type=Path,
        default=Path("artifacts/admin.key"),
        help="where the key for model control / shared memory endpoints is read (or, if absent, written, mode 0600)",
    )
    serve.add_argument("--tls-cert", type=Path, help="serve gRPC over TLS with this PEM certificate ...")
    serve.add_argument("--tls-key", type=Path, help="... and this PEM private key")
    serve.add_argument("--tls-client-ca", type=Path, help="require client certificates signed by this CA (mutual TLS)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["demo"]:  # the demo and the soak have their own options (deploy/demo.py, deploy/soak.py)
        from .demo import main as demo_main

        return demo_main(argv[1:])
    if argv[:1] == ["cluster"]:
        from .cluster import main as cluster_main

        return cluster_main(argv[1:])
    if argv[:1] == ["image"]:  # deploy/image.py: the container image (podman)
        from .image import main as image_main

        return image_main(argv[1:])
    if argv[:1] == ["soak"]:
        from .soak import main as soak_main

        return soak_main(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("deploy").setLevel(logging.INFO)
    logging.getLogger("export").setLevel(logging.INFO)
    if args.command == "build":
        return _build(args)
    return _serve(args)


def _build(args: argparse.Namespace) -> int:
    from export.errors import ExportError

    from .build import BuildError, BuildSettings, build_repository
    from .build_plan import build_summary, deployment_plan
    from .engine_choice import EngineTrial

    try:
        overrides = dict(_parse_override(t) for t in args.task_checkpoint)
        plan = deployment_plan(
            None if args.demo else args.checkpoint, small=args.small, tasks=args.task, overrides=overrides
        )
        settings = BuildSettings(
            batching=BatchingSettings(
                max_batch_size=args.max_batch_size,
                max_queue_delay_us=args.queue_delay_us,
                preferred_batch_sizes=tuple(
                    b for b in BatchingSettings.preferred_batch_sizes if b <= args.max_batch_size
                ),
            ),
            cpu=CpuSettings(
                intra_op_threads=args.threads,
                instances=args.instances,
                streams=args.streams,
                max_run_tokens=args.max_run_tokens,
                pack_runs=not args.runs_in_order,
                engine=args.engine,
            ),
            export_dir=args.export_dir,
            engine_trial=EngineTrial()
            if args.engine_extra_mb_per_task is None
            else EngineTrial(extra_mb_per_task=args.engine_extra_mb_per_task),
        )
        settings.export.force = args.force
        record = build_repository(args.repository, plan, settings)
    except (BuildError, ExportError, ValueError) as exc:
        print(f"build failed: {exc}", file=sys.stderr)
        return 1
    print(build_summary(record, args.repository))
    return 0


def _parse_override(text: str) -> tuple[str, Path]:
    task, sep, directory = text.partition("=")
    if not sep or task not in DEPLOYMENTS:
        raise ValueError(f"--task-checkpoint expects TASK=DIR with TASK one of {sorted(DEPLOYMENTS)}, got {text!r}")
    return task, Path(directory).expanduser()


def _admin_key(path: Path) -> str:
    """The admin key from `path`, or a new random one written there readable by the owner only."""
    if path.is_file():
        key = path.read_text(encoding="utf-8").strip()
        if key:
            return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(key + "\n")
    return key


def _serve(args: argparse.Namespace) -> int:
    record = read_build_record(args.repository)
    unproven = graphs_not_validated_here(args.repository)
    if unproven:
        cpu = cpu_signature()
        print(
            f"warning: {len(unproven)} graphs passed their fidelity gates on other CPUs only, not on this one "
            f"({cpu['model']}; {' '.join(cpu['isa'])}): {', '.join(unproven)}. Run `python -m deploy build` here "
            "to validate them on this CPU's kernels.",
            file=sys.stderr,
        )
    if (args.tls_cert is None) != (args.tls_key is None):
        print("serve failed: --tls-cert and --tls-key go together", file=sys.stderr)
        return 1
    try:
        tls = ServerTls(args.tls_cert, args.tls_key, args.tls_client_ca) if args.tls_cert else None
    except ServerError as exc:
        print(f"serve failed: {exc}", file=sys.stderr)
        return 1
    try:
        admin_key = _admin_key(args.admin_key_file)
    except OSError as exc:  # e.g. a read-only secret mount without the key file
        print(f"serve failed: cannot read or create the admin key file {args.admin_key_file}: {exc}", file=sys.stderr)
        return 1
    config = ServerConfig(
        repository=args.repository,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        address=args.address,
        model_config_name=args.model_config_name,
        log_file=args.log_file,
        models=record["models"] if record else None,
        admin_key=admin_key,
        tls=tls,
    )
    server = TritonServer(config)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        server.start(timeout_s=args.ready_timeout)
    except ServerError as exc:
        print(f"serve failed: {exc}\n(full log: {server.log_file})", file=sys.stderr)
        return 1
    print(
        f"Triton is READY: gRPC {server.grpc_url}, HTTP {server.http_url}, "
        f"metrics {config.address}:{config.metrics_port}; log {server.log_file}. Model control and shared memory "
        f"need the key in {args.admin_key_file} as header '{GRPC_ADMIN_HEADER}' (gRPC) / '{ADMIN_HEADER}' "
        "(HTTP). Ctrl-C to stop.",
        flush=True,
    )
    while not stop.wait(1.0):
        if server.process is not None and server.process.poll() is not None:
            print(
                f"tritonserver exited unexpectedly (code {server.process.returncode}):\n{server.errors()}",
                file=sys.stderr,
            )
            return 1
    code = server.stop()
    print(f"Triton stopped (exit code {code}).")
    return 0
