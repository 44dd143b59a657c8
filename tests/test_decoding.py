"""The served decoding (deploy/python_models) against transformers' own decoding, on the same logits, in process.

No server and no export: a random-weight demo checkpoint's PyTorch logits are decoded twice, by the module the post
models import and by transformers (the fill-mask pipeline; the question-answering span decoding that transformers 5
keeps in its document question-answering pipeline), so the two cannot share a misunderstanding.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from transformers.pipelines.document_question_answering import select_starts_ends

from deploy.python_models.mask_filling import fill_mask_row
from deploy.python_models.probabilities import labels, masked_softmax, sigmoid, softmax
from deploy.python_models.span_decoding import best_spans
from export.heads import CHECKPOINT_KIND_FOR_TASK

MASKED = [
    "The capital of France is [MASK].",
    "The [MASK] of France is [MASK].",
    "[MASK] [MASK] [MASK] ( three masks ) .",
]


@pytest.fixture(scope="module")
def fill_mask_pipeline(demo_small):
    path = str(demo_small / CHECKPOINT_KIND_FOR_TASK["fill_mask"])
    return transformers.pipeline("fill-mask", model=path, device="cpu")


@pytest.mark.parametrize("text", MASKED)
def test_fill_mask_row_equals_the_fill_mask_pipeline_for_one_and_several_masks(fill_mask_pipeline, text):
    model, tokenizer, k = fill_mask_pipeline.model, fill_mask_pipeline.tokenizer, 5
    encoded = tokenizer(text, return_tensors="pt")
    ids = encoded["input_ids"][0]
    positions = (ids == tokenizer.mask_token_id).nonzero().flatten()
    with torch.no_grad():
        probs = torch.softmax(model(**encoded).logits[0, positions], -1)
    top_probs, top_ids = probs.topk(k)
    got = fill_mask_row(
        ids.numpy(),
        positions.numpy(),
        np.ones(len(positions), bool),
        top_ids.numpy(),
        top_probs.numpy(),
        tokenizer.backend_tokenizer,  # the tokenizers.Tokenizer the post model loads from tokenizer.json
        mask_count=len(positions),
    )
    want = fill_mask_pipeline(text, top_k=k)
    want = [want] if len(positions) == 1 else want
    assert [[c["token"] for c in m] for m in got] == [[c["token"] for c in m] for m in want]
    assert [[c["sequence"] for c in m] for m in got] == [[c["sequence"] for c in m] for m in want]
    assert [[c["token_str"] for c in m] for m in got] == [[c["token_str"] for c in m] for m in want]
    np.testing.assert_allclose([[c["score"] for c in m] for m in got], [[c["score"] for c in m] for m in want])


def test_fill_mask_sequence_of_several_masks_keeps_the_others_and_the_special_tokens(fill_mask_pipeline):
    tokenizer = fill_mask_pipeline.tokenizer
    ids = tokenizer("The [MASK] of France is [MASK].")["input_ids"]
    positions = np.flatnonzero(np.array(ids) == tokenizer.mask_token_id)
    paris = tokenizer.convert_tokens_to_ids("paris")
    top_ids = np.full((2, 1), paris)
    got = fill_mask_row(
        np.array(ids), positions, np.ones(2, bool), top_ids, np.ones((2, 1)), tokenizer.backend_tokenizer, 2
    )
    assert [m[0]["sequence"] for m in got] == [
        "[CLS] the paris of france is [MASK]. [SEP]",
        "[CLS] the [MASK] of france is paris. [SEP]",
    ]


@pytest.fixture(scope="module")
def qa_model(demo_small):
    path = str(demo_small / CHECKPOINT_KIND_FOR_TASK["question_answering"])
    model = transformers.MobileBertForQuestionAnswering.from_pretrained(path).eval()
    return model, transformers.AutoTokenizer.from_pretrained(path)


@pytest.mark.parametrize(
    "question,context",
    [
        ("Where was the product announced?", "The company announced a new product in Paris on Monday."),
        ("Who serves coffee?", "Zürich's café serves 中文 and emoji 🙂 too, said Ana María García."),
        ("what?", "One. Two. Three. " * 20),
    ],
)
def test_best_spans_equal_transformers_span_decoding_and_tokenizer_offsets(qa_model, question, context):
    model, tokenizer = qa_model
    enc = tokenizer(question, context, return_offsets_mapping=True, truncation="only_second", max_length=512)
    offsets = np.array(enc.pop("offset_mapping"))
    with torch.no_grad():
        out = model(**{k: torch.tensor([v]) for k, v in enc.items()})
    start, end = out.start_logits.double().numpy(), out.end_logits.double().numpy()
    # p_mask as the question-answering pipeline built it: 1 outside the context, 0 for context tokens and [CLS]
    p_mask = np.array([[s != 1 for s in enc.sequence_ids()]], dtype=int)
    p_mask[0, 0] = 0
    starts, ends, scores, _ = select_starts_ends(
        start, end, p_mask, np.array([enc["attention_mask"]]), top_k=5, max_answer_len=15
    )
    spans = [(offsets[s][0], offsets[e][1], float(p)) for s, e, p in zip(starts, ends, scores, strict=True)]
    want = [{"answer": context[b:f], "score": p, "start": b, "end": f} for b, f, p in spans]
    context_tokens = np.array([s == 1 for s in enc.sequence_ids()])
    got = best_spans(start[0], end[0], context_tokens, offsets, context, top_k=5, max_answer_len=15)
    assert [(g["start"], g["end"], g["answer"]) for g in got] == [(w["start"], w["end"], w["answer"]) for w in want]
    np.testing.assert_allclose([g["score"] for g in got], [w["score"] for w in want], rtol=1e-9)


def test_best_spans_of_a_row_without_context_tokens_is_empty():
    logits = np.zeros(4)
    assert best_spans(logits, logits, np.zeros(4, bool), np.zeros((4, 2), int), "", 5, 15) == []


def test_probabilities_equal_torch_softmax_and_sigmoid():
    logits = np.random.default_rng(0).normal(size=(3, 7)) * 10
    np.testing.assert_allclose(softmax(logits), torch.softmax(torch.tensor(logits), -1).numpy(), rtol=1e-12)
    np.testing.assert_allclose(sigmoid(logits), torch.sigmoid(torch.tensor(logits)).numpy(), rtol=1e-12)
    allowed = np.array([True, False, True, True, False, False, True])
    masked = masked_softmax(logits[0], allowed)
    assert np.all(masked[~allowed] == 0)
    np.testing.assert_allclose(masked[allowed], softmax(logits[0][allowed]), rtol=1e-12)


def test_labels_are_the_checkpoints_id2label_in_id_order():
    config = transformers.MobileBertConfig(num_labels=3)  # transformers' default names: LABEL_0..2
    assert labels({str(k): v for k, v in config.id2label.items()}) == ["LABEL_0", "LABEL_1", "LABEL_2"]
    assert labels({"1": "POS", "0": "NEG"}) == ["NEG", "POS"]
    assert labels(None) == []
