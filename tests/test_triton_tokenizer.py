"""The Triton tokenizer model, served by the real tritonserver, matches MobileBertTokenizer and pads to buckets."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from deploy.build import BuildError
from deploy.model_configs import parse_config, tokenizer_config
from deploy.repository import add_tokenizer
from deploy.server import start_on_free_ports
from model_def import MobileBertTokenizer
from model_def.demo_checkpoint import write_demo_checkpoints

# Functional tier: real Triton servers or ONNX exports (`make test-quick` leaves these out).
pytestmark = pytest.mark.functional

BUCKETS = (16, 32, 128)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("triton-tok")
    checkpoint = write_demo_checkpoints(root / "demo", small=True)["pretraining"]
    repo = root / "repo"
    add_tokenizer(repo, checkpoint, length_buckets=BUCKETS)
    with start_on_free_ports(repo, log_file=root / "server.log") as server:
        yield grpcclient.InferenceServerClient(server.grpc_url), MobileBertTokenizer.from_pretrained(checkpoint)


def _infer(client, texts, pairs=None):
    inputs = []
    for name, values in (("TEXT", texts), ("TEXT_PAIR", pairs)):
        if values is None:
            continue
        tensor = grpcclient.InferInput(name, [len(values), 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[v if isinstance(v, bytes) else v.encode()] for v in values], object))
        inputs.append(tensor)
    result = client.infer("tokenizer", inputs)
    return {n: result.as_numpy(n) for n in ("input_ids", "attention_mask", "token_type_ids", "offsets")}


def test_ids_equal_the_python_tokenizer_padded_to_the_smallest_fitting_bucket(served):
    client, tok = served
    texts = ["The capital of France is [MASK].", "", "Zürich's café serves 中文 and emoji 🙂 too!"]
    out = _infer(client, texts)
    ref = tok(texts, padding="max_length", max_length=16, return_offsets_mapping=True, return_tensors="np")
    assert out["input_ids"].shape == (3, 16)
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        assert np.array_equal(out[name], ref[name]), name
    assert np.array_equal(out["offsets"], ref["offset_mapping"])


def test_pairs_match_and_long_text_is_truncated_to_the_largest_bucket(served):
    client, tok = served
    question, context = "Where is the tower?", "The tower stands in Paris. " * 40
    out = _infer(client, [question, "short"], [context, "pair"])
    ref = tok(
        [question, "short"],
        [context, "pair"],
        truncation="longest_first",
        max_length=128,
        padding="max_length",
        return_tensors="np",
    )
    assert out["input_ids"].shape == (2, 128)
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        assert np.array_equal(out[name], ref[name]), name


def test_invalid_utf8_gets_a_clear_error_and_the_model_keeps_serving(served):
    client, _ = served
    with pytest.raises(InferenceServerException, match="TEXT is not valid UTF-8"):
        _infer(client, [b"ok", b"\xff\xfe broken"])
    assert _infer(client, ["still fine"])["input_ids"].shape == (1, 16)


def test_tokenizer_config_round_trips_through_triton_model_config(tmp_path):
    (tmp_path / "config.pbtxt").write_text(str(tokenizer_config()))
    parsed = parse_config(tmp_path / "config.pbtxt")
    assert parsed.parameters["length_buckets"].string_value == "32,64,128,256,512"
    assert [i.name for i in parsed.input] == ["TEXT", "TEXT_PAIR"] and parsed.input[1].optional
    (tmp_path / "bad.pbtxt").write_text('name: "x"\nmax_batch_sise: 8\n')
    with pytest.raises(ValueError, match=r"bad\.pbtxt is not a valid Triton ModelConfig"):
        parse_config(tmp_path / "bad.pbtxt")
    with pytest.raises(ValueError, match="truncation must be"):
        tokenizer_config(truncation="middle")


def test_a_length_bucket_beyond_the_tokenizers_model_max_length_is_refused_naming_both(tmp_path, demo_small):
    with pytest.raises(BuildError, match="largest length bucket 1024 exceeds the tokenizer's model_max_length 512"):
        add_tokenizer(tmp_path / "repo", demo_small / "pretraining", length_buckets=(32, 1024))
    assert not (tmp_path / "repo").exists()
