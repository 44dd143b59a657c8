"""client/: the gRPC client library, against real tritonservers (the shared `triton_server` and small dedicated ones).

Dedicated servers load only the fill_mask models (about 2 s to start): one for retries across a restart and for
failover, one with mutual TLS. Nothing is mocked; attempts are counted from the errors' `attempts`, from the
client's retry log and from the server's own statistics.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from client import (
    TASKS,
    AccessDeniedError,
    AsyncMobileBertClient,
    ConnectionOptions,
    InvalidInputError,
    MobileBertClient,
    MobileBertClientError,
    RequestTimeoutError,
    ServerUnavailableError,
    TaskNotDeployedError,
    TlsOptions,
)
from client import tasks as client_tasks
from client.cli import main as cli_main
from client.options import parse_urls
from deploy.server import ServerTls, TritonServer, free_port, start_on_free_ports
from deploy.tasks import DEPLOYMENTS

# Functional tier: real Triton servers or ONNX exports (`make test-quick` leaves these out).
pytestmark = pytest.mark.functional

FILL_MASK_MODELS = ["tokenizer", "fill_mask_onnx", "fill_mask_post", "fill_mask"]
PAIR = np.array([["B"]])
CONTEXT = "The Eiffel Tower is in Paris. It was built in 1889 by Gustave Eiffel."
FAST_RETRY = {"backoff_initial_s": 0.01, "backoff_max_s": 0.05}


# -- servers and clients ----------------------------------------------------------------------------------------------


def small_server(built_repository, log: Path, extra_args: list[str] | None = None, tls=None) -> TritonServer:
    """A server on its own ports with only the fill_mask task loaded (fast to start and restart)."""
    repository, record = built_repository
    assert set(FILL_MASK_MODELS) <= set(record["models"])
    return start_on_free_ports(repository, models=FILL_MASK_MODELS, log_file=log, extra_args=extra_args or [], tls=tls)


@pytest.fixture(scope="module")
def url(triton_server) -> str:
    return triton_server.grpc_url


@pytest.fixture(scope="module")
def bert(url) -> MobileBertClient:
    with MobileBertClient(url) as client:
        yield client


@pytest.fixture(scope="module")
def spare_server(built_repository, tmp_path_factory) -> TritonServer:
    """A second server; tests stop and restart it, so each makes sure it runs first (`running`)."""
    with small_server(built_repository, tmp_path_factory.mktemp("logs") / "spare.log") as server:
        yield server


def running(server: TritonServer) -> TritonServer:
    if server.process is None or server.process.poll() is not None:
        server.start()
    return server


def post_requests(url: str) -> int:
    """Requests the fill_mask post-processing model has executed: what actually reached the server's model."""
    raw = grpcclient.InferenceServerClient(url)
    try:
        stats = raw.get_inference_statistics("fill_mask_post", as_json=True)["model_stats"][0]
    finally:
        raw.close()
    return int(stats["inference_stats"]["success"].get("count", 0))


def post_requests_since(url: str, before: int, expected: int, timeout_s: float = 5.0) -> int:
    """Requests executed since `before`, waiting up to `timeout_s` for `expected` of them.

    Triton records a composing model's statistics after the ensemble's response has been sent, so a count read right
    after the last answer can be one short; waiting for the expected count (and returning whatever is there, more or
    less) keeps the comparison exact without racing the server's bookkeeping.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        done = post_requests(url) - before
        if done >= expected or time.monotonic() > deadline:
            return done
        time.sleep(0.05)


def retry_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "client" and "transient" in r.getMessage()]


# -- the contract -----------------------------------------------------------------------------------------------------


def test_client_contract_matches_the_server_side_description():
    assert set(TASKS) == set(DEPLOYMENTS)
    for task, deployment in DEPLOYMENTS.items():
        assert client_tasks.TASK_INPUTS[task] == tuple(t.name for t in deployment.inputs), task
        assert (task in client_tasks.UNBATCHED_TASKS) == (not deployment.batched), task
    outputs = {t.name for t in DEPLOYMENTS["feature_extraction"].outputs}
    assert set(client_tasks.POOLINGS.values()) | {"ATTENTION_MASK"} == outputs


def test_connection_options_are_validated_data(tmp_path):
    assert parse_urls("a:1, grpc://b:2") == ("a:1", "b:2")
    options = ConnectionOptions(urls=["a:1", "b:2,c:3"], headers={"authorization": "Bearer t"})
    assert options.urls == ("a:1", "b:2", "c:3")
    assert options.with_overrides(retries=0).retries == 0 and options.retries == 3
    keepalive = grpcclient.KeepAliveOptions(keepalive_time_ms=10_000, keepalive_timeout_ms=3_000)
    args = dict(ConnectionOptions(keepalive=keepalive, max_reconnect_backoff_s=1.5).channel_args())
    assert args["grpc.keepalive_time_ms"] == 10_000 and args["grpc.keepalive_timeout_ms"] == 3_000
    assert args["grpc.max_reconnect_backoff_ms"] == 1500
    for bad in ({"compression": "brotli"}, {"retries": -1}, {"timeout_s": 0}, {"urls": ""}, {"jitter": 2}):
        with pytest.raises(ValueError):
            ConnectionOptions(**bad)
    with pytest.raises(ValueError, match="not a file"):
        TlsOptions(root_certificates=tmp_path / "missing.pem")
    with pytest.raises(ValueError, match="both"):
        TlsOptions(private_key=__file__)
    assert MobileBertClient("x:1", retries=1, timeout_s=2).options.urls == ("x:1",)


# -- every task, single and list inputs ---------------------------------------------------------------------------


def test_health_and_introspection(bert, url):
    assert bert.tasks() == list(TASKS)  # every task ensemble, none of the composing models
    assert bert.is_ready() and bert.is_ready("fill_mask") and not bert.is_ready("fill_mask_typo")
    bert.wait_until_ready(timeout=5)
    metadata = bert.model_metadata("question_answering")
    assert [(i["name"], i["datatype"]) for i in metadata["inputs"]] == [("QUESTION", "BYTES"), ("CONTEXT", "BYTES")]
    assert bert.max_batch_size("fill_mask") == 64
    assert MobileBertClient(url, max_batch_size=8).max_batch_size("fill_mask") == 8


def test_repository_index_needs_the_admin_key_but_tasks_do_not(bert, url, triton_server):
    admin_key = getattr(triton_server, "admin_key", None)
    if admin_key is None:  # a server whose model-repository protocol is open
        assert {m["name"] for m in bert.repository_index()} >= set(TASKS)
        return
    header = "triton-grpc-protocol-admin-key"  # Triton prefixes restricted-protocol headers on gRPC
    with pytest.raises(AccessDeniedError, match=header) as error:
        MobileBertClient(url, retries=3).repository_index()
    assert error.value.attempts == 1  # a refusal is not transient, though Triton reports it as UNAVAILABLE
    assert bert.tasks() == list(TASKS)  # falls back to the open per-model readiness
    with MobileBertClient(url, headers={header: admin_key}) as admin:
        index = {m["name"]: m["state"] for m in admin.repository_index()}
        assert {"tokenizer", "fill_mask_onnx", "fill_mask_post"} <= set(index) and index["fill_mask"] == "READY"
        assert admin.tasks() == list(TASKS)  # from the index: composing models are not tasks
    assert json.loads(cli_output(["tasks", "--url", url, "--header", f"{header}={admin_key}", "--json"])) == list(TASKS)


def cli_output(args: list[str]) -> str:
    out = subprocess.run([sys.executable, "-m", "client", *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_fill_mask(bert):
    text = "The capital of France is [MASK]."
    result = bert.fill_mask(text, top_k=3)
    assert len(result) == 3 and all(set(c) == {"score", "token", "token_str", "sequence"} for c in result)
    scores = [c["score"] for c in result]
    assert scores == sorted(scores, reverse=True) and all(0 < s <= 1 for s in scores)
    for c in result:
        assert "[MASK]" not in c["sequence"] and c["sequence"].startswith("the capital of france is")
    assert [c["token"] for c in bert.fill_mask(text, top_k=1)] == [result[0]["token"]]
    assert len(bert.fill_mask(text, top_k=10)) == 10

    two = bert.fill_mask("Paris is the [MASK] of [MASK].", top_k=2)  # several masks: one list per mask (as HF)
    assert len(two) == 2 and all(len(candidates) == 2 for candidates in two)

    many = bert.fill_mask([text, "I like [MASK] food."], top_k=2)
    assert len(many) == 2 and all(len(r) == 2 for r in many)
    assert many[1][0]["sequence"].startswith("i like") and bert.fill_mask([], top_k=2) == []
    for bad in (0, 11, "3", None):
        with pytest.raises(InvalidInputError, match="top_k"):
            bert.fill_mask(text, top_k=bad)


def test_classify(bert):
    single = bert.classify("A wonderful, moving film.")
    assert len(single) == 1 and set(single[0]) == {"label", "score"}
    every = bert.classify("A wonderful, moving film.", top_k=None)
    assert len(every) >= 2 and sum(r["score"] for r in every) == pytest.approx(1.0, abs=1e-6)
    assert [r["score"] for r in every] == sorted((r["score"] for r in every), reverse=True)
    assert every[0]["label"] == single[0]["label"]
    paired = bert.classify(["first", "second", "third"], text_pair="the pair", top_k=2)
    assert len(paired) == 3 and all(len(r) == 2 for r in paired)
    assert len(bert.classify(["a", "b"], ["c", "d"])) == 2
    with pytest.raises(InvalidInputError, match="must match"):
        bert.classify(["a", "b"], ["c"])


def test_next_sentence(bert):
    result = bert.next_sentence("I went to the store.", "I bought some milk.")
    assert set(result) == {"is_next", "score"} and 0 <= result["score"] <= 1
    assert result["is_next"] == (result["score"] > 0.5)
    many = bert.next_sentence(["A.", "B."], ["C.", "D."])
    assert len(many) == 2 and all(set(r) == {"is_next", "score"} for r in many)


def test_multiple_choice(bert):
    choices = ["a bicycle", "an apple", "the moon"]
    result = bert.multiple_choice("What do you eat?", choices)
    assert set(result) == {"index", "choice", "scores"} and len(result["scores"]) == 3
    assert sum(result["scores"]) == pytest.approx(1.0, abs=1e-6)
    assert result["index"] == int(np.argmax(result["scores"])) and result["choice"] == choices[result["index"]]
    per_prompt = bert.multiple_choice(["Q1?", "Q2?"], [["x", "y"], ["p", "q", "r"]])
    assert [len(r["scores"]) for r in per_prompt] == [2, 3]
    shared = bert.multiple_choice(["Q1?", "Q2?"], ["x", "y"])  # one list of strings: the same choices for each
    assert [r["choice"] in ("x", "y") for r in shared] == [True, True]
    for bad in ([], "x", [["x"]]):
        with pytest.raises(InvalidInputError, match="choices"):
            bert.multiple_choice("Q?", bad)
    with pytest.raises(InvalidInputError, match="empty"):
        bert.multiple_choice(["Q1?", "Q2?"], [["x"], []])


def test_tag(bert):
    texts = ["John Smith lives in New York City.", "Angela Merkel visited Paris in 2019."]
    tagged = bert.tag(texts)
    assert len(tagged) == 2 and any(tagged), "random weights still tag some words"
    for text, entities in zip(texts, tagged, strict=True):
        for e in entities:
            assert set(e) == {"entity_group", "score", "word", "start", "end"}
            assert e["word"] == text[e["start"] : e["end"]] and 0 < e["score"] <= 1 and e["entity_group"] != "O"
    assert bert.tag(texts[0]) == bert.tag([texts[0]])[0]


def test_answer(bert):
    result = bert.answer("Where is the Eiffel Tower?", CONTEXT)
    assert set(result) == {"answer", "score", "start", "end"}
    assert result["answer"] == CONTEXT[result["start"] : result["end"]] and result["answer"]
    top = bert.answer("Where is the Eiffel Tower?", CONTEXT, top_k=3)
    assert len(top) == 3 and top[0] == result
    assert [a["score"] for a in top] == sorted((a["score"] for a in top), reverse=True)
    assert all(a["answer"] == CONTEXT[a["start"] : a["end"]] for a in top)
    many = bert.answer(["Who built it?", "When?"], CONTEXT)  # one context for every question
    assert len(many) == 2 and all(a["answer"] == CONTEXT[a["start"] : a["end"]] for a in many)
    assert bert.answer("Anything?", "") == client_tasks.NO_ANSWER


def test_embed_poolings_and_token_vectors(bert):
    texts = ["hello world", "a somewhat longer sentence to embed here"]
    raw = bert.infer_tensors(
        "feature_extraction",
        {"TEXT": np.array([[t] for t in texts], dtype=object)},
        outputs=["MEAN_POOLED", "LAST_HIDDEN_STATE", "ATTENTION_MASK"],
    )
    hidden, mask = raw["LAST_HIDDEN_STATE"], raw["ATTENTION_MASK"].astype(np.float32)
    masked_mean = (hidden * mask[..., None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(raw["MEAN_POOLED"], masked_mean, rtol=1e-5, atol=1e-5)
    width = hidden.shape[-1]

    mean = bert.embed(texts)
    assert mean.shape == (2, width) and mean.dtype == np.float32
    np.testing.assert_allclose(mean, raw["MEAN_POOLED"], rtol=1e-5, atol=1e-5)
    single = bert.embed(texts[1])
    assert single.shape == (width,)
    tokens = bert.embed(texts[1], pooling="none")  # trimmed to the real tokens
    assert tokens.shape == (int(mask[1].sum()), width)
    np.testing.assert_allclose(tokens.mean(axis=0), single, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bert.embed(texts[1], pooling="cls"), tokens[0], rtol=1e-5, atol=1e-6)
    assert bert.embed(texts, pooling="pooler").shape == (2, width)
    assert [t.shape[0] for t in bert.embed(texts, pooling="none")] == [int(m.sum()) for m in mask]
    with pytest.raises(InvalidInputError, match="pooling"):
        bert.embed("x", pooling="max")


def test_infer_tensors_raw_access(bert):
    out = bert.infer_tensors("pretraining", {"TEXT": np.array([["the cat sat"], ["on the mat"]], dtype=object)})
    assert set(out) == {"INPUT_IDS", "TOKEN_TOP_IDS", "TOKEN_TOP_PROBS", "NSP_PROBS"}
    assert out["TOKEN_TOP_IDS"].shape == (*out["INPUT_IDS"].shape, 5)
    np.testing.assert_allclose(out["NSP_PROBS"].sum(axis=1), 1.0, atol=1e-5)
    assert np.all(np.diff(out["TOKEN_TOP_PROBS"], axis=-1) <= 1e-7)  # best first
    only = bert.infer_tensors("pretraining", {"TEXT": np.array([["x"]])}, outputs=["NSP_PROBS"])  # unicode array
    assert list(only) == ["NSP_PROBS"]


def test_a_list_longer_than_max_batch_size_is_split_in_order(bert, url):
    texts = [f"item {i} is [MASK]." for i in range(70)]  # 64 is the server's limit: two requests
    results = bert.fill_mask(texts, top_k=1)
    assert [r[0]["sequence"].split(" is ")[0] for r in results] == [f"item {i}" for i in range(70)]
    with MobileBertClient(url, max_batch_size=16) as small_batches:  # 5 requests
        tagged = small_batches.tag([f"Person {i} met Alice." for i in range(20)])
        assert len(tagged) == 20 and all(e["word"] for r in tagged for e in r)


# -- the asyncio twin -----------------------------------------------------------------------------------------------


def test_async_client_has_every_method(url, bert):
    async def run() -> dict:
        async with AsyncMobileBertClient(url, max_batch_size=8) as client:
            return {
                "tasks": await client.tasks(),
                "ready": await client.is_ready(),
                "fill": await client.fill_mask("Paris is a [MASK].", top_k=2),
                "fill_many": await client.fill_mask([f"item {i} is [MASK]." for i in range(30)], top_k=1),
                "classify": await client.classify(["good", "bad"], top_k=None),
                "nsp": await client.next_sentence("A.", "B."),
                "choice": await client.multiple_choice(["Q1?", "Q2?", "Q3?"], ["x", "y"]),
                "tag": await client.tag("John lives in Paris."),
                "answer": await client.answer("Where is it?", CONTEXT, top_k=2),
                "embed": await client.embed(["one", "two", "three"]),
                "raw": await client.infer_tensors(
                    "next_sentence", {"TEXT": np.array([["A"]]), "TEXT_PAIR": np.array([["B"]])}
                ),
                "metadata": await client.model_metadata("fill_mask"),
            }

    r = asyncio.run(run())
    assert r["tasks"] == list(TASKS) and r["ready"]
    assert len(r["fill"]) == 2 and r["fill"][0]["sequence"].startswith("paris is a")
    assert [x[0]["sequence"].split(" is ")[0] for x in r["fill_many"]] == [f"item {i}" for i in range(30)]
    assert len(r["classify"]) == 2 and all(
        sum(x["score"] for x in labels) == pytest.approx(1) for labels in r["classify"]
    )
    assert set(r["nsp"]) == {"is_next", "score"}
    assert len(r["choice"]) == 3 and all(c["choice"] in ("x", "y") for c in r["choice"])
    assert all(e["word"] == "John lives in Paris."[e["start"] : e["end"]] for e in r["tag"])
    assert len(r["answer"]) == 2 and all(a["answer"] == CONTEXT[a["start"] : a["end"]] for a in r["answer"])
    assert r["embed"].shape == (3, bert.embed("one").shape[0])
    assert r["raw"]["RESULT"].shape == (1, 1) and r["metadata"]["name"] == "fill_mask"


def test_async_map_bounded_concurrency_progress_and_errors(url, capsys):
    texts = [f"item {i} is [MASK]." for i in range(24)]
    in_flight = {"now": 0, "peak": 0}

    async def run():
        async with AsyncMobileBertClient(url) as client:

            async def tracked(text: str) -> list:
                in_flight["now"] += 1
                in_flight["peak"] = max(in_flight["peak"], in_flight["now"])
                try:
                    return await client.fill_mask(text, top_k=1)
                finally:
                    in_flight["now"] -= 1

            by_name = await client.map("fill_mask", texts, concurrency=4, progress=True, top_k=2)
            by_callable = await client.map(tracked, texts, concurrency=3, progress=False)
            answers = await client.map(
                "answer", [("Who built it?", CONTEXT), {"question": "When?", "context": CONTEXT}]
            )
            mixed = await client.map("fill_mask", ["a [MASK].", "no mask"], progress=False, return_exceptions=True)
            with pytest.raises(InvalidInputError, match="no \\[MASK\\] token"):
                await client.map("fill_mask", ["a [MASK].", "no mask", "b [MASK]."], concurrency=2, progress=False)
            with pytest.raises(InvalidInputError, match="unknown method"):
                await client.map("close", texts)
            return by_name, by_callable, answers, mixed

    by_name, by_callable, answers, mixed = asyncio.run(run())
    assert [r[0]["sequence"].split(" is ")[0] for r in by_name] == [f"item {i}" for i in range(24)]
    assert all(len(r) == 2 for r in by_name)
    assert [r[0]["sequence"] for r in by_callable] == [r[0]["sequence"] for r in by_name]
    assert in_flight["peak"] == 3  # bounded, and actually concurrent
    assert all(a["answer"] == CONTEXT[a["start"] : a["end"]] for a in answers)
    assert isinstance(mixed[0], list) and isinstance(mixed[1], InvalidInputError)
    assert "24/24" in capsys.readouterr().err  # the progress bar


# -- retries, failover, timeouts, TLS ---------------------------------------------------------------------------------


def test_calls_retry_until_a_restarted_server_is_back(spare_server, caplog):
    server = running(spare_server)
    client = MobileBertClient(server.grpc_url, retries=40, backoff_initial_s=0.05, backoff_max_s=0.5)
    assert client.fill_mask("before [MASK].", top_k=1)
    server.stop()
    restarted = threading.Thread(target=lambda: (time.sleep(1.0), server.start()))
    restarted.start()
    try:
        with caplog.at_level(logging.WARNING, logger="client"):
            started = time.monotonic()
            during = client.fill_mask("during [MASK].", top_k=1)  # sent while the server is down
            waited = time.monotonic() - started
        after = [client.fill_mask(f"after {i} [MASK].", top_k=1) for i in range(3)]
    finally:
        restarted.join()
    assert during[0]["sequence"].startswith("during") and len(after) == 3
    assert waited > 1.0 and retry_records(caplog), "the call must have waited for the restart, retrying"
    assert all("UNAVAILABLE" in r.getMessage() for r in retry_records(caplog))
    client.close()


def test_round_robin_and_failover_between_two_servers(spare_server, triton_server, caplog):
    spare = running(spare_server)
    urls = [spare.grpc_url, triton_server.grpc_url]
    before = [post_requests(u) for u in urls]
    client = MobileBertClient(urls, retries=1, **FAST_RETRY)
    for i in range(6):
        client.fill_mask(f"spread {i} [MASK].")
    spread = [post_requests_since(u, b, 3) for u, b in zip(urls, before, strict=True)]
    assert spread == [3, 3]  # round-robin

    spare.stop()
    before = post_requests(triton_server.grpc_url)
    with caplog.at_level(logging.WARNING, logger="client"):
        results = [client.fill_mask(f"failover {i} [MASK].", top_k=1) for i in range(6)]
    # The stopped server is tried, fails fast, and is then skipped for a while instead of costing every call.
    assert [spare.grpc_url in r.getMessage() for r in retry_records(caplog)] == [True]
    client.close()

    async def async_calls():
        async with AsyncMobileBertClient(urls, retries=0) as aclient:
            return await aclient.map("fill_mask", ["x [MASK]."] * 4, progress=False)

    async_results = asyncio.run(async_calls())
    assert len(results) == 6 and len(async_results) == 4
    assert post_requests_since(triton_server.grpc_url, before, 10) == 10


def test_unreachable_servers_raise_server_unavailable_after_retries(caplog):
    dead = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    with caplog.at_level(logging.WARNING, logger="client"), pytest.raises(ServerUnavailableError) as error:
        MobileBertClient(dead[0], retries=2, **FAST_RETRY).fill_mask("x [MASK]")
    assert error.value.attempts == 3 and len(retry_records(caplog)) == 3
    assert dead[0] in str(error.value) and "tritonserver is running" in str(error.value)
    with pytest.raises(ServerUnavailableError) as error:
        MobileBertClient(dead, retries=1, **FAST_RETRY).tasks()
    assert error.value.attempts == 4 and all(u in str(error.value) for u in dead)

    async def run():
        async with AsyncMobileBertClient(dead[0], retries=1, **FAST_RETRY) as client:
            assert not await client.is_ready()
            await client.embed("x")

    with pytest.raises(ServerUnavailableError):
        asyncio.run(run())
    client = MobileBertClient(dead, retries=0)
    assert not client.is_ready()
    with pytest.raises(ServerUnavailableError, match="not ready after"):
        client.wait_until_ready(timeout=0.3, poll_s=0.1)


def test_a_tiny_timeout_raises_request_timeout(url, caplog):
    with caplog.at_level(logging.WARNING, logger="client"), pytest.raises(RequestTimeoutError) as error:
        MobileBertClient(url, timeout_s=1e-4, retries=1, **FAST_RETRY).answer("Where?", CONTEXT)
    assert error.value.attempts == 2 and len(retry_records(caplog)) == 2  # a deadline is worth retrying
    assert url in str(error.value) and "timeout" in str(error.value)

    async def run():
        async with AsyncMobileBertClient(url, timeout_s=1e-4, retries=0) as client:
            await client.tag("John")

    with pytest.raises(RequestTimeoutError):
        asyncio.run(run())


def test_headers_compression_and_keepalive_options(url):
    keepalive = grpcclient.KeepAliveOptions(keepalive_time_ms=20_000, keepalive_permit_without_calls=True)
    for compression in ("gzip", "deflate"):
        options = ConnectionOptions(
            urls=(url,), headers={"authorization": "Bearer test-token"}, compression=compression, keepalive=keepalive
        )
        with MobileBertClient(options=options) as client:
            assert len(client.embed(["compressed request"] * 3)) == 3 and client.tasks()


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> Path:
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate, made with the openssl CLI."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is needed to make test certificates")
    folder = tmp_path_factory.mktemp("tls")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    (folder / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=mobilebert-test-ca")  # fmt: skip
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={name}")  # fmt: skip
        extra = ["-extfile", "san.ext"] if name == "server" else []
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "2", *extra)  # fmt: skip
    return folder


def test_tls_with_mutual_authentication(built_repository, certificates, tmp_path):
    # tritonserver 2.51 (the pip-installed build) supports gRPC TLS: --grpc-use-ssl(-mutual), server cert/key, root.
    c = certificates
    tls = ServerTls(certificate=c / "server.pem", private_key=c / "server.key", client_ca=c / "ca.pem")
    with small_server(built_repository, tmp_path / "tls.log", tls=tls) as server:
        port = server.config.grpc_port
        tls = TlsOptions(
            root_certificates=c / "ca.pem", private_key=c / "client.key", certificate_chain=c / "client.pem"
        )
        with MobileBertClient(f"localhost:{port}", tls=tls, retries=0) as client:
            assert client.tasks() == ["fill_mask"] and len(client.fill_mask("secure [MASK].", top_k=2)) == 2

        async def run():
            async with AsyncMobileBertClient(f"127.0.0.1:{port}", tls=tls) as client:
                return await client.fill_mask("secure [MASK].", top_k=1)

        assert len(asyncio.run(run())) == 1
        # No client certificate, or no TLS at all: the server closes the connection; the message points at TLS.
        for wrong in (TlsOptions(root_certificates=c / "ca.pem"), None):
            with pytest.raises(ServerUnavailableError, match="TLS"):
                MobileBertClient(f"localhost:{port}", tls=wrong, retries=0, timeout_s=5).fill_mask("x [MASK].")


# -- typed errors -----------------------------------------------------------------------------------------------------


def test_typed_errors_name_the_problem(bert, url, spare_server):
    assert all(issubclass(e, MobileBertClientError) for e in (ServerUnavailableError, TaskNotDeployedError,
                                                              InvalidInputError, RequestTimeoutError,
                                                              AccessDeniedError))  # fmt: skip
    with pytest.raises(TaskNotDeployedError) as error:
        bert.infer_tensors("no_such_task", {"TEXT": np.array([["x"]], dtype=object)})
    assert "no_such_task" in str(error.value) and url in str(error.value) and error.value.status == "NOT_FOUND"

    spare = running(spare_server)  # serves fill_mask only
    with MobileBertClient(spare.grpc_url) as partial:
        assert partial.tasks() == ["fill_mask"]
        with pytest.raises(TaskNotDeployedError, match="'text_classification' is not deployed"):
            partial.classify("hello")
        assert partial.fill_mask("still [MASK].", top_k=1)

    # The server rejects the text; the error carries its message and is not retried (one request reached the model).
    before = post_requests(url)
    with pytest.raises(InvalidInputError) as error:
        MobileBertClient(url, retries=3).fill_mask("no mask token here")
    assert "no [MASK] token in the text" in str(error.value) and error.value.attempts == 1
    assert post_requests_since(url, before, 1) == 1
    with pytest.raises(InvalidInputError) as error:
        MobileBertClient(url, retries=3).infer_tensors("fill_mask", {"WRONG": np.array([["x"]], dtype=object)})
    assert error.value.status == "INVALID_ARGUMENT" and error.value.attempts == 1 and "WRONG" in str(error.value)


def test_invalid_arguments_are_caught_before_sending():
    nowhere = MobileBertClient("127.0.0.1:9", retries=0)  # nothing is sent, so nothing needs to listen
    calls = [
        lambda: nowhere.classify(3),
        lambda: nowhere.fill_mask(["ok [MASK]", 5]),
        lambda: nowhere.fill_mask(b"bytes [MASK]"),
        lambda: nowhere.next_sentence(["a", "b"], ["c", "d", "e"]),
        lambda: nowhere.answer("q", "c", top_k=0),
        lambda: nowhere.multiple_choice(["p1", "p2"], [["a"], ["b"], ["c"]]),
        lambda: nowhere.infer_tensors("fill_mask", {}),
    ]
    for call in calls:
        with pytest.raises(InvalidInputError) as error:
            call()
        assert error.value.attempts == 0


# -- command line and a torch-free install -------------------------------------------------------------------------


def test_cli_prints_readable_results_and_json(url, capsys):
    def cli(*args: str) -> str:
        assert cli_main(list(args)) == 0
        return capsys.readouterr().out

    assert "[MASK]" not in cli("infer", "fill-mask", "Paris is the [MASK] of France.", "--url", url, "--top-k", "2")
    labels = json.loads(cli("infer", "classify", "great", "--url", url, "--top-k", "0", "--json"))
    assert len(labels) >= 2
    assert set(json.loads(cli("infer", "next-sentence", "A.", "B.", "--url", url, "--json"))) == {"is_next", "score"}
    assert "choice" in cli("infer", "multiple-choice", "Eat?", "an apple", "a rock", "--url", url)
    assert json.loads(cli("infer", "tag", "John lives in Paris.", "--url", url, "--json"))
    answer = json.loads(cli("infer", "answer", "Where?", CONTEXT, "--url", url, "--json"))
    assert answer["answer"] == CONTEXT[answer["start"] : answer["end"]]
    assert "shape (" in cli("infer", "embed", "one", "two", "--url", url, "--pooling", "cls")
    assert len(json.loads(cli("infer", "embed", "one", "--url", url, "--json"))) > 16
    assert cli("tasks", "--url", url).split() == list(TASKS)
    assert cli_main(["infer", "fill-mask", "x [MASK]", "--url", f"127.0.0.1:{free_port()}", "--retries", "0"]) == 1
    assert "cannot reach the Triton server" in capsys.readouterr().err


def test_cli_entry_points(url):
    script = Path(sys.executable).parent / "mobilebert-triton"
    assert script.is_file(), "pip install -e . registers the console script"
    out = subprocess.run(
        [str(script), "infer", "fill-mask", "The capital of France is [MASK].", "--url", url, "--json", "--top-k", "3"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert [set(c) for c in json.loads(out.stdout)] == [{"score", "token", "token_str", "sequence"}] * 3
    assert json.loads(cli_output(["tasks", "--url", url, "--json"])) == list(TASKS)
    bad = subprocess.run([sys.executable, "-m", "client", "infer", "fill-mask", "no mask", "--url", url],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert bad.returncode == 1 and "no [MASK] token" in bad.stderr


NO_TORCH = """
import importlib.abc
import sys


class Blocker(importlib.abc.MetaPathFinder):
    # As if torch, transformers and onnxruntime were not installed.
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "transformers", "onnxruntime"}:
            raise ImportError(f"{name} is not installed (blocked by the test)")
        return None


sys.meta_path.insert(0, Blocker())
"""

USE_CLIENT = """
import json, sys
for heavy in ("torch", "transformers", "onnxruntime"):
    try:
        __import__(heavy)
    except ImportError:
        pass
    else:
        raise SystemExit(f"{heavy} was importable: the blocker is not active")
from client import MobileBertClient
with MobileBertClient(sys.argv[1]) as bert:
    result = {"fill": bert.fill_mask("Hello [MASK].", top_k=2), "embed": bert.embed("hi").shape[0]}
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "onnxruntime"))
print(json.dumps({"result": result, "loaded": loaded}))
"""


def test_client_works_without_torch(url, tmp_path):
    (tmp_path / "sitecustomize.py").write_text(NO_TORCH)
    (tmp_path / "use_client.py").write_text(USE_CLIENT)
    env = {"PYTHONPATH": str(tmp_path), "PATH": str(Path(sys.executable).parent)}
    out = subprocess.run([sys.executable, str(tmp_path / "use_client.py"), url], capture_output=True, text=True,
                         env=env, timeout=60, cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["loaded"] == [] and len(report["result"]["fill"]) == 2 and report["result"]["embed"] > 0


def test_internal_server_failures_are_server_errors_not_input_errors_and_not_retried():
    from tritonclient.utils import InferenceServerException

    from client import ServerError
    from client.errors import is_transient, translate

    exc = InferenceServerException(
        "in ensemble 'fill_mask', Stub process 'fill_mask_post_0_0' is not healthy.", status="StatusCode.INTERNAL"
    )
    error = translate(exc, url="127.0.0.1:8001", model="fill_mask", attempts=1)
    assert isinstance(error, ServerError) and not isinstance(error, InvalidInputError)
    assert "not healthy" in str(error) and "server log" in str(error)
    assert not is_transient(exc)
