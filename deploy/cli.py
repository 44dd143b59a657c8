"""`python -m deploy serve`: run the pip-installed Triton server on a model repository until Ctrl-C / SIGTERM."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from .server import ServerConfig, ServerError, TritonServer


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m deploy", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="start tritonserver and wait until every model is READY")
    serve.add_argument("--repository", type=Path, default=Path("triton_repo"))
    serve.add_argument("--grpc-port", type=int, default=8001)
    serve.add_argument("--http-port", type=int, default=8000)
    serve.add_argument("--metrics-port", type=int, default=8002)
    serve.add_argument("--address", default="127.0.0.1", help="listen address (loopback unless told otherwise)")
    serve.add_argument("--model-config-name", help="alternative config under <model>/configs/, e.g. gpu")
    serve.add_argument("--log-file", type=Path, default=Path("artifacts/logs/tritonserver.log"))
    serve.add_argument("--ready-timeout", type=float, default=300.0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = ServerConfig(
        repository=args.repository,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        address=args.address,
        model_config_name=args.model_config_name,
        log_file=args.log_file,
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
        f"metrics {config.address}:{config.metrics_port}; log {server.log_file}. Ctrl-C to stop.",
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
