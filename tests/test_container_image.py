"""The real container image: built with podman on this machine (debootstrap base), served, every task called through
the client and through curl on HTTP/JSON, answers compared with the non-container server, and a clean stop.

Slow (image build, and the session's repository build): marked `container`, deselected by `make test`; run it with
`make test-image`. Needs root (podman as root with runc; deploy.image installs podman, runc and debootstrap).
"""

from __future__ import annotations

import json
import math
import secrets
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from client import MobileBertClient
from deploy.image import DEBIAN_BASE, PODMAN, Container, ImageBuild, ensure_debian_base, ensure_host_tools
from deploy.server import free_port
from deploy.tasks import DEPLOYMENTS

pytestmark = pytest.mark.container
SCORE_TOLERANCE = 1e-3  # same graphs, same onnxruntime: only batching company moves INT8 scores, by ~1e-4
TIMINGS = Path("artifacts/image/test-timings.json")

CLIENT_CALLS = {
    "fill_mask": lambda b: b.fill_mask("The capital of France is [MASK].", top_k=3),
    "text_classification": lambda b: b.classify("What a wonderful, sunny day!", top_k=2),
    "next_sentence": lambda b: b.next_sentence("I went to the bakery.", "They had fresh bread."),
    "multiple_choice": lambda b: b.multiple_choice("Where is the Eiffel Tower?", ["Paris", "Rome", "Oslo"]),
    "token_classification": lambda b: b.tag("Ada Lovelace worked with Charles Babbage in London."),
    "question_answering": lambda b: b.answer("Where did Ada work?", "Ada Lovelace worked with Charles Babbage."),
    "feature_extraction": lambda b: b.embed(["A sentence to embed.", "Another one."]),
    "pretraining": lambda b: b.infer_tensors("pretraining", {"TEXT": np.array([[b"Raw heads."]], dtype=object)}),
}


def _bytes(name: str, rows: list[str]) -> dict:
    return {"name": name, "shape": [len(rows), 1], "datatype": "BYTES", "data": rows}


HTTP_BODIES = {
    "fill_mask": [_bytes("TEXT", ["Paris is the [MASK] of France."])],
    "text_classification": [_bytes("TEXT", ["A sunny day."])],
    "next_sentence": [_bytes("TEXT", ["I went out."]), _bytes("TEXT_PAIR", ["It rained."])],
    "multiple_choice": [
        {"name": "PROMPT", "shape": [1], "datatype": "BYTES", "data": ["Where is Rome?"]},
        {"name": "CHOICES", "shape": [2], "datatype": "BYTES", "data": ["Italy", "Peru"]},
    ],
    "token_classification": [_bytes("TEXT", ["Ada lives in London."])],
    "question_answering": [_bytes("QUESTION", ["Who?"]), _bytes("CONTEXT", ["Ada wrote it."])],
    "feature_extraction": [_bytes("TEXT", ["Embed me."])],
    "pretraining": [_bytes("TEXT", ["Raw heads."])],
}


def assert_close(container: object, local: object, where: str = "") -> None:
    """Same structure, same strings/labels/ids, floats within SCORE_TOLERANCE."""
    if isinstance(local, dict):
        assert isinstance(container, dict) and container.keys() == local.keys(), where
        for key in local:
            assert_close(container[key], local[key], f"{where}.{key}")
    elif isinstance(local, np.ndarray):
        assert isinstance(container, np.ndarray) and container.shape == local.shape, where
        if local.dtype.kind == "f":
            np.testing.assert_allclose(container, local, atol=SCORE_TOLERANCE, err_msg=where)
        else:
            assert np.array_equal(container, local), where
    elif isinstance(local, list | tuple):
        assert isinstance(container, list | tuple) and len(container) == len(local), where
        for i, (c, v) in enumerate(zip(container, local, strict=True)):
            assert_close(c, v, f"{where}[{i}]")
    elif isinstance(local, float):
        assert math.isclose(container, local, abs_tol=SCORE_TOLERANCE), f"{where}: {container} vs {local}"
    else:
        assert container == local, where


def curl_infer(http_url: str, task: str) -> dict:
    body = json.dumps({"inputs": HTTP_BODIES[task]})
    result = subprocess.run(
        ["curl", "-sS", "--fail-with-body", "-H", "Content-Type: application/json", "-d", body,
         f"http://{http_url}/v2/models/{task}/infer"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"curl {task}: {result.stdout} {result.stderr}"
    outputs = {o["name"]: o["data"] for o in json.loads(result.stdout)["outputs"]}
    # RESULT rows are JSON documents themselves
    return {k: [json.loads(r) for r in v] if k == "RESULT" else v for k, v in outputs.items()}


def curl_status(http_url: str, path: str, headers: dict[str, str] | None = None) -> int:
    args = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", f"http://{http_url}{path}"]
    for key, value in (headers or {}).items():
        args += ["-H", f"{key}: {value}"]
    return int(subprocess.run(args, capture_output=True, text=True, timeout=30, check=True).stdout)


@pytest.fixture(scope="module")
def image(built_repository, tmp_path_factory):
    repository, _ = built_repository
    timings = {}
    start = time.monotonic()
    ensure_host_tools()
    ensure_debian_base()
    timings["host tools + debian base"] = time.monotonic() - start
    tag = f"localhost/mobilebert-triton:test-{secrets.token_hex(4)}"
    build = ImageBuild(repository, tag, DEBIAN_BASE, tmp_path_factory.mktemp("image-context"))
    build.build()
    timings.update(build.timings)
    yield tag, timings
    subprocess.run([*PODMAN, "rmi", "-f", tag], capture_output=True, check=False)


def test_image_serves_every_task_like_the_local_server_and_stops_cleanly(image, triton_server):
    tag, timings = image
    container = Container(tag, host_ports={"http": free_port(), "grpc": free_port(), "metrics": free_port()})
    start = time.monotonic()
    container.start()
    try:
        timings["container start to READY"] = time.monotonic() - start
        with MobileBertClient(container.grpc_url) as inside, MobileBertClient(triton_server.grpc_url) as local:
            assert sorted(inside.tasks()) == sorted(DEPLOYMENTS)
            for task, call in CLIENT_CALLS.items():
                assert_close(call(inside), call(local), task)
        for task in HTTP_BODIES:
            assert_close(curl_infer(container.http_url, task), curl_infer(triton_server.http_url, task), task)
        # The key from the mounted secret guards the admin endpoints; inference and health stay open.
        assert curl_status(container.http_url, "/v2/repository/index") == 403
        assert curl_status(container.http_url, "/v2/repository/index", {"admin-key": container.admin_key}) == 200
        # It runs as the chart runs it: uid 1000 on a read-only root filesystem.
        probe = subprocess.run(
            [*PODMAN, "exec", container.name, "sh", "-c", "id -u; touch /probe"], capture_output=True, text=True
        )
        assert probe.stdout.split() == ["1000"] and "Read-only file system" in probe.stderr
    finally:
        start = time.monotonic()
        code, output = container.stop()
        timings["stop"] = time.monotonic() - start
        TIMINGS.parent.mkdir(parents=True, exist_ok=True)
        TIMINGS.write_text(json.dumps({k: round(v, 1) for k, v in timings.items()}, indent=1) + "\n")
        print("\ncontainer timings (s):", json.dumps({k: round(v, 1) for k, v in timings.items()}))
    assert code == 0, output
    assert "Triton stopped (exit code 0)" in output
    assert container.state() == "gone"
