"""deploy.cluster: replicas behind haproxy with Prometheus, all real processes on loopback (issue 13).

The fast tests share one 2-replica cluster serving fill_mask only (quick to start); the last one stops it and
proves nothing is left behind.
"""

from __future__ import annotations

import os
import socket
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from client import MobileBertClient
from client.errors import MobileBertClientError
from deploy.cluster import Cluster, ClusterConfig, haproxy_config

# Functional tier: real Triton servers or ONNX exports (`make test-quick` leaves these out).
pytestmark = pytest.mark.functional

FILL_MASK_MODELS = ["tokenizer", "fill_mask_onnx", "fill_mask_post", "fill_mask"]
TEXTS = [f"sentence number {i} has a [MASK] in it." for i in range(24)]


@pytest.fixture(scope="module")
def cluster(built_repository, tmp_path_factory):
    repository, _ = built_repository
    config = ClusterConfig(repository, replicas=2, models=FILL_MASK_MODELS, workdir=tmp_path_factory.mktemp("cluster"))
    with Cluster(config) as running:
        yield running


def _successes(url: str, model: str = "fill_mask") -> int:
    stats = grpcclient.InferenceServerClient(url).get_inference_statistics(model, as_json=True)
    return int(stats["model_stats"][0]["inference_stats"]["success"].get("count", 0))


def test_load_through_the_balancer_reaches_every_replica_with_the_direct_answers(cluster):
    with MobileBertClient(cluster.replicas[0].grpc_url) as direct:
        reference = [direct.fill_mask(t, top_k=3) for t in TEXTS]
    before = _settled([r.grpc_url for r in cluster.replicas], total=None)
    with MobileBertClient(cluster.grpc_url, retries=0) as balanced:
        through = [balanced.fill_mask(t, top_k=3) for t in TEXTS]
    after = _settled([r.grpc_url for r in cluster.replicas], total=sum(before) + len(TEXTS))
    served = [a - b for a, b in zip(after, before, strict=True)]
    assert sum(served) == len(TEXTS) and all(n > 0 for n in served), f"calls per replica: {served}"
    for got, want in zip(through, reference, strict=True):
        assert [c["token"] for c in got] == [c["token"] for c in want]
        np.testing.assert_allclose([c["score"] for c in got], [c["score"] for c in want], rtol=1e-4)
    assert cluster.query("up") == {"r0": 1.0, "r1": 1.0}  # Prometheus scrapes every replica


def _settled(urls: list[str], total: int | None, timeout_s: float = 10.0) -> list[int]:
    """Successes per replica, once Triton's statistics have caught up with `total` calls (they lag the reply)."""
    deadline = time.monotonic() + timeout_s
    while True:
        counts = [_successes(u) for u in urls]
        if total is None or sum(counts) >= total or time.monotonic() > deadline:
            return counts
        time.sleep(0.1)


def test_the_http_address_balances_too_and_health_answers_through_it(cluster):
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(cluster.http_url)
    try:
        assert client.is_server_ready() and client.is_model_ready("fill_mask")
    finally:
        client.close()


def test_bad_input_through_the_balancer_gets_the_same_error_as_direct(cluster):
    errors = []
    for url in (cluster.grpc_url, cluster.replicas[1].grpc_url):
        with MobileBertClient(url, retries=0) as bert:
            with pytest.raises(MobileBertClientError) as err:
                bert.infer_tensors("fill_mask", {"NOT_AN_INPUT": np.array([[b"x"]], dtype=object)})
            errors.append((type(err.value), str(err.value).replace(url, "URL")))
    assert errors[0] == errors[1]
    assert "NOT_AN_INPUT" in errors[0][1]


def test_a_missing_repository_and_zero_replicas_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="replicas must be >= 1"):
        ClusterConfig(tmp_path, replicas=0)
    with pytest.raises(Exception, match="does not exist"):
        ClusterConfig(tmp_path / "nowhere")


def test_the_balancer_config_checks_every_replica_on_health_ready(cluster):
    text = (cluster.workdir / "haproxy.cfg").read_text()
    assert text == haproxy_config(
        cluster.grpc_port, cluster.http_port, cluster.replicas, cluster.config.health, cluster.workdir / "haproxy.sock"
    )
    assert "uri /v2/health/ready" in text and text.count(" check ") == 4


def test_stop_leaves_no_process_and_no_listening_port(cluster):
    pids = cluster.processes()
    ports = [cluster.grpc_port, cluster.http_port, cluster.prometheus_port]
    ports += [p for r in cluster.replicas for p in (r.config.grpc_port, r.config.http_port, r.config.metrics_port)]
    assert len(pids) == 4
    cluster.stop()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    for port in ports:
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still answers"
