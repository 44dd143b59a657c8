"""Bad input, faults and access control against the real server: clear errors, the server stays up, nothing lost.

Raw tritonclient requests (bypassing the client library) go straight to every model of the built repository.
Destructive tests (killing a backend stub, reloading a model under load) use their own server.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from deploy.server import GRPC_ADMIN_HEADER, TritonServer, start_on_free_ports
from deploy.tasks import DEPLOYMENTS
from deploy.watchdog import stub_processes

# Functional tier: real Triton servers or ONNX exports (`make test-quick` leaves these out).
pytestmark = pytest.mark.functional

DENIED = r"(?i)permission|unauthenticated|restricted|admin-key"


def _text_input(name: str, values: list, batched: bool = True, dtype: str = "BYTES") -> grpcclient.InferInput:
    array = np.array([v if isinstance(v, bytes) else str(v).encode() for v in values], dtype=np.object_)
    if batched:
        array = array.reshape(-1, 1)
    tensor = grpcclient.InferInput(name, list(array.shape), dtype)
    tensor.set_data_from_numpy(array)
    return tensor


def _ids_input(name: str, array: np.ndarray) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(array.shape), "INT64")
    tensor.set_data_from_numpy(array)
    return tensor


@pytest.fixture(scope="module")
def grpc(triton_server):
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    yield client
    client.close()


def _still_serves(client: grpcclient.InferenceServerClient) -> None:
    """Every task answers a valid request (on the same connection)."""
    for task, d in DEPLOYMENTS.items():
        if d.batched:
            inputs = [_text_input(t.name, ["a valid [MASK] text"]) for t in d.inputs if not t.optional]
        else:
            inputs = [_text_input("PROMPT", ["q"], batched=False), _text_input("CHOICES", ["a", "b"], batched=False)]
        result = client.infer(task, inputs)
        assert result.as_numpy(d.outputs[0].name) is not None, task


def test_wrong_tensor_names_dtypes_and_shapes_get_clear_errors(grpc):
    cases = [
        ("fill_mask", [_text_input("TXT", ["x"])], "TXT"),
        ("question_answering", [_text_input("QUESTION", ["q"])], "CONTEXT"),
        ("text_classification", [_ids_input("TEXT", np.zeros((1, 1), np.int64))], "data-type|datatype|TYPE_INT64"),
        ("text_classification", [_text_input("TEXT", ["a", "b"], batched=False)], "shape|dims"),
        (
            "multiple_choice",
            [_text_input("PROMPT", ["q", "r"], batched=False), _text_input("CHOICES", ["a"], False)],
            "unexpected shape for input 'PROMPT'",
        ),
    ]
    for model, inputs, message in cases:
        with pytest.raises(InferenceServerException, match=message):
            grpc.infer(model, inputs)
    _still_serves(grpc)


def test_hostile_text_is_handled_or_refused_by_name(grpc):
    results = grpc.infer(
        "text_classification",
        [_text_input("TEXT", ["", "   \t\n ", "nul\x00byte and \x07 bell \x1b[31m", "🙂" * 300, "ä" * 5000])],
    )
    assert results.as_numpy("RESULT").shape == (5, 1)
    with pytest.raises(InferenceServerException, match="not valid UTF-8"):
        grpc.infer("text_classification", [_text_input("TEXT", [b"\xff\xfe bad bytes"])])
    with pytest.raises(InferenceServerException, match=r"TEXT row 0 is 1048576 bytes; the limit is 262144"):
        grpc.infer("text_classification", [_text_input("TEXT", ["x" * (1 << 20)])])
    with pytest.raises(InferenceServerException, match="batch-size must be <= 64"):
        grpc.infer("fill_mask", [_text_input("TEXT", ["[MASK]"] * 65)])
    # A QA context shorter than the question: answered from the context alone.
    qa = grpc.infer(
        "question_answering",
        [
            _text_input("QUESTION", ["what is the long question about the context here?"]),
            _text_input("CONTEXT", ["ok"]),
        ],
    )
    assert b'"answer": "ok"' in qa.as_numpy("RESULT")[0, 0]
    _still_serves(grpc)


@pytest.mark.parametrize("task", sorted(DEPLOYMENTS))
def test_out_of_range_token_ids_sent_straight_to_the_graph_are_refused_by_name(grpc, task):
    d = DEPLOYMENTS[task]
    shape = (1, 8) if d.batched else (1, 2, 8)
    ids = np.full(shape, 5, np.int64)
    for bad, name in ((10**6, "input_ids"), (-1, "input_ids"), (7, "token_type_ids"), (3, "attention_mask")):
        feed = {
            "input_ids": ids.copy(),
            "attention_mask": np.ones(shape, np.int64),
            "token_type_ids": np.zeros(shape, np.int64),
        }
        feed[name].reshape(-1)[3] = bad
        with pytest.raises(InferenceServerException, match=rf"{name} holds {bad}, outside the valid range"):
            grpc.infer(d.onnx_model, [_ids_input(n, a) for n, a in feed.items()])
    too_long = (1, 600) if d.batched else (1, 2, 600)
    feed = {
        n: np.ones(too_long, np.int64) if n != "token_type_ids" else np.zeros(too_long, np.int64)
        for n in ("input_ids", "attention_mask", "token_type_ids")
    }
    with pytest.raises(InferenceServerException, match="sequence length 600 exceeds the model's maximum 512"):
        grpc.infer(d.onnx_model, [_ids_input(n, a) for n, a in feed.items()])
    ok = {"input_ids": ids, "attention_mask": np.ones(shape, np.int64), "token_type_ids": np.zeros(shape, np.int64)}
    grpc.infer(d.onnx_model, [_ids_input(n, a) for n, a in ok.items()])


def test_concurrent_requests_to_a_pipelined_runner_each_get_their_own_answer_or_error(triton_server, grpc):
    """The runner keeps a batch in flight per stream and answers through each request's response sender: under
    concurrent load (batches forming while both streams run), every request gets exactly its own outputs, the same
    as when sent alone, and a bad one among them its own error."""
    model = DEPLOYMENTS["question_answering"].onnx_model
    config = grpc.get_model_config(model, as_json=True)["config"]
    assert int(config["parameters"]["streams"]["string_value"]) >= 2 and config["instance_group"][0]["count"] == 1
    rng = np.random.default_rng(7)

    def feed(index: int) -> dict[str, np.ndarray]:
        length = int(rng.integers(6, 24))
        ids = rng.integers(5, 900, (1, length)).astype(np.int64)
        mask = np.ones_like(ids)
        if index % 5 == 3:
            ids[0, 2] = 10**6  # out of the vocabulary: refused before the batch goes to a stream
        if index % 7 == 5:
            mask = np.ones((1, length + 1), np.int64)  # passes the checks, fails on the stream's thread
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}

    def call(arrays: dict[str, np.ndarray]):
        try:  # a lost response fails here in 60 s rather than hanging the test
            result = grpc.infer(model, [_ids_input(n, a) for n, a in arrays.items()], client_timeout=60)
        except InferenceServerException as exc:
            return exc
        return [result.as_numpy(o["name"]) for o in config["output"]]

    feeds = [feed(i) for i in range(24)]
    alone = [call(f) for f in feeds]
    with ThreadPoolExecutor(12) as pool:
        together = list(pool.map(call, feeds))
    for index, (one, many) in enumerate(zip(alone, together, strict=True)):
        if index % 5 == 3:
            assert isinstance(one, InferenceServerException) and isinstance(many, InferenceServerException)
            assert "input_ids holds 1000000, outside the valid range" in many.message()
            continue
        if index % 7 == 5:
            assert isinstance(one, InferenceServerException) and isinstance(many, InferenceServerException)
            assert "onnxruntime: " in many.message() and "Deadline" not in many.message()
            continue
        for a, b in zip(one, many, strict=True):
            assert a.shape == b.shape
            np.testing.assert_allclose(a, b, rtol=1e-3, atol=2e-2)  # INT8-dynamic: batch company moves scales
    _still_serves(grpc)


def test_tensors_sent_straight_to_post_processing_are_checked_by_triton_then_by_the_model(grpc):
    bad_logits = grpcclient.InferInput("logits", [1, 7], "FP32")
    bad_logits.set_data_from_numpy(np.zeros((1, 7), np.float32))
    with pytest.raises(InferenceServerException, match="unexpected shape for input 'logits'"):
        grpc.infer("text_classification_post", [bad_logits])
    # Well-shaped tensors that make no sense (no [MASK] among the ids): the model's own error, INVALID_ARGUMENT.
    tensors = {
        "input_ids": np.full((1, 6), 7, np.int64),
        "attention_mask": np.ones((1, 6), np.int64),
        "mask_positions": np.zeros((1, 6), np.int64),
        "top_ids": np.zeros((1, 6, 10), np.int64),
    }
    inputs = [_ids_input(n, a) for n, a in tensors.items()]
    valid = grpcclient.InferInput("mask_valid", [1, 6], "BOOL")
    valid.set_data_from_numpy(np.zeros((1, 6), bool))
    probs = grpcclient.InferInput("top_probs", [1, 6, 10], "FP32")
    probs.set_data_from_numpy(np.zeros((1, 6, 10), np.float32))
    with pytest.raises(InferenceServerException, match=r"INVALID_ARGUMENT.*fill_mask: row 0: no \[MASK\] token"):
        grpc.infer("fill_mask_post", [*inputs, valid, probs])
    _still_serves(grpc)


# ------------------------------------------------------------------------------------------------ access control


def test_model_control_and_shared_memory_need_the_admin_key(triton_server, grpc):
    with pytest.raises(InferenceServerException, match=DENIED):
        grpc.unload_model("fill_mask")
    with pytest.raises(InferenceServerException, match=DENIED):
        grpc.get_system_shared_memory_status()
    with pytest.raises(InferenceServerException, match=DENIED):
        grpc.get_model_repository_index(headers={GRPC_ADMIN_HEADER: "wrong"})
    index = grpc.get_model_repository_index(headers={GRPC_ADMIN_HEADER: triton_server.admin_key}, as_json=True)
    assert {m["name"] for m in index["models"]} >= set(DEPLOYMENTS)
    # Inference, health and metadata stay open.
    assert grpc.is_server_ready() and grpc.get_model_metadata("fill_mask").name == "fill_mask"


def _listening_addresses(port: int) -> set[str]:
    """The local addresses of TCP sockets listening on `port`, from the kernel's socket tables (no traffic)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            address, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:  # 0A = LISTEN
                continue
            raw = bytes.fromhex(address)
            # /proc prints each 32-bit word in host (little-endian) order.
            words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.add(str(ipaddress.ip_address(words)))
    return found


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return (getattr(ip, "ipv4_mapped", None) or ip).is_loopback  # an IPv6 socket on ::ffff:127.0.0.1 counts


def test_server_listens_on_loopback_only(triton_server):
    config = triton_server.config
    for port in (config.grpc_port, config.http_port, config.metrics_port):
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass  # it serves on loopback...
        listening = _listening_addresses(port)
        # ...and its listening sockets are bound to loopback alone: no wildcard (0.0.0.0 / ::), no other interface.
        assert listening and all(_is_loopback(a) for a in listening), (port, listening)


# ----------------------------------------------------------------------------------------------------- faults


@pytest.fixture()
def own_server(built_repository, tmp_path):
    repository, record = built_repository
    with start_on_free_ports(repository, models=record["models"], log_file=tmp_path / "server.log") as server:
        yield server


def _stub_pids(server: TritonServer, model: str) -> list[int]:
    return [pid for pid, name in stub_processes(server.config.repository, server.process.pid).items() if name == model]


def test_a_killed_backend_stub_gives_a_clear_error_not_a_hang_and_the_watchdog_restarts_it(own_server):
    client = grpcclient.InferenceServerClient(own_server.grpc_url)
    request = [_text_input("TEXT", ["a text"])]
    client.infer("text_classification", request)
    pids = _stub_pids(own_server, "text_classification_post")
    assert pids, "no stub process found for text_classification_post"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    errors, recovered_after = [], None
    start = time.monotonic()
    while time.monotonic() - start < 60:
        try:
            client.infer("text_classification", request, client_timeout=10.0)
            recovered_after = time.monotonic() - start
            break
        except InferenceServerException as exc:
            errors.append(str(exc))
            time.sleep(0.2)
    client.close()
    assert all("is not healthy" in e for e in errors), errors
    assert recovered_after is not None and recovered_after < 30, f"never recovered; errors: {errors[-3:]}"
    assert [m for m, _ in own_server.watchdog.restarts] == ["text_classification_post"]
    assert set(_stub_pids(own_server, "text_classification_post")).isdisjoint(pids)


def test_reloading_a_model_under_load_loses_no_request(own_server):
    client = grpcclient.InferenceServerClient(own_server.grpc_url)
    stop, failures, done = threading.Event(), [], [0]

    def load() -> None:
        local = grpcclient.InferenceServerClient(own_server.grpc_url)
        while not stop.is_set():
            try:
                local.infer("text_classification", [_text_input("TEXT", ["reload under load"])])
                done[0] += 1
            except InferenceServerException as exc:
                failures.append(str(exc))
        local.close()

    threads = [threading.Thread(target=load, daemon=True) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        headers = {GRPC_ADMIN_HEADER: own_server.admin_key}
        for model in ("text_classification_onnx", "text_classification_post"):
            config = client.get_model_config(model, as_json=True)["config"]
            config.setdefault("parameters", {})["restart_generation"] = {"string_value": "reload-test"}
            # A changed config makes Triton build a new instance and swap it in when it is ready.
            client.load_model(model, headers=headers, config=json.dumps(config))
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
        client.close()
    assert done[0] > 0
    assert failures == [], failures[:3]


# ------------------------------------------------------------------------------------------------ load and faults


def test_a_short_soak_on_every_task_fails_nothing_and_memory_stays_flat(own_server):
    from deploy.soak import run_soak

    report = run_soak(own_server, seconds=float(os.environ.get("SOAK_SECONDS", "20")), concurrency=4)
    print("\n" + report.table())
    assert report.failed == 0, report.errors[:3]
    assert set(report.calls) == {t for t in DEPLOYMENTS if t != "pretraining"}
    assert all(n > 0 for n in report.calls.values())
    assert "tritonserver" in report.rss_before_mb and len(report.rss_before_mb) >= len(DEPLOYMENTS)
    growth = report.rss_growth_mb()
    # Flat: no process grows by more than 64 MB (allocator high-water marks settle after warm-up).
    assert max(growth.values()) < 64, growth


def test_server_sigkilled_and_restarted_under_load_retries_carry_calls_through_with_right_answers(own_server):
    from client import MobileBertClient

    texts = [f"sentence number {i} about the weather" for i in range(8)]
    reference_client = MobileBertClient(own_server.grpc_url)
    reference = {t: reference_client.classify(t, top_k=None) for t in texts}
    reference_client.close()
    bert = MobileBertClient(own_server.grpc_url, retries=60, backoff_initial_s=0.05, backoff_max_s=0.5, timeout_s=20)
    stop, results, failures = threading.Event(), [], []

    def load() -> None:
        i = 0
        while not stop.is_set():
            text = texts[i % len(texts)]
            try:
                results.append((text, bert.classify(text, top_k=None)))
            except Exception as exc:
                failures.append(repr(exc))
            i += 1

    threads = [threading.Thread(target=load, daemon=True) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        before = len(results)
        os.killpg(own_server.process.pid, signal.SIGKILL)
        own_server.process.wait()
        own_server.process = None
        own_server.start()
        time.sleep(2.0)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
        bert.close()
    print(f"\n{len(results)} calls answered ({before} before the kill), {len(failures)} failed")
    assert failures == [], failures[:3]
    assert len(results) > before  # calls went on after the restart
    for text, got in results:  # nobody got a wrong answer
        want = reference[text]
        assert [g["label"] for g in got] == [w["label"] for w in want]
        np.testing.assert_allclose([g["score"] for g in got], [w["score"] for w in want], atol=5e-3)


def test_every_model_refuses_unknown_tensor_names_and_wrong_dtypes_and_keeps_serving(grpc, built_repository):
    _, record = built_repository
    for model in record["models"]:
        metadata = grpc.get_model_metadata(model, as_json=True)
        config = grpc.get_model_config(model, as_json=True)["config"]
        batched = int(config.get("max_batch_size", 0)) > 0
        first = metadata["inputs"][0]
        shape = [1 if d == "-1" or int(d) < 0 else int(d) for d in first["shape"]]
        if batched:
            shape[0] = 1
        stray = grpcclient.InferInput("NOT_A_TENSOR", shape, first["datatype"])
        with pytest.raises(InferenceServerException, match="NOT_A_TENSOR"):
            grpc.infer(model, [stray])
        wrong = "FP32" if first["datatype"] != "FP32" else "INT64"
        tensor = grpcclient.InferInput(first["name"], shape, wrong)
        tensor.set_data_from_numpy(np.zeros(shape, np.float32 if wrong == "FP32" else np.int64))
        with pytest.raises(InferenceServerException, match=r"(?i)data-?type|datatype|expected"):
            grpc.infer(model, [tensor])
    _still_serves(grpc)
