"""deploy.server starts the real pip-installed tritonserver, waits for READY, reports load failures, stops cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

import deploy.server as server_module
from deploy.server import PortTaken, ServerConfig, ServerError, TritonServer, free_port, start_on_free_ports

# Functional tier: real Triton servers or ONNX exports (`make test-quick` leaves these out).
pytestmark = pytest.mark.functional

ECHO_CONFIG = """
name: "{name}"
backend: "python"
max_batch_size: 8
input [ {{ name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] }} ]
output [ {{ name: "LENGTH" data_type: TYPE_INT64 dims: [ 1 ] }} ]
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
"""

ECHO_MODEL = textwrap.dedent(
    """
    import numpy as np
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def initialize(self, args):
            {init}

        def execute(self, requests):
            responses = []
            for request in requests:
                texts = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
                lengths = np.array([[len(t[0])] for t in texts], dtype=np.int64)
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("LENGTH", lengths)]))
            return responses
    """
)


def _model(repo: Path, name: str, init: str = "pass") -> None:
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(ECHO_CONFIG.format(name=name))
    (repo / name / "1" / "model.py").write_text(ECHO_MODEL.format(init=init))


def _config(repo: Path, tmp_path: Path) -> ServerConfig:
    return ServerConfig(
        repository=repo,
        grpc_port=free_port(),
        http_port=free_port(),
        metrics_port=free_port(),
        log_file=tmp_path / "server.log",
    )


def test_server_serves_a_python_model_and_stops_cleanly(tmp_path):
    repo = tmp_path / "repo"
    _model(repo, "echo")
    server = TritonServer(_config(repo, tmp_path))
    with server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        assert client.is_server_ready() and client.is_model_ready("echo")
        text = grpcclient.InferInput("TEXT", [2, 1], "BYTES")
        text.set_data_from_numpy(np.array([[b"hello"], [b"hi"]], dtype=object))
        assert client.infer("echo", [text]).as_numpy("LENGTH").ravel().tolist() == [5, 2]
        pid = server.process.pid
    assert server.process.returncode == 0
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_model_that_fails_to_load_raises_with_the_servers_error(tmp_path):
    repo = tmp_path / "repo"
    _model(repo, "broken", init='raise RuntimeError("tokenizer.json is missing")')
    server = TritonServer(_config(repo, tmp_path))
    with pytest.raises(ServerError) as err:
        server.start(timeout_s=60)
    assert "tokenizer.json is missing" in str(err.value)
    assert server.process.poll() is not None


def test_port_in_use_and_missing_repository_are_clear_errors(tmp_path):
    repo = tmp_path / "repo"
    _model(repo, "echo")
    config = _config(repo, tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", config.grpc_port))
        busy.listen()
        with pytest.raises(ServerError, match=f"port {config.grpc_port} on 127.0.0.1 is already in use"):
            TritonServer(config).start()
    config.repository = tmp_path / "nowhere"
    with pytest.raises(ServerError, match=r"model repository .* does not exist"):
        TritonServer(config).start()


def test_serve_command_reports_ready_and_stops_on_sigterm(tmp_path):
    repo = tmp_path / "repo"
    _model(repo, "echo")
    ports = [str(free_port()) for _ in range(3)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "deploy", "serve", "--repository", str(repo), "--grpc-port", ports[0],
         "--http-port", ports[1], "--metrics-port", ports[2], "--log-file", str(tmp_path / "serve.log")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = proc.stdout.readline()
        assert "Triton is READY" in line and f"127.0.0.1:{ports[0]}" in line and "serve.log" in line
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{ports[0]}")
        assert client.is_model_ready("echo")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "Triton stopped (exit code 0)" in out
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            client.is_server_live()
        except Exception:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the server still answers after the serve command stopped")


class _AlwaysReady(BaseHTTPRequestHandler):
    """Another server on a port we picked: answers READY to every health check, as a second Triton would."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _ready_impostor(port: int) -> ThreadingHTTPServer:
    impostor = ThreadingHTTPServer(("127.0.0.1", port), _AlwaysReady)
    threading.Thread(target=impostor.serve_forever, daemon=True).start()
    return impostor


def test_a_start_that_loses_a_port_mid_start_is_not_ready_even_when_another_server_answers_ready(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    _model(repo, "echo")
    config = _config(repo, tmp_path)
    impostor = _ready_impostor(config.http_port)
    # The race: the port was free when checked, another process bound it before tritonserver did.
    monkeypatch.setattr(server_module, "_ensure_port_free", lambda address, port: None)
    server = TritonServer(config)
    try:
        with pytest.raises(PortTaken, match="already in use"):
            server.start(timeout_s=60)
    finally:
        impostor.shutdown()
        impostor.server_close()
        server.stop()
    assert server.process.poll() is not None


def test_start_on_free_ports_retries_a_lost_port_race_on_new_ports(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    _model(repo, "echo")
    taken = free_port()
    impostor = _ready_impostor(taken)
    picks: list[list[int]] = []
    real = server_module.free_ports

    def first_pick_loses(count: int, address: str = "127.0.0.1") -> list[int]:
        ports = real(count, address)
        picks.append([taken, *ports[1:]] if not picks else ports)
        return picks[-1]

    monkeypatch.setattr(server_module, "free_ports", first_pick_loses)
    try:
        with start_on_free_ports(repo, log_file=tmp_path / "server.log") as server:
            assert len(picks) == 2 and server.config.grpc_port == picks[1][0] != taken
            assert grpcclient.InferenceServerClient(server.grpc_url).is_model_ready("echo")
    finally:
        impostor.shutdown()
        impostor.server_close()
    assert server.process.returncode == 0


def test_start_on_free_ports_does_not_retry_a_crash_and_shows_its_log(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    _model(repo, "broken", init='raise RuntimeError("tokenizer.json is missing")')
    starts = []
    real_start = TritonServer.start
    monkeypatch.setattr(TritonServer, "start", lambda self, *a, **k: starts.append(self) or real_start(self, *a, **k))
    with pytest.raises(ServerError, match=r"tokenizer\.json is missing") as err:
        start_on_free_ports(repo, log_file=tmp_path / "server.log", timeout_s=60)
    assert not isinstance(err.value, PortTaken) and len(starts) == 1
    assert starts[0].process.poll() is not None
    with pytest.raises(ValueError, match="picks the ports itself"):
        start_on_free_ports(repo, grpc_port=8001)
