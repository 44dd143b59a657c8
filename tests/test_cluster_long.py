"""The long fault drills on the cluster (issue 13): minutes, so marker `long`, run by `make test-long` and left out
of `make test` (whose tests/test_cluster.py runs one short drill of each kind).

One 2-replica cluster serving fill_mask, three load threads per load. Every replica is SIGKILLed in turn (twice
each) with the loads running on through the restart and the rejoin; a replica is drained under load twice: by
unloading alone (the calls caught between the unload and the balancer's next checks are counted and reported) and
gracefully (out of rotation in haproxy first: no call may fail).
"""

from __future__ import annotations

import os

import pytest

from deploy.cluster import Cluster, ClusterConfig
from deploy.cluster_drills import BackgroundLoad, DrillLoad, drain_drill, kill_drill, reference_answers

pytestmark = [pytest.mark.functional, pytest.mark.long]

FILL_MASK_MODELS = ["tokenizer", "fill_mask_onnx", "fill_mask_post", "fill_mask"]
TEXTS = [f"text {i} of the long drill puts a [MASK] here." for i in range(48)]
KILLS = int(os.environ.get("CLUSTER_KILLS", "4"))


@pytest.fixture(scope="module")
def cluster(built_repository, tmp_path_factory):
    repository, _ = built_repository
    config = ClusterConfig(
        repository, replicas=2, models=FILL_MASK_MODELS, workdir=tmp_path_factory.mktemp("cluster-long")
    )
    with Cluster(config) as running:
        yield running


def test_every_replica_killed_in_turn_under_load_loses_no_call_with_retries_and_answers_stay_right(cluster):
    reference = reference_answers(cluster.replicas[0].grpc_url, TEXTS)
    health = cluster.config.health
    totals = {"calls": 0, "failed": 0, "no_retry_calls": 0, "no_retry_failed": 0}
    for kill in range(KILLS):
        index = kill % 2
        load = DrillLoad(threads=3, retries=60, max_seconds=300.0)
        report = kill_drill(cluster, index, TEXTS, reference, load, load_through_restart=True, rejoin_calls=120)
        print(f"\nkill {kill + 1} of r{index}:\n" + "\n".join(report.lines()))
        assert report.with_retries.failed == 0, report.with_retries.errors
        assert report.wrong == [], report.wrong[:2]
        assert report.stop_routing_s <= health.stop_routing_bound_s()
        assert report.rejoin_s <= health.rejoin_bound_s()
        assert report.served_after_rejoin > 0
        totals["calls"] += report.with_retries.calls
        totals["failed"] += report.with_retries.failed
        totals["no_retry_calls"] += report.without_retries.calls
        totals["no_retry_failed"] += report.without_retries.failed
    print(f"\n{KILLS} kills: {totals}")
    assert cluster.backend_status() == {"r0": "UP", "r1": "UP"}


@pytest.mark.parametrize("graceful", [False, True], ids=["unload", "maint-then-unload"])
def test_a_replica_drained_under_load_stops_getting_traffic_and_serves_again(cluster, graceful):
    # A load runs across the unload. Plain unload: calls routed to the replica between the unload and its failing
    # checks get Triton's "unknown model" error (not retried: the client treats it as a deployment problem); counted
    # and reported. Graceful (out of rotation in haproxy first, then unload): none may fail.
    across = BackgroundLoad(cluster.grpc_url, TEXTS, DrillLoad(threads=3, max_seconds=120.0)).start()
    try:
        across.wait_for_calls(30)
        report = drain_drill(cluster, 1, TEXTS, DrillLoad(threads=3, max_calls=300), graceful=graceful)
    finally:
        tally = across.stop()
    print("\n" + "\n".join(report.lines()))
    print(
        f"drain ({'graceful' if graceful else 'unload'}) with a load across it: {tally.calls} calls, {tally.failed} "
        f"failed {tally.errors[:1]}"
    )
    assert report.reports_not_ready
    assert report.not_routed_s <= cluster.config.health.stop_routing_bound_s()
    assert report.while_drained.failed == 0 and report.after_restore.failed == 0
    assert report.served_while_drained == 0  # both loads: the drained replica's tokenizer count did not move
    assert report.served_after_restore > 0
    if graceful:
        assert tally.failed == 0, tally.errors
    assert cluster.backend_status() == {"r0": "UP", "r1": "UP"}
