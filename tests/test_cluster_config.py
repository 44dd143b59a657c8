"""deploy.cluster and its drills without processes: the balancer's config, the health-check bounds, the answer
comparison and the balancer-overhead summary (unit tier; the real cluster is tests/test_cluster.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from deploy.cluster import ClusterConfig, HealthCheck, haproxy_config
from deploy.cluster_drills import same_answer
from perf.cluster_bench import summary


def _replica(port: int) -> SimpleNamespace:
    """What haproxy_config reads of a replica (a TritonServer would make a work directory)."""
    return SimpleNamespace(grpc_url=f"127.0.0.1:{port}", http_url=f"127.0.0.1:{port + 1}")


def test_haproxy_checks_server_and_task_readiness_and_grpc_servers_track_the_checked_ones():
    text = haproxy_config(9001, 9000, [_replica(7001), _replica(7101)], HealthCheck(), Path("/s"), ["fill_mask", "x"])
    checks = [line.strip() for line in text.splitlines() if line.strip().startswith("http-check send")]
    assert checks == [
        "http-check send meth GET uri /v2/health/ready",
        "http-check send meth GET uri /v2/models/fill_mask/ready",
        "http-check send meth GET uri /v2/models/x/ready",
    ]
    assert "server r0 127.0.0.1:7002 check inter 500 fall 2 rise 2" in text
    assert "server r1 127.0.0.1:7101 proto h2 track http_replicas/r1" in text
    assert "bind 127.0.0.1:9001 proto h2" in text and "bind 127.0.0.1:9000\n" in text


def test_served_tasks_are_the_ensembles_among_the_loaded_models(tmp_path):
    config = ClusterConfig(tmp_path, models=["tokenizer", "fill_mask_onnx", "fill_mask_post", "fill_mask"])
    assert config.served_tasks() == ["fill_mask"]


def test_health_check_bounds_follow_fall_rise_and_interval():
    health = HealthCheck(interval_ms=200, fall=3, rise=2)
    assert health.stop_routing_bound_s(margin_s=0.5) == pytest.approx(1.1)
    assert health.rejoin_bound_s(margin_s=0.5) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="interval_ms >= 50"):
        HealthCheck(interval_ms=10)


def _answer(*pairs: tuple[int, float]) -> list[dict]:
    return [{"token": t, "score": s} for t, s in pairs]


def test_same_answer_allows_a_reordered_near_tie_but_not_another_answer():
    want = _answer((1, 0.50), (2, 0.30), (3, 0.1000), (4, 0.0999))
    assert same_answer(_answer((1, 0.501), (2, 0.299), (3, 0.1000), (4, 0.0999)), want)
    assert same_answer(_answer((1, 0.50), (2, 0.30), (4, 0.1000), (3, 0.0999)), want)  # tie at 3/4 reordered
    assert same_answer(_answer((1, 0.50), (2, 0.30), (3, 0.1000), (9, 0.0999)), want)  # a tie from below the top k
    assert not same_answer(_answer((2, 0.50), (1, 0.30), (3, 0.1000), (4, 0.0999)), want)  # no tie at 1/2
    assert not same_answer(_answer((1, 0.40), (2, 0.30), (3, 0.1000), (4, 0.0999)), want)  # a score moved
    assert not same_answer(want[:3], want)


def _point(mode: str, c: int, seq: float, p50: float, p99: float) -> dict:
    return {"mode": mode, "concurrency": c, "seq_per_s": seq, "p50_ms": p50, "p99_ms": p99}


def test_the_overhead_summary_compares_best_throughputs_and_latency_at_the_lowest_concurrency():
    best = {
        ("direct", 1): _point("direct", 1, 50.0, 20.0, 30.0),
        ("direct", 8): _point("direct", 8, 100.0, 80.0, 120.0),
        ("haproxy x1", 1): _point("haproxy x1", 1, 48.0, 20.5, 31.0),
        ("haproxy x1", 8): _point("haproxy x1", 8, 95.0, 84.0, 130.0),
        ("haproxy x2", 1): _point("haproxy x2", 1, 49.0, 20.4, 32.0),
        ("haproxy x2", 8): _point("haproxy x2", 8, 97.0, 82.0, 125.0),
    }
    rows = {r["mode"]: r for r in summary(best)}
    assert rows["direct"]["ratio_vs_direct"] == 1.0
    assert rows["haproxy x1"]["ratio_vs_direct"] == 0.95 and rows["haproxy x1"]["best_concurrency"] == 8
    assert rows["haproxy x1"]["added_p50_ms"] == 0.5 and rows["haproxy x1"]["added_p99_ms"] == 1.0
    assert rows["haproxy x2"]["added_p50_ms_at_best"] == 2.0
