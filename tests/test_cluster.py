"""deploy.cluster: replicas behind haproxy with Prometheus, all real processes on loopback (issue 13).

The fast tests share one 2-replica cluster serving fill_mask only (quick to start), in file order: the queue-time
test first (its idle figure needs a cluster that has had no load yet), the fault drills (drain, kill) after the
routing tests, and the last one stops it and proves nothing is left behind. The longer drills are in
tests/test_cluster_long.py (marker `long`, `make test-long`).
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
from deploy.cluster_drills import DrillLoad, drain_drill, kill_drill, queue_time_drill, reference_answers

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


def test_queue_time_per_request_is_answered_for_every_replica_and_rises_under_load(cluster):
    report = queue_time_drill(cluster, TEXTS, DrillLoad(threads=2, max_seconds=30.0))
    print("\n" + "\n".join(report.lines()))
    assert set(report.idle_us) == set(report.loaded_us) == {"r0", "r1"}
    assert report.load.failed == 0, report.load.errors
    for replica, idle in report.idle_us.items():
        assert report.loaded_us[replica] > idle, (report.idle_us, report.loaded_us)


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
            with pytest.raises(MobileBertClientError) as no_mask:  # refused by the Python model, not by Triton
                bert.fill_mask("a sentence without a mask token")
            errors.append([(type(e.value), str(e.value).replace(url, "URL")) for e in (err, no_mask)])
    assert errors[0] == errors[1]
    assert "NOT_AN_INPUT" in errors[0][0][1] and "[MASK]" in errors[0][1][1]


def test_a_missing_repository_and_zero_replicas_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="replicas must be >= 1"):
        ClusterConfig(tmp_path, replicas=0)
    with pytest.raises(Exception, match="does not exist"):
        ClusterConfig(tmp_path / "nowhere")


def test_the_balancer_checks_every_replica_on_health_ready_and_on_each_task_ready(cluster):
    text = (cluster.workdir / "haproxy.cfg").read_text()
    assert text == haproxy_config(
        cluster.grpc_port,
        cluster.http_port,
        cluster.replicas,
        cluster.config.health,
        cluster.workdir / "haproxy.sock",
        ["fill_mask"],
    )
    assert "uri /v2/health/ready" in text and "uri /v2/models/fill_mask/ready" in text
    assert text.count(" check inter ") == 2 and text.count(" track http_replicas/r") == 2


def test_a_drained_replica_reports_not_ready_gets_no_traffic_then_serves_again_once_reloaded(cluster):
    report = drain_drill(cluster, 0, TEXTS, DrillLoad(threads=2, max_calls=40))
    print("\n" + "\n".join(report.lines()))
    assert report.reports_not_ready
    assert report.not_routed_s <= cluster.config.health.stop_routing_bound_s()
    assert report.while_drained.calls == 40 and report.while_drained.failed == 0, report.while_drained.errors
    assert report.served_while_drained == 0
    assert report.after_restore.failed == 0 and report.served_after_restore > 0
    assert cluster.backend_status() == {"r0": "UP", "r1": "UP"}


def test_a_replica_sigkilled_under_load_loses_no_call_with_retries_and_rejoins_after_a_restart(cluster):
    reference = reference_answers(cluster.replicas[1].grpc_url, TEXTS)
    report = kill_drill(cluster, 0, TEXTS, reference, DrillLoad(threads=2, retries=60))
    print("\n" + "\n".join(report.lines()))
    assert report.with_retries.failed == 0, report.with_retries.errors
    assert report.with_retries.calls > 0 and report.without_retries.calls > 0
    assert report.wrong == [], report.wrong[:2]
    health = cluster.config.health
    assert report.stop_routing_s <= health.stop_routing_bound_s(), (report.stop_routing_s, health)
    assert report.rejoin_s <= health.rejoin_bound_s(), (report.rejoin_s, health)
    assert report.after_rejoin.failed == 0 and report.served_after_rejoin > 0
    assert cluster.backend_status() == {"r0": "UP", "r1": "UP"}


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
