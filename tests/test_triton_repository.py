"""The built repository served by a real tritonserver: every ensemble answers over gRPC like the PyTorch reference.

The `fp32` profile must equal PyTorch (Hugging Face pipelines where one exists, model_def otherwise) to 1e-4; the
default INT8 profile must give the same predictions within the tolerances stated per test. Checkpoints are the small
random-weight demo set, so references are computed, never hard-coded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from unittest import mock

import numpy as np
import onnxruntime as ort
import pytest
import torch
import transformers
import tritonclient.grpc as grpcclient
from transformers.pipelines.document_question_answering import select_starts_ends
from tritonclient.utils import InferenceServerException

from client.tasks import FILL_MASK_CANDIDATES
from deploy.build import SOURCE_REPOSITORY, place_graph
from deploy.ensemble_configs import ensemble_config
from deploy.model_configs import graph_signature, parse_config
from deploy.tasks import DEPLOYMENTS
from export.heads import CHECKPOINT_KIND_FOR_TASK, FILL_MASK_TOP_K
from model_def import (
    MobileBertForMultipleChoice,
    MobileBertForNextSentencePrediction,
    MobileBertForPreTraining,
    MobileBertModel,
    MobileBertTokenizer,
)

# Functional tier: real Triton servers or ONNX exports (`make test-quick` leaves these out).
pytestmark = pytest.mark.functional

TEXTS = [
    "The company announced a new product in Paris on Monday.",
    "short",
    "Zürich's café serves 中文 and emoji 🙂 too, said Ana María García.",
    "a much longer sentence " + "that keeps going with more words and clauses, " * 6 + "before it finally ends.",
    "",
]
PAIRS = ["It was received well by the press.", "yes", "Le café est fermé.", "no", "an empty first text"]
MASKED = [
    "The capital of France is [MASK].",
    "She went to the [MASK] and bought [MASK] apples .",
    "Ünïcödé [MASK] works 🙂",
    "[MASK] " + "word " * 60,
]
QUESTIONS = ["Where was the product announced?", "Who serves coffee?", "what?"]
CONTEXTS = [TEXTS[0], TEXTS[2], "One. Two. Three. " * 20]


def _client(server) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(server.grpc_url)


def _infer(server, model: str, inputs: dict[str, list], outputs: list[str]) -> dict[str, np.ndarray]:
    tensors = []
    for name, values in inputs.items():
        array = np.array([v.encode() if isinstance(v, str) else v for v in values], dtype=np.object_)
        if DEPLOYMENTS[model].batched:
            array = array.reshape(-1, 1)
        tensor = grpcclient.InferInput(name, list(array.shape), "BYTES")
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    client = _client(server)
    try:
        result = client.infer(model, tensors, outputs=[grpcclient.InferRequestedOutput(o) for o in outputs])
        return {o: result.as_numpy(o) for o in outputs}
    finally:
        client.close()


def _results(server, model: str, inputs: dict[str, list]) -> list:
    rows = _infer(server, model, inputs, ["RESULT"])["RESULT"].reshape(-1)
    return [json.loads(r) for r in rows]


def _ckpt(demo_small: Path, task: str) -> str:
    return str(demo_small / CHECKPOINT_KIND_FOR_TASK[task])


# ------------------------------------------------------------------------------------------------------ configs


def test_every_config_of_every_profile_parses_as_a_triton_model_config(built_repository):
    repository, record = built_repository
    configs = sorted(repository.glob("*/config.pbtxt")) + sorted(repository.glob("*/configs/*.pbtxt"))
    # every model has its config.pbtxt; each ONNX model also has one file per profile other than the default
    alternative_profiles = set(record["profiles"]) - {"default"}
    assert alternative_profiles == {"fp32", "gpu", "stock-cpu", "stock-openvino"}
    assert len(configs) == len(record["models"]) + len(alternative_profiles) * len(DEPLOYMENTS)
    for path in configs:
        parse_config(path)
    for task, d in DEPLOYMENTS.items():
        gpu = parse_config(repository / d.onnx_model / "configs" / "gpu.pbtxt")
        assert gpu.backend == "onnxruntime" and gpu.default_model_filename == "model.int8-qdq.onnx"
        assert gpu.instance_group[0].kind == gpu.instance_group[0].KIND_GPU
        trt = gpu.optimization.execution_accelerators.gpu_execution_accelerator[0]
        assert trt.name == "tensorrt" and trt.parameters["precision_mode"] == "INT8", task
        assert "input_ids:" in trt.parameters["trt_profile_max_shapes"]
        cpu = parse_config(repository / d.onnx_model / "config.pbtxt")
        assert cpu.backend == "python" and cpu.parameters["graph"].string_value == "model.int8-dynamic.onnx"
        fp32 = parse_config(repository / d.onnx_model / "configs" / "fp32.pbtxt")
        assert fp32.parameters["graph"].string_value == "model.fp32.onnx"
        stock = parse_config(repository / d.onnx_model / "configs" / "stock-cpu.pbtxt")
        assert stock.backend == "onnxruntime" and stock.default_model_filename == "model.int8-dynamic.onnx"
        assert stock.instance_group[0].kind == stock.instance_group[0].KIND_CPU
        # no streams in the native backend: one instance per parallel inference of the runner (1 x 2 streams)
        runner_parallel = cpu.instance_group[0].count * int(cpu.parameters["streams"].string_value)
        assert runner_parallel == 2 and [g.count for g in stock.instance_group] == [runner_parallel]
        assert stock.parameters["intra_op_thread_count"].string_value == cpu.parameters["intra_op_threads"].string_value
        assert [(i.name, list(i.dims)) for i in stock.input] == [(i.name, list(i.dims)) for i in cpu.input]
        assert stock.max_batch_size == cpu.max_batch_size
        openvino = parse_config(repository / d.onnx_model / "configs" / "stock-openvino.pbtxt")
        assert openvino.backend == "openvino" and openvino.default_model_filename == "model.fp32.onnx"
        assert [g.count for g in openvino.instance_group] == [1] and openvino.input == cpu.input
        assert openvino.parameters["NUM_STREAMS"].string_value == "2"  # as parallel as the runner's 2 streams
        # The three graphs each profile names are in the version folder, each with its weights beside it, readable
        for name in ("model.int8-dynamic.onnx", "model.fp32.onnx", "model.int8-qdq.onnx"):
            assert (repository / d.onnx_model / "1" / name).is_file()
            assert (repository / d.onnx_model / "1" / f"{name}.data").stat().st_mode & 0o444 == 0o444


def test_committed_ensemble_configs_are_what_the_generator_writes(built_repository):
    repository, _ = built_repository
    for task, d in DEPLOYMENTS.items():
        inputs, outputs = graph_signature(repository / d.onnx_model / "1" / "model.int8-dynamic.onnx", d.batched)
        generated = ensemble_config(d, inputs, outputs, 64)
        committed = parse_config(SOURCE_REPOSITORY / task / "config.pbtxt")
        assert committed == generated, f"triton_repo/{task}/config.pbtxt is stale: run python -m deploy build"


def test_a_typo_in_a_config_fails_parsing(tmp_path):
    bad = tmp_path / "config.pbtxt"
    bad.write_text('name: "x"\nplatfrom: "ensemble"\n')
    with pytest.raises(ValueError, match="not a valid Triton ModelConfig"):
        parse_config(bad)


# --------------------------------------------------------------------------------------------- FP32 vs PyTorch


@pytest.fixture(scope="module")
def fill_mask_pipeline(demo_small):
    return transformers.pipeline("fill-mask", model=_ckpt(demo_small, "fill_mask"), device="cpu")


def _check_fill_mask(server, pipe, rtol):
    """Each served candidate is what transformers' fill-mask pipeline says for that token (score, token_str and the
    filled sequence), and the ten are the pipeline's top ten within the tolerance."""
    results = _results(server, "fill_mask", {"TEXT": MASKED})
    for text, per_mask in zip(MASKED, results, strict=True):
        top = pipe(text, top_k=FILL_MASK_TOP_K)
        top = [top] if isinstance(top[0], dict) else top
        assert len(per_mask) == len(top)
        for m, (candidates, best) in enumerate(zip(per_mask, top, strict=True)):
            assert len(candidates) == FILL_MASK_TOP_K
            scores = [c["score"] for c in candidates]
            assert scores == sorted(scores, reverse=True)
            # the pipeline restricted to the served tokens: their scores, token strings and sequences
            targets = [pipe.tokenizer.convert_ids_to_tokens(c["token"]) for c in candidates]
            want = pipe(text, targets=targets, top_k=len(targets))
            want = {w["token"]: w for w in (want if len(top) == 1 else want[m])}
            for c in candidates:
                w = want[c["token"]]
                np.testing.assert_allclose(c["score"], w["score"], rtol=rtol)
                assert w["score"] >= best[-1]["score"] * (1 - 2 * rtol)  # a genuine top-k token
                assert (c["token_str"], c["sequence"]) == (w["token_str"], w["sequence"])


def test_fill_mask_fp32_equals_the_hf_pipeline(triton_server_fp32, fill_mask_pipeline):
    _check_fill_mask(triton_server_fp32, fill_mask_pipeline, rtol=1e-4)


def test_fill_mask_int8_scores_track_the_hf_pipeline(triton_server, fill_mask_pipeline):
    _check_fill_mask(triton_server, fill_mask_pipeline, rtol=0.05)


def test_fill_mask_sequences_of_several_masks_keep_the_other_masks_as_the_hf_pipeline_does(
    triton_server_fp32, fill_mask_pipeline
):
    text = "The [MASK] of France is [MASK]."
    (served,) = _results(triton_server_fp32, "fill_mask", {"TEXT": [text]})
    want = fill_mask_pipeline(text, top_k=FILL_MASK_TOP_K)
    assert [[c["sequence"] for c in m] for m in served] == [[w["sequence"] for w in m] for m in want]
    first = served[0][0]
    assert first["sequence"] == f"[CLS] the {first['token_str']} of france is [MASK]. [SEP]"
    (single,) = _results(triton_server_fp32, "fill_mask", {"TEXT": ["The capital of France is [MASK]."]})
    assert single[0][0]["sequence"] == f"the capital of france is {single[0][0]['token_str']}."


@pytest.fixture(scope="module")
def hf_pipelines(demo_small):
    def make(kind, task):
        return transformers.pipeline(kind, model=_ckpt(demo_small, task), device="cpu")

    return {
        "text_classification": make("text-classification", "text_classification"),
        "token_classification": make("token-classification", "token_classification"),
    }


def _check_classification(server, pipe, atol):
    inputs = [{"text": t, "text_pair": p} for t, p in zip(TEXTS, PAIRS, strict=True)]
    singles = _results(server, "text_classification", {"TEXT": TEXTS})
    paired = _results(server, "text_classification", {"TEXT": TEXTS, "TEXT_PAIR": PAIRS})
    for got, want in zip(singles + paired, pipe(TEXTS, top_k=None) + pipe(inputs, top_k=None), strict=True):
        assert [g["label"] for g in got] == sorted(
            (g["label"] for g in got), key=lambda lb: -dict((x["label"], x["score"]) for x in got)[lb]
        )
        want_scores = {w["label"]: w["score"] for w in want}
        for g in got:
            assert abs(g["score"] - want_scores[g["label"]]) <= atol, (g, want)


def test_text_classification_fp32_equals_the_hf_pipeline_single_and_pairs(triton_server_fp32, hf_pipelines):
    _check_classification(triton_server_fp32, hf_pipelines["text_classification"], atol=1e-4)


def test_text_classification_int8_scores_within_0_01(triton_server, hf_pipelines):
    _check_classification(triton_server, hf_pipelines["text_classification"], atol=0.01)


def _check_tags(server, pipe, atol):
    results = _results(server, "token_classification", {"TEXT": TEXTS})
    agree = 0
    for text, got in zip(TEXTS, results, strict=True):
        want = pipe(text, aggregation_strategy="first") if text else []
        for g in got:
            assert g["word"] == text[g["start"] : g["end"]]
        spans = [(w["entity_group"], w["start"], w["end"]) for w in want]
        if [(g["entity_group"], g["start"], g["end"]) for g in got] == spans:
            agree += 1
            for g, w in zip(got, want, strict=True):
                assert abs(g["score"] - float(w["score"])) <= atol
    return agree


def test_token_classification_fp32_equals_the_hf_pipeline_first_aggregation(triton_server_fp32, hf_pipelines):
    assert _check_tags(triton_server_fp32, hf_pipelines["token_classification"], atol=1e-4) == len(TEXTS)


def test_token_classification_int8_agrees_on_most_texts(triton_server, hf_pipelines):
    # Random weights leave tag probabilities close together, so an INT8 flip on one word is possible; 4 of 5 must match.
    assert _check_tags(triton_server, hf_pipelines["token_classification"], atol=0.02) >= len(TEXTS) - 1


@pytest.fixture(scope="module")
def qa_reference(demo_small):
    """transformers' own question-answering span decoding (`select_starts_ends`, which transformers 5 keeps in its
    document question-answering pipeline) on PyTorch logits, with the fast tokenizer's character offsets."""
    path = _ckpt(demo_small, "question_answering")
    model = transformers.MobileBertForQuestionAnswering.from_pretrained(path).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)

    def answer(question, context, top_k=5, max_answer_len=15):
        enc = tokenizer(question, context, return_offsets_mapping=True, truncation="only_second", max_length=512)
        offsets = enc.pop("offset_mapping")
        with torch.no_grad():
            out = model(**{k: torch.tensor([v]) for k, v in enc.items()})
        # p_mask as the question-answering pipeline built it: 1 outside the context, 0 for context tokens and [CLS]
        p_mask = np.array([[s != 1 for s in enc.sequence_ids()]], dtype=int)
        p_mask[0, 0] = 0
        starts, ends, scores, _ = select_starts_ends(
            out.start_logits.double().numpy(),
            out.end_logits.double().numpy(),
            p_mask,
            np.array([enc["attention_mask"]]),
            top_k=top_k,
            max_answer_len=max_answer_len,
        )
        return [
            {"start": offsets[s][0], "end": offsets[e][1], "score": float(p)}
            for s, e, p in zip(starts, ends, scores, strict=True)
        ]

    return answer


def _check_qa(server, reference, atol, exact):
    results = _results(server, "question_answering", {"QUESTION": QUESTIONS, "CONTEXT": CONTEXTS})
    for question, context, got in zip(QUESTIONS, CONTEXTS, results, strict=True):
        want = reference(question, context)
        assert len(got) == 5
        for g in got:
            assert g["answer"] == context[g["start"] : g["end"]]
        if exact:
            assert [(g["start"], g["end"]) for g in got] == [(w["start"], w["end"]) for w in want]
            for g, w in zip(got, want, strict=True):
                assert abs(g["score"] - w["score"]) <= atol
        else:  # the best INT8 span is among PyTorch's five best
            assert (got[0]["start"], got[0]["end"]) in [(w["start"], w["end"]) for w in want]


def test_question_answering_fp32_equals_transformers_span_decoding_of_pytorch_logits(triton_server_fp32, qa_reference):
    _check_qa(triton_server_fp32, qa_reference, atol=1e-4, exact=True)


def test_question_answering_int8_best_span_is_in_the_pytorch_top5(triton_server, qa_reference):
    _check_qa(triton_server, qa_reference, atol=0.0, exact=False)


def _nsp_reference(demo_small):
    path = _ckpt(demo_small, "next_sentence")
    model = MobileBertForNextSentencePrediction.from_pretrained(path).eval()
    encoded = MobileBertTokenizer.from_pretrained(path)(TEXTS, PAIRS, padding=True, return_tensors="pt")
    with torch.no_grad():
        return torch.softmax(model(**encoded).logits.double(), -1)[:, 0].numpy()


@pytest.mark.parametrize("profile,atol", [("fp32", 1e-4), ("int8", 0.01)])
def test_next_sentence_probability_matches_pytorch(request, demo_small, profile, atol):
    server = request.getfixturevalue("triton_server_fp32" if profile == "fp32" else "triton_server")
    results = _results(server, "next_sentence", {"TEXT": TEXTS, "TEXT_PAIR": PAIRS})
    for got, p_next in zip(results, _nsp_reference(demo_small), strict=True):
        assert abs(got["score"] - p_next) <= atol
        assert got["is_next"] == (got["score"] > 0.5)


@pytest.mark.parametrize("profile,atol", [("fp32", 1e-4), ("int8", 0.01)])
def test_multiple_choice_picks_the_pytorch_choice(request, demo_small, profile, atol):
    server = request.getfixturevalue("triton_server_fp32" if profile == "fp32" else "triton_server")
    path = _ckpt(demo_small, "multiple_choice")
    model = MobileBertForMultipleChoice.from_pretrained(path).eval()
    tokenizer = MobileBertTokenizer.from_pretrained(path)
    for prompt, choices in [
        ("Where is Paris?", ["in France", "on the moon", "under the sea"]),
        ("2 + 2 =", ["4", "5"]),
    ]:
        got = _results(server, "multiple_choice", {"PROMPT": [prompt], "CHOICES": choices})[0]
        encoded = tokenizer([prompt] * len(choices), choices, padding=True, return_tensors="pt")
        with torch.no_grad():
            logits = model(**{k: v.unsqueeze(0) for k, v in encoded.items()}).logits[0]
        want = torch.softmax(logits.double(), -1).numpy()
        np.testing.assert_allclose(got["scores"], want, atol=atol)
        assert got["choice"] == choices[got["index"]]
        if np.sort(want)[-1] - np.sort(want)[-2] > 2 * atol:
            assert got["index"] == int(np.argmax(want))


@pytest.mark.parametrize("profile,min_cosine", [("fp32", None), ("int8", 0.99)])
def test_feature_extraction_pooled_vectors_match_pytorch(request, demo_small, profile, min_cosine):
    server = request.getfixturevalue("triton_server_fp32" if profile == "fp32" else "triton_server")
    path = _ckpt(demo_small, "feature_extraction")
    model = MobileBertModel.from_pretrained(path).eval()
    encoded = MobileBertTokenizer.from_pretrained(path)(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**encoded)
    mask = encoded["attention_mask"].unsqueeze(-1).float()
    want = {
        "MEAN_POOLED": ((out.last_hidden_state * mask).sum(1) / mask.sum(1)).numpy(),
        "CLS": out.last_hidden_state[:, 0].numpy(),
        "POOLER_OUTPUT": out.pooler_output.numpy(),
    }
    got = _infer(server, "feature_extraction", {"TEXT": TEXTS}, [*want, "LAST_HIDDEN_STATE", "ATTENTION_MASK"])
    assert got["LAST_HIDDEN_STATE"].shape[1] in (32, 64, 128, 256, 512)  # padded to a length bucket
    assert np.array_equal(got["ATTENTION_MASK"].sum(1), encoded["attention_mask"].sum(1).numpy())
    for name, ref in want.items():
        if min_cosine is None:
            assert np.abs(got[name] - ref).max() <= 1e-4 * np.abs(ref).max(), name
        else:
            cos = (got[name] * ref).sum(1) / np.linalg.norm(got[name], axis=1) / np.linalg.norm(ref, axis=1)
            assert cos.min() >= min_cosine, (name, cos)


def test_pretraining_top_tokens_and_nsp_match_pytorch_fp32(triton_server_fp32, demo_small):
    path = _ckpt(demo_small, "pretraining")
    model = MobileBertForPreTraining.from_pretrained(path).eval()
    tokenizer = MobileBertTokenizer.from_pretrained(path)
    texts, pairs = TEXTS[:3], PAIRS[:3]
    got = _infer(
        triton_server_fp32,
        "pretraining",
        {"TEXT": texts, "TEXT_PAIR": pairs},
        ["INPUT_IDS", "TOKEN_TOP_IDS", "TOKEN_TOP_PROBS", "NSP_PROBS"],
    )
    encoded = tokenizer(texts, pairs, padding="max_length", max_length=got["INPUT_IDS"].shape[1], return_tensors="pt")
    assert np.array_equal(got["INPUT_IDS"], encoded["input_ids"].numpy())
    with torch.no_grad():
        out = model(**encoded)
    probs = torch.softmax(out.prediction_logits.double(), -1).numpy()
    real = encoded["attention_mask"].numpy() == 1
    picked = np.take_along_axis(probs, got["TOKEN_TOP_IDS"], -1)
    np.testing.assert_allclose(got["TOKEN_TOP_PROBS"][real], picked[real], rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(
        got["NSP_PROBS"], torch.softmax(out.seq_relationship_logits.double(), -1).numpy(), atol=1e-4
    )


# -------------------------------------------------------------------------------------------- documented inputs


def test_overlong_text_is_truncated_to_the_largest_bucket_not_refused(triton_server):
    text = "word " * 3000
    got = _infer(triton_server, "feature_extraction", {"TEXT": [text, "short"]}, ["ATTENTION_MASK"])
    assert got["ATTENTION_MASK"].shape == (2, 512)
    assert got["ATTENTION_MASK"][0].sum() == 512
    assert _results(triton_server, "text_classification", {"TEXT": [text]})[0][0]["label"]


def test_empty_text_is_classified_and_fill_mask_without_mask_is_an_error_naming_it(triton_server):
    assert len(_results(triton_server, "text_classification", {"TEXT": ["", " "]})) == 2
    with pytest.raises(InferenceServerException, match=r"row 1: no \[MASK\] token"):
        _results(triton_server, "fill_mask", {"TEXT": ["a [MASK] b", "no mask here"]})
    with pytest.raises(InferenceServerException, match="at most 8 are supported"):
        _results(triton_server, "fill_mask", {"TEXT": ["[MASK] " * 9]})
    # The instance lives on: the next valid request succeeds.
    assert _results(triton_server, "fill_mask", {"TEXT": ["a [MASK] b"]})[0]


def test_multiple_choice_refuses_empty_and_oversized_choice_sets(triton_server):
    with pytest.raises(InferenceServerException, match="CHOICES is empty"):
        _results(triton_server, "multiple_choice", {"PROMPT": ["q"], "CHOICES": []})
    with pytest.raises(InferenceServerException, match="at most 32"):
        _results(triton_server, "multiple_choice", {"PROMPT": ["q"], "CHOICES": [f"c{i}" for i in range(100)]})
    assert _results(triton_server, "multiple_choice", {"PROMPT": ["q"], "CHOICES": ["a"]})[0]["index"] == 0


def test_a_batch_over_max_batch_size_is_refused_by_triton(triton_server):
    with pytest.raises(InferenceServerException, match="batch-size must be <= 64"):
        _results(triton_server, "text_classification", {"TEXT": ["x"] * 65})


@pytest.mark.parametrize("profile,atol", [("fp32", 1e-6), ("int8", 5e-3)])
def test_concurrent_requests_of_mixed_lengths_each_get_their_own_answer(request, profile, atol):
    """Requests batched together by the dynamic batcher get the answers they get alone.

    FP32: to 1e-6. INT8-dynamic quantizes activations with one scale per tensor over the whole batch, so a row's
    scores move slightly (measured ~1e-4) with the company it is batched in; the labels do not.
    """
    from concurrent.futures import ThreadPoolExecutor

    server = request.getfixturevalue("triton_server_fp32" if profile == "fp32" else "triton_server")
    texts = [TEXTS[i % len(TEXTS)] + f" {i}" for i in range(24)]
    alone = [_results(server, "text_classification", {"TEXT": [t]})[0] for t in texts]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda t: _results(server, "text_classification", {"TEXT": [t]})[0], texts))
    for a, b in zip(alone, together, strict=True):
        assert [x["label"] for x in a] == [x["label"] for x in b]
        np.testing.assert_allclose([x["score"] for x in a], [x["score"] for x in b], atol=atol)


def _raw_onnx(server, model: str, feed: dict[str, np.ndarray], output: str) -> np.ndarray:
    tensors = []
    for name, array in feed.items():
        tensor = grpcclient.InferInput(name, list(array.shape), "INT64")
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    client = _client(server)
    try:
        return client.infer(model, tensors, outputs=[grpcclient.InferRequestedOutput(output)]).as_numpy(output)
    finally:
        client.close()


def test_onnx_runner_runs_a_batch_at_its_real_length_not_the_bucket(triton_server_fp32, demo_small):
    """Columns no text of the batch reaches are cut before the run (one kept: the trigram embedding reads each
    token's right neighbour) and come back as zeros; the real positions get the untrimmed results."""
    tokenizer = MobileBertTokenizer.from_pretrained(_ckpt(demo_small, "token_classification"))
    rows = [tokenizer(t)["input_ids"] for t in ("The company announced a new product.", "short")]
    longest = max(len(r) for r in rows)

    def padded(length: int) -> dict[str, np.ndarray]:
        ids = np.zeros((len(rows), length), np.int64)
        mask = np.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, : len(r)], mask[i, : len(r)] = r, 1
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}

    bucket = _raw_onnx(triton_server_fp32, "token_classification_onnx", padded(64), "logits")
    tight = _raw_onnx(triton_server_fp32, "token_classification_onnx", padded(longest + 1), "logits")
    assert bucket.shape[:2] == (2, 64)
    assert np.all(bucket[:, longest + 1 :] == 0) and np.all(bucket[:, :longest] != 0)
    for i, r in enumerate(rows):
        np.testing.assert_allclose(bucket[i, : len(r)], tight[i, : len(r)], atol=1e-5)
    # untrimmed reference: the FP32 graph run in-process on the full bucket
    graph = triton_server_fp32.config.repository / "token_classification_onnx" / "1" / "model.fp32.onnx"
    full = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"]).run(["logits"], padded(64))[0]
    for i, r in enumerate(rows):
        np.testing.assert_allclose(bucket[i, : len(r)], full[i, : len(r)], atol=1e-5)


def test_a_batch_over_the_run_bound_is_served_as_slices_with_the_whole_batch_results(triton_server_fp32, demo_small):
    """12 rows x 64 tokens exceed the runner's max_run_tokens (512): it runs them as runs of rows of similar length,
    each trimmed to its own longest text, and answers every row as the whole batch run in-process does."""
    config = parse_config(triton_server_fp32.config.repository / "token_classification_onnx" / "configs" / "fp32.pbtxt")
    assert int(config.parameters["max_run_tokens"].string_value) < 12 * 64
    tokenizer = MobileBertTokenizer.from_pretrained(_ckpt(demo_small, "token_classification"))
    rows = [tokenizer(TEXTS[i % len(TEXTS)] + " word" * (3 * i))["input_ids"][:64] for i in range(12)]
    ids = np.zeros((12, 64), np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
    feed = {"input_ids": ids, "attention_mask": (ids > 0).astype(np.int64), "token_type_ids": np.zeros_like(ids)}
    served = _raw_onnx(triton_server_fp32, "token_classification_onnx", feed, "logits")
    graph = triton_server_fp32.config.repository / "token_classification_onnx" / "1" / "model.fp32.onnx"
    full = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"]).run(["logits"], feed)[0]
    assert served.shape == full.shape
    for i, r in enumerate(rows):
        np.testing.assert_allclose(served[i, : len(r)], full[i, : len(r)], atol=1e-5)


def test_trimmed_fill_mask_batches_keep_their_mask_slots(triton_server, demo_small):
    """fill_mask_onnx answers min(8, sequence) mask slots, though its graph runs only the slots a row fills: a
    5-token text with one [MASK] in the 32 bucket gets 8, seven of them invalid."""
    tokenizer = MobileBertTokenizer.from_pretrained(_ckpt(demo_small, "fill_mask"))
    row = tokenizer("[MASK] here")["input_ids"]
    ids = np.zeros((1, 32), np.int64)
    ids[0, : len(row)] = row
    feed = {"input_ids": ids, "attention_mask": (ids > 0).astype(np.int64), "token_type_ids": np.zeros_like(ids)}
    valid = _raw_onnx(triton_server, "fill_mask_onnx", feed, "mask_valid")
    top = _raw_onnx(triton_server, "fill_mask_onnx", feed, "top_ids")
    assert valid.shape == (1, 8) and top.shape[:2] == (1, 8)
    assert valid[0].tolist() == [1, 0, 0, 0, 0, 0, 0, 0]
    (served,) = _results(triton_server, "fill_mask", {"TEXT": ["[MASK] here"]})[0]  # one list per [MASK]
    assert len(served) == FILL_MASK_TOP_K and served[0]["token"] == int(top[0, 0, 0])


def test_the_client_allows_exactly_the_candidates_the_fill_mask_ensemble_returns(triton_server):
    """client/tasks.py imports nothing of the project, so its FILL_MASK_CANDIDATES is tied to the export here."""
    (served,) = _results(triton_server, "fill_mask", {"TEXT": ["a [MASK] b"]})[0]
    assert len(served) == FILL_MASK_CANDIDATES


def test_place_graph_moves_weights_beside_the_graph_without_touching_the_hard_linked_export(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.arange(64 * 32, dtype=np.float32).reshape(64, 32) / 100, "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])],
        [weight],
    )
    source = tmp_path / "export" / "model.fp32.onnx"
    source.parent.mkdir()
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), source)
    source.chmod(0o600)
    original = source.read_bytes()
    target = tmp_path / "repo" / "1" / "model.fp32.onnx"
    target.parent.mkdir(parents=True)
    os.link(source, target)  # what an older build left: a hard link of the export's file
    place_graph(source, target)
    written = target.stat().st_mtime_ns, target.stat().st_ino
    with mock.patch("onnx.save_model", side_effect=AssertionError("rewritten")):
        place_graph(source, target)  # a rebuild over its own output, from the same export file: left as it is
    assert (target.stat().st_mtime_ns, target.stat().st_ino) == written
    data = target.with_name("model.fp32.onnx.data")
    data.write_bytes(data.read_bytes()[:100])  # weights cut short: written anew
    place_graph(source, target)
    assert data.stat().st_size >= len(weight.raw_data)
    assert source.read_bytes() == original and source.stat().st_ino != target.stat().st_ino
    data = target.with_name("model.fp32.onnx.data")
    assert data.stat().st_size >= len(weight.raw_data) and data.stat().st_mode & 0o444 == 0o444
    assert len(target.read_bytes()) < len(original) // 4  # the weights left the graph file
    x = np.ones((1, 64), np.float32)
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"x": x})[0], x @ numpy_helper.to_array(weight), rtol=1e-6)
    # a new export of the graph (other weights, a newer file) is written over the placed one
    source.chmod(0o600)
    exported_at = source.stat().st_mtime_ns
    onnx.save(
        helper.make_model(
            helper.make_graph(
                graph.node,
                "g",
                graph.input,
                graph.output,
                [numpy_helper.from_array(numpy_helper.to_array(weight) * 2, "w")],
            ),
            opset_imports=[helper.make_opsetid("", 17)],
        ),
        source,
    )
    later = exported_at + 10**9  # same size: a clock coarser than the test must not hide the new export
    os.utime(source, ns=(later, later))
    place_graph(source, target)
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"x": x})[0], 2 * (x @ numpy_helper.to_array(weight)), rtol=1e-6)
