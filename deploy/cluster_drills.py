"""Fault drills on a running cluster (deploy/cluster.py), each under bounded load through the balancer.

- `kill_drill`: SIGKILL a replica under load, time how long haproxy keeps routing to it, restart it on its ports and
  time until it is routed to again; two loads run across the same kill, one with the client's retries and one
  without, so both failure counts come from one event. Every answer is checked against a single-server reference.
- `drain_drill`: unload a replica's tasks with the admin key; once it reports not ready the balancer stops routing
  to it (its Triton statistics do not move under further load); load them again and it serves again.
- `queue_time_drill`: the autoscaling signal (Prometheus recording rule, per replica) idle, then under load.

Load here is the client library in a few threads sharing one client (one h2 connection to the balancer, balanced
per request), each bounded in calls and in time. perf/load.py stays the measuring load generator: it never retries
by design, and these drills need retries and the answers themselves.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from .cluster import Cluster

FILL_MASK = "fill_mask"


@dataclass(frozen=True)
class DrillLoad:
    """Bounded closed-loop load: `threads` callers, each sending its next text as soon as the previous answered,
    until stopped, `max_calls` calls in all, or `max_seconds`. `retries` as the client's option (0: none)."""

    threads: int = 2
    retries: int = 0
    max_calls: int = 20_000
    max_seconds: float = 120.0
    timeout_s: float = 20.0
    top_k: int = 3

    def __post_init__(self) -> None:
        if self.threads < 1 or self.max_calls < 1 or self.max_seconds <= 0:
            raise ValueError(f"drill load: threads, max_calls and max_seconds must be positive (got {self})")


@dataclass
class LoadTally:
    calls: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    answers: list[tuple[str, Any]] = field(default_factory=list)


class BackgroundLoad:
    """fill_mask calls through `url` in threads until `stop()` (or the load's bounds); a context manager."""

    def __init__(self, url: str, texts: list[str], load: DrillLoad) -> None:
        from client import MobileBertClient

        self.load = load
        self.texts = texts
        # Backoff short and capped: a retried call should land on a live replica within a health-check interval.
        self.client: Any = MobileBertClient(
            url, retries=load.retries, backoff_initial_s=0.05, backoff_max_s=0.5, timeout_s=load.timeout_s
        )
        self.tally = LoadTally()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(load.threads)]

    def _run(self, offset: int) -> None:
        deadline = time.monotonic() + self.load.max_seconds
        i = offset
        while not self._stop.is_set() and time.monotonic() < deadline:
            with self._lock:
                if self.tally.calls >= self.load.max_calls:
                    return
                self.tally.calls += 1
            text = self.texts[i % len(self.texts)]
            i += self.load.threads
            try:
                answer = self.client.fill_mask(text, top_k=self.load.top_k)
            except Exception as exc:  # counted and kept, never hidden
                with self._lock:
                    self.tally.failed += 1
                    if len(self.tally.errors) < 5:
                        self.tally.errors.append(f"{type(exc).__name__}: {exc}"[:300])
                continue
            with self._lock:
                self.tally.answers.append((text, answer))

    def start(self) -> BackgroundLoad:
        for t in self._threads:
            t.start()
        return self

    def wait_for_calls(self, calls: int, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.tally.calls < calls and time.monotonic() < deadline and any(t.is_alive() for t in self._threads):
            time.sleep(0.02)

    def join(self) -> LoadTally:
        """Wait until the load ends by its own bounds (calls or seconds); returns the tally."""
        for t in self._threads:
            t.join(timeout=self.load.max_seconds + self.load.timeout_s * (self.load.retries + 2))
        if self.client is not None:
            self.client.close()
            self.client = None
        return self.tally

    def stop(self) -> LoadTally:
        self._stop.set()
        return self.join()

    def __enter__(self) -> BackgroundLoad:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def reference_answers(url: str, texts: list[str], top_k: int = 3) -> dict[str, Any]:
    """Each text's fill_mask answer from one server, one call at a time (the single-server reference)."""
    from client import MobileBertClient

    with MobileBertClient(url, retries=0) as direct:
        return {t: direct.fill_mask(t, top_k=top_k) for t in texts}


def same_answer(got: list[dict], want: list[dict], rtol: float = 0.05) -> bool:
    """Whether a fill_mask answer equals the reference. INT8-dynamic scores move slightly with the batch company
    the dynamic batcher gives a request (one activation scale per batch; measured up to a few % relative on the
    random demo models, whose top scores are near-uniform, ~2e-4 each, under three-thread loads),
    so scores are compared within `rtol` and tokens rank by rank, except where the reference itself has a near tie
    (two candidates within `rtol`) that the move may reorder. Another text's answer fails: its tokens differ."""
    if len(got) != len(want):
        return False
    reference = {c["token"]: c["score"] for c in want}
    for g, w in zip(got, want, strict=True):
        if abs(g["score"] - w["score"]) > rtol * w["score"]:
            return False
        if g["token"] != w["token"]:
            # a token new to the top k came from below the reference's last place
            tied = reference.get(g["token"], want[-1]["score"])
            if abs(tied - w["score"]) > rtol * w["score"]:
                return False
    return True


def wrong_answers(tally: LoadTally, reference: dict[str, Any]) -> list[str]:
    """The answers of a load that differ from the single-server reference (`same_answer`)."""

    def brief(answer: list[dict]) -> str:
        return " ".join(f"{c['token']}:{c['score']:.4g}" for c in answer)

    return [
        f"{t!r}: got {brief(got)}, want {brief(reference[t])}"
        for t, got in tally.answers
        if not same_answer(got, reference[t])
    ]


def settled(read: Callable[[], Any], timeout_s: float = 5.0) -> Any:
    """`read()` once two reads 100 ms apart agree: Triton's statistics lag the last answer a little."""
    last = read()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = read()
        if now == last:
            return now
        last = now
    return last


@dataclass
class KillReport:
    with_retries: LoadTally
    without_retries: LoadTally
    stop_routing_s: float  # SIGKILL -> haproxy reports the replica DOWN
    ready_again_s: float  # restart on the same ports -> every model READY
    rejoin_s: float  # READY -> haproxy reports it UP
    after_rejoin: LoadTally  # the load once it rejoined (empty when the loads ran through the restart)
    served_after_rejoin: int  # requests the restarted replica answered
    wrong: list[str]  # answers (any load) that differ from the reference
    balancer: dict[str, int]  # haproxy's retries (wretr), redispatches (wredis), errors during the drill

    def lines(self) -> list[str]:
        r, n, a = self.with_retries, self.without_retries, self.after_rejoin
        return [
            f"kill: with retries {r.calls} calls, {r.failed} failed; without retries {n.calls} calls, {n.failed} "
            f"failed ({'; '.join(n.errors[:1]) or 'no error'}); {len(self.wrong)} wrong answers; haproxy: "
            + ", ".join(f"{k} {v}" for k, v in self.balancer.items()),
            f"kill: haproxy stopped routing to it {self.stop_routing_s:.2f} s after the SIGKILL; restarted READY in "
            f"{self.ready_again_s:.1f} s, routed again {self.rejoin_s:.2f} s later; "
            + (f"after the rejoin {a.calls} calls, {a.failed} failed, " if a.calls else "the loads ran on; ")
            + f"{self.served_after_rejoin} served by the restarted replica",
        ]


def kill_drill(
    cluster: Cluster,
    index: int,
    texts: list[str],
    reference: dict[str, Any],
    load: DrillLoad,
    *,
    load_through_restart: bool = False,
    after_kill_s: float = 1.0,
    rejoin_calls: int = 60,
) -> KillReport:
    """SIGKILL replica `index` under two loads through the balancer (with `load.retries`, and with none), restart
    it on its ports, wait until haproxy routes to it again and show it serves. With `load_through_restart` the loads
    run on until the restarted replica has served `rejoin_calls // 4` requests; otherwise they stop `after_kill_s`
    after it is marked DOWN (less CPU taken from the restart on a small machine) and a bounded load of
    `rejoin_calls` calls (with retries) follows the rejoin."""
    counters = cluster.balancer_counters()
    retrying = BackgroundLoad(cluster.grpc_url, texts, load).start()
    plain = BackgroundLoad(cluster.grpc_url, texts, replace(load, retries=0)).start()
    after = LoadTally()
    try:
        retrying.wait_for_calls(load.threads * 5)
        plain.wait_for_calls(load.threads * 5)
        cluster.kill_replica(index)
        stop_routing_s = cluster.wait_until_routed([index], up=False, timeout_s=30.0)
        if not load_through_restart:
            time.sleep(after_kill_s)
            retrying.stop()
            plain.stop()
        started = time.monotonic()
        cluster.restart_replica(index)
        ready_again_s = time.monotonic() - started
        rejoin_s = cluster.wait_until_routed([index], up=True, timeout_s=60.0)
        if load_through_restart:
            deadline = time.monotonic() + 30.0
            while cluster.served_requests(index, FILL_MASK) < rejoin_calls // 4 and time.monotonic() < deadline:
                time.sleep(0.2)
        else:
            after = BackgroundLoad(cluster.grpc_url, texts, replace(load, max_calls=rejoin_calls)).start().join()
    finally:
        with_retries, without_retries = retrying.stop(), plain.stop()
    served = settled(lambda: cluster.served_requests(index, FILL_MASK))
    return KillReport(
        with_retries=with_retries,
        without_retries=without_retries,
        stop_routing_s=stop_routing_s,
        ready_again_s=ready_again_s,
        rejoin_s=rejoin_s,
        after_rejoin=after,
        served_after_rejoin=served,
        wrong=[w for t in (with_retries, without_retries, after) for w in wrong_answers(t, reference)],
        balancer={k: v - counters[k] for k, v in cluster.balancer_counters().items()},
    )


@dataclass
class DrainReport:
    not_routed_s: float  # unload -> haproxy reports the replica DOWN
    reports_not_ready: bool  # the replica's own /v2/models/<task>/ready says not ready
    while_drained: LoadTally
    served_while_drained: int  # requests the drained replica answered meanwhile (its tokenizer's statistics)
    restore_s: float  # load again -> READY
    rejoin_s: float  # READY -> routed again
    after_restore: LoadTally
    served_after_restore: int

    def lines(self) -> list[str]:
        d, a = self.while_drained, self.after_restore
        return [
            f"drain: not routed {self.not_routed_s:.2f} s after the unload (reports not ready: "
            f"{self.reports_not_ready}); {d.calls} calls meanwhile, {d.failed} failed, {self.served_while_drained} "
            "reached the drained replica",
            f"drain: reloaded in {self.restore_s:.1f} s, routed again {self.rejoin_s:.2f} s later; {a.calls} calls, "
            f"{a.failed} failed, {self.served_after_restore} served by it",
        ]


def drain_drill(cluster: Cluster, index: int, texts: list[str], load: DrillLoad, graceful: bool = False) -> DrainReport:
    """Drain replica `index` (unload its tasks; `graceful`: out of rotation first, see Cluster.drain_replica), load
    the balancer while it is out, restore it, load again."""
    import tritonclient.http as httpclient

    cluster.drain_replica(index, graceful=graceful)
    not_routed_s = cluster.wait_until_routed([index], up=False, timeout_s=30.0)
    probe = httpclient.InferenceServerClient(cluster.replicas[index].http_url)
    try:
        reports_not_ready = not any(probe.is_model_ready(t) for t in cluster.config.served_tasks())
    finally:
        probe.close()
    # The tokenizer stays loaded on a drained replica: its count shows whether any request still reached it.
    tokenizer = lambda: cluster.served_requests(index, "tokenizer")  # noqa: E731
    before = settled(tokenizer)
    while_drained = BackgroundLoad(cluster.grpc_url, texts, load).start().join()
    served_while_drained = settled(tokenizer) - before
    started = time.monotonic()
    cluster.restore_replica(index)
    restore_s = time.monotonic() - started
    rejoin_s = cluster.wait_until_routed([index], up=True, timeout_s=60.0)
    before = settled(tokenizer)
    after_restore = BackgroundLoad(cluster.grpc_url, texts, load).start().join()
    return DrainReport(
        not_routed_s=not_routed_s,
        reports_not_ready=reports_not_ready,
        while_drained=while_drained,
        served_while_drained=served_while_drained,
        restore_s=restore_s,
        rejoin_s=rejoin_s,
        after_restore=after_restore,
        served_after_restore=settled(tokenizer) - before,
    )


@dataclass
class QueueTimeReport:
    idle_us: dict[str, float]
    loaded_us: dict[str, float]
    load: LoadTally

    def lines(self) -> list[str]:
        return [
            f"queue time per request (rule, per replica): idle {_us(self.idle_us)}, under load {_us(self.loaded_us)} "
            f"({self.load.calls} calls, {self.load.failed} failed)"
        ]


def _us(values: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.0f} us" for k, v in sorted(values.items()))


def queue_time_drill(cluster: Cluster, texts: list[str], load: DrillLoad, timeout_s: float = 30.0) -> QueueTimeReport:
    """The recording rule per replica before any load (waits until it has a value for every replica: `delta`
    needs two scrapes), then under load (waits until every replica's figure rose, at most `timeout_s`)."""
    replicas = {f"r{i}" for i in range(len(cluster.replicas))}
    deadline = time.monotonic() + timeout_s
    idle = cluster.queue_time_per_request_us()
    while set(idle) != replicas and time.monotonic() < deadline:
        time.sleep(0.25)
        idle = cluster.queue_time_per_request_us()
    running = BackgroundLoad(cluster.grpc_url, texts, load).start()
    loaded: dict[str, float] = {}
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            time.sleep(0.5)
            loaded = cluster.queue_time_per_request_us()
            if set(loaded) == replicas and all(loaded[r] > idle.get(r, 0.0) for r in replicas):
                break
    finally:
        tally = running.stop()
    return QueueTimeReport(idle_us=idle, loaded_us=loaded, load=tally)
