"""model_def matches transformers numerically for every head and config, in both checkpoint directions."""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from hf_factory import HEAD_NAMES, example_inputs, make_hf_model, max_rel_diff, output_fields, save_hf_checkpoint

import model_def

TOLERANCE = 1e-4

# Non-default configurations that exercise every architectural switch (small, so the suite stays fast).
SMALL = {"num_hidden_layers": 2}
VARIANTS = {
    "layer_norm": {**SMALL, "normalization_type": "layer_norm"},
    "no_trigram": {**SMALL, "trigram_input": False},
    "no_trigram_wide_embeddings": {**SMALL, "trigram_input": False, "embedding_size": 512},
    "bottleneck_attention": {**SMALL, "use_bottleneck_attention": True},
    "unshared_kq_bottleneck_attention": {
        **SMALL,
        "key_query_shared_bottleneck": False,
        "use_bottleneck_attention": True,
    },
    "no_bottleneck": {**SMALL, "use_bottleneck": False, "intermediate_size": 1024},
    "one_ffn": {**SMALL, "num_feedforward_networks": 1},
    "two_ffns": {**SMALL, "num_feedforward_networks": 2},
    "no_classifier_activation": {**SMALL, "classifier_activation": False},
    "gelu_layer_norm_3_labels": {**SMALL, "hidden_act": "gelu", "normalization_type": "layer_norm", "num_labels": 3},
    "gelu_new": {**SMALL, "hidden_act": "gelu_new"},
}


def _run(model: torch.nn.Module, inputs: dict, **extra) -> object:
    with torch.no_grad():
        return model(**inputs, **extra)


def _assert_parity(head: str, reference, ours) -> None:
    for name in output_fields(head):
        diff = max_rel_diff(getattr(reference, name), getattr(ours, name))
        assert diff <= TOLERANCE, f"{head}.{name}: relative max difference {diff:.2e} > {TOLERANCE}"


@pytest.mark.parametrize("head", HEAD_NAMES)
def test_full_size_default_config_matches_transformers(tmp_path, head):
    hf_model = save_hf_checkpoint(tmp_path, head)
    ours = getattr(model_def, head).from_pretrained(tmp_path)
    inputs = example_inputs(head, seq=32)
    assert ours.config.num_hidden_layers == 24 and ours.config.vocab_size == 30522
    _assert_parity(head, _run(hf_model, inputs), _run(ours, inputs))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("head", HEAD_NAMES)
def test_non_default_configs_match_transformers(tmp_path, head, variant):
    config = dict(VARIANTS[variant])
    if head == "MobileBertForQuestionAnswering":
        config.pop("num_labels", None)  # start and end: always two
    hf_model = save_hf_checkpoint(tmp_path, head, seed=1, **config)
    ours = getattr(model_def, head).from_pretrained(tmp_path)
    inputs = example_inputs(head, seq=24, seed=2)
    _assert_parity(head, _run(hf_model, inputs), _run(ours, inputs))


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_both_attention_implementations_match_transformers(tmp_path, attn):
    hf_model = save_hf_checkpoint(tmp_path, "MobileBertForMaskedLM", **SMALL)
    ours = model_def.MobileBertForMaskedLM.from_pretrained(tmp_path, attn_implementation=attn)
    inputs = example_inputs("MobileBertForMaskedLM")
    _assert_parity("MobileBertForMaskedLM", _run(hf_model, inputs), _run(ours, inputs))


@pytest.mark.parametrize("head", HEAD_NAMES)
def test_our_checkpoint_loads_in_transformers_with_identical_outputs(tmp_path, head):
    config = model_def.MobileBertConfig(num_hidden_layers=2)
    config.num_labels = 2 if head == "MobileBertForQuestionAnswering" else 3
    torch.manual_seed(3)
    ours = getattr(model_def, head)(config).eval()
    from hf_factory import perturb_norms

    perturb_norms(ours, seed=3)
    ours.save_pretrained(tmp_path)
    hf_model, info = getattr(transformers, head).from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"], info
    assert not info["unexpected_keys"], info
    assert not info["mismatched_keys"], info
    inputs = example_inputs(head)
    _assert_parity(head, _run(hf_model.eval(), inputs), _run(ours, inputs))


def test_losses_match_transformers_for_each_head(tmp_path):
    cases = {
        "MobileBertForMaskedLM": {"labels": torch.randint(0, 30522, (2, 16))},
        "MobileBertForSequenceClassification": {"labels": torch.tensor([0, 1])},
        "MobileBertForNextSentencePrediction": {"labels": torch.tensor([1, 0])},
        "MobileBertForMultipleChoice": {"labels": torch.tensor([2, 0])},
        "MobileBertForTokenClassification": {"labels": torch.randint(0, 2, (2, 16))},
        "MobileBertForQuestionAnswering": {
            "start_positions": torch.tensor([3, 40]),
            "end_positions": torch.tensor([5, 2]),
        },
        "MobileBertForPreTraining": {
            "labels": torch.randint(0, 30522, (2, 16)),
            "next_sentence_label": torch.tensor([0, 1]),
        },
    }
    for head, labels in cases.items():
        hf_model = save_hf_checkpoint(tmp_path / head, head, **SMALL)
        ours = getattr(model_def, head).from_pretrained(tmp_path / head)
        inputs = example_inputs(head)
        ref, got = _run(hf_model, inputs, **labels), _run(ours, inputs, **labels)
        assert torch.allclose(ref.loss, got.loss, rtol=1e-5, atol=1e-6), f"{head}: {ref.loss} vs {got.loss}"


def test_legacy_pytorch_model_bin_checkpoint_with_tied_copies_loads(tmp_path):
    # transformers 5 no longer writes pytorch_model.bin; older checkpoints (google/mobilebert-uncased among them)
    # hold one, with the tied decoder weights written out as separate entries.
    hf_model = save_hf_checkpoint(tmp_path, "MobileBertForPreTraining", **SMALL)
    (tmp_path / "model.safetensors").unlink()
    torch.save(hf_model.state_dict(), tmp_path / "pytorch_model.bin")
    assert "cls.predictions.decoder.weight" in torch.load(tmp_path / "pytorch_model.bin", weights_only=True)
    ours = model_def.MobileBertForPreTraining.from_pretrained(tmp_path)
    inputs = example_inputs("MobileBertForPreTraining")
    _assert_parity("MobileBertForPreTraining", _run(hf_model, inputs), _run(ours, inputs))


def test_sharded_checkpoint_loads(tmp_path):
    hf_model = make_hf_model("MobileBertForMaskedLM", **SMALL)
    hf_model.save_pretrained(tmp_path, max_shard_size="2MB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    ours = model_def.MobileBertForMaskedLM.from_pretrained(tmp_path)
    inputs = example_inputs("MobileBertForMaskedLM")
    _assert_parity("MobileBertForMaskedLM", _run(hf_model, inputs), _run(ours, inputs))


def test_mlm_decoder_is_tied_to_word_embeddings(tmp_path):
    save_hf_checkpoint(tmp_path, "MobileBertForPreTraining", **SMALL)
    model = model_def.MobileBertForPreTraining.from_pretrained(tmp_path)
    head = model.cls.predictions
    assert head.decoder.weight is model.mobilebert.embeddings.word_embeddings.weight
    assert head.decoder.bias is head.bias
    with torch.no_grad():
        model.mobilebert.embeddings.word_embeddings.weight[5].fill_(0.25)
    assert torch.all(head.decoder.weight[5] == 0.25)


def test_pretraining_checkpoint_serves_masked_lm_and_reports_skipped_nsp_weights(tmp_path):
    # google/mobilebert-uncased is a pre-training checkpoint; fill-mask loads it into the masked-LM head.
    save_hf_checkpoint(tmp_path, "MobileBertForPreTraining", **SMALL)
    hf_mlm = transformers.MobileBertForMaskedLM.from_pretrained(tmp_path).eval()
    ours = model_def.MobileBertForMaskedLM.from_pretrained(tmp_path)
    assert "cls.seq_relationship.weight" in ours.load_report.skipped
    assert "mobilebert.pooler.dense.weight" in ours.load_report.skipped
    assert ours.load_report.randomly_initialised == []
    inputs = example_inputs("MobileBertForMaskedLM")
    _assert_parity("MobileBertForMaskedLM", _run(hf_mlm, inputs), _run(ours, inputs))


def test_base_model_checkpoint_loads_into_every_head_backbone(tmp_path):
    base = save_hf_checkpoint(tmp_path, "MobileBertModel", **SMALL)
    model = model_def.MobileBertForSequenceClassification.from_pretrained(tmp_path, strict=False)
    assert sorted(model.load_report.randomly_initialised) == ["classifier.bias", "classifier.weight"]
    inputs = example_inputs("MobileBertModel")
    ref = _run(base, inputs).pooler_output
    got = _run(model.mobilebert, inputs).pooler_output
    assert max_rel_diff(ref, got) <= TOLERANCE


def test_head_checkpoint_loads_into_base_model(tmp_path):
    hf_model = save_hf_checkpoint(tmp_path, "MobileBertForNextSentencePrediction", **SMALL)
    ours = model_def.MobileBertModel.from_pretrained(tmp_path)
    assert "cls.seq_relationship.weight" in ours.load_report.skipped
    inputs = example_inputs("MobileBertModel")
    ref = _run(hf_model.mobilebert, inputs)
    _assert_parity("MobileBertModel", ref, _run(ours, inputs))


def test_config_round_trip_preserves_every_field(tmp_path):
    hf_config = transformers.MobileBertConfig(
        num_hidden_layers=3,
        hidden_act="gelu",
        normalization_type="layer_norm",
        id2label={0: "NEG", 1: "NEU", 2: "POS"},
        label2id={"NEG": 0, "NEU": 1, "POS": 2},
        classifier_dropout=0.2,
    )
    hf_config.save_pretrained(tmp_path)
    ours = model_def.MobileBertConfig.from_pretrained(tmp_path)
    assert ours.id2label == {0: "NEG", 1: "NEU", 2: "POS"} and ours.num_labels == 3
    assert ours.num_hidden_layers == 3 and ours.hidden_act == "gelu" and ours.classifier_dropout == 0.2
    assert ours.true_hidden_size == 128
    ours.save_pretrained(tmp_path / "again")
    back = transformers.MobileBertConfig.from_pretrained(tmp_path / "again")
    for name in (
        "num_hidden_layers",
        "hidden_act",
        "normalization_type",
        "classifier_dropout",
        "intra_bottleneck_size",
    ):
        assert getattr(back, name) == getattr(hf_config, name), name
    assert back.id2label == hf_config.id2label
    # Keys we do not model (transformers_version, dtype) survive the round trip.
    saved = json.loads((tmp_path / "config.json").read_text())
    again = json.loads((tmp_path / "again" / "config.json").read_text())
    assert again["transformers_version"] == saved["transformers_version"]


def test_default_config_equals_google_mobilebert_uncased():
    ours, theirs = model_def.MobileBertConfig(), transformers.MobileBertConfig()
    for name in (
        "vocab_size", "embedding_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
        "intermediate_size", "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob",
        "max_position_embeddings", "type_vocab_size", "initializer_range", "layer_norm_eps", "pad_token_id",
        "trigram_input", "use_bottleneck", "intra_bottleneck_size", "use_bottleneck_attention",
        "key_query_shared_bottleneck", "num_feedforward_networks", "normalization_type", "classifier_activation",
        "classifier_dropout", "true_hidden_size", "num_labels",
    ):  # fmt: skip
        assert getattr(ours, name) == getattr(theirs, name), name


def test_output_hidden_states_has_one_entry_per_layer_plus_embeddings(tmp_path):
    hf_model = save_hf_checkpoint(tmp_path, "MobileBertModel", **SMALL)
    ours = model_def.MobileBertModel.from_pretrained(tmp_path)
    inputs = example_inputs("MobileBertModel")
    ref = _run(hf_model, inputs, output_hidden_states=True).hidden_states
    got = _run(ours, inputs, output_hidden_states=True).hidden_states
    assert len(got) == len(ref) == 3
    for a, b in zip(ref, got, strict=True):
        assert max_rel_diff(a, b) <= TOLERANCE


def test_outputs_index_like_transformers(tmp_path):
    save_hf_checkpoint(tmp_path, "MobileBertForQuestionAnswering", **SMALL)
    out = _run(model_def.MobileBertForQuestionAnswering.from_pretrained(tmp_path), example_inputs("x"))
    assert out[0] is out.start_logits and out["end_logits"] is out.end_logits
    assert out.keys() == ["start_logits", "end_logits"]


def test_training_step_updates_every_parameter():
    config = model_def.MobileBertConfig(num_hidden_layers=1, vocab_size=100, hidden_dropout_prob=0.1)
    model = model_def.MobileBertForPreTraining(config).train()
    inputs = example_inputs("MobileBertForPreTraining", vocab=100)
    out = model(**inputs, labels=inputs["input_ids"], next_sentence_label=torch.tensor([0, 1]))
    out.loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    # The padding row of the embedding gets no gradient by design; everything else must learn.
    assert no_grad == [], no_grad
