"""Bad inputs and bad checkpoints fail with errors that name the problem."""

from __future__ import annotations

import json

import pytest
import torch
from hf_factory import example_inputs, save_hf_checkpoint

import model_def
from model_def import (
    CheckpointError,
    ConfigError,
    InvalidInputError,
    MissingWeightsError,
    ShapeMismatchError,
    UnexpectedWeightsError,
)

SMALL = {"num_hidden_layers": 1}


@pytest.fixture(scope="module")
def small_model():
    return model_def.MobileBertForMaskedLM(model_def.MobileBertConfig(num_hidden_layers=1)).eval()


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"input_ids": torch.rand(2, 8)}, "must be int64 or int32"),
        ({"input_ids": torch.ones(8, dtype=torch.long)}, "shape [batch, sequence]"),
        ({"input_ids": torch.ones(2, 3, 8, dtype=torch.long)}, "got (2, 3, 8)"),
        ({"input_ids": torch.ones(2, 0, dtype=torch.long)}, "input_ids is empty"),
        ({"input_ids": torch.full((1, 4), 30522)}, "token id 30522, outside the vocabulary [0, 30522)"),
        ({"input_ids": torch.full((1, 4), -1)}, "token id -1"),
        ({"input_ids": torch.ones(1, 513, dtype=torch.long)}, "513 exceeds max_position_embeddings=512"),
        (
            {"input_ids": torch.ones(2, 8, dtype=torch.long), "attention_mask": torch.ones(2, 7, dtype=torch.long)},
            "attention_mask has shape (2, 7) but input_ids has shape (2, 8)",
        ),
        (
            {"input_ids": torch.ones(1, 4, dtype=torch.long), "token_type_ids": torch.full((1, 4), 2)},
            "token_type_ids must be in [0, 2), found 2",
        ),
        (
            {"input_ids": torch.ones(1, 4, dtype=torch.long), "token_type_ids": torch.zeros(1, 4)},
            "token_type_ids must hold integers",
        ),
        ({"input_ids": [[1, 2, 3]]}, "input_ids must be a torch.Tensor, got list"),
    ],
)
def test_bad_inputs_raise_invalid_input_error_naming_the_problem(small_model, inputs, message):
    with pytest.raises(InvalidInputError) as err:
        small_model(**inputs)
    assert message in str(err.value)


def test_multiple_choice_requires_three_dimensional_inputs():
    model = model_def.MobileBertForMultipleChoice(model_def.MobileBertConfig(num_hidden_layers=1)).eval()
    with pytest.raises(InvalidInputError, match=r"\[batch, choices, sequence\]"):
        model(torch.ones(2, 8, dtype=torch.long))


def test_int32_ids_are_accepted(small_model):
    ids = example_inputs("MobileBertForMaskedLM")["input_ids"]
    with torch.no_grad():
        a = small_model(ids).logits
        b = small_model(ids.to(torch.int32)).logits
    assert torch.equal(a, b)


def test_head_without_its_weights_refuses_to_load_and_names_them(tmp_path):
    save_hf_checkpoint(tmp_path, "MobileBertForMaskedLM", **SMALL)
    with pytest.raises(MissingWeightsError) as err:
        model_def.MobileBertForQuestionAnswering.from_pretrained(tmp_path)
    assert "qa_outputs.weight" in str(err.value) and "strict=False" in str(err.value)


def test_checkpoint_with_missing_backbone_weights_names_them(tmp_path):
    from safetensors.torch import load_file, save_file

    save_hf_checkpoint(tmp_path, "MobileBertModel", **SMALL)
    state = load_file(tmp_path / "model.safetensors")
    del state["encoder.layer.0.attention.self.query.weight"]
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(MissingWeightsError, match=r"mobilebert\.encoder\.layer\.0\.attention\.self\.query\.weight"):
        model_def.MobileBertForSequenceClassification.from_pretrained(tmp_path)
    with pytest.raises(MissingWeightsError, match=r"encoder\.layer\.0\.attention\.self\.query\.weight"):
        model_def.MobileBertModel.from_pretrained(tmp_path)


def test_foreign_weights_are_rejected(tmp_path):
    from safetensors.torch import load_file, save_file

    save_hf_checkpoint(tmp_path, "MobileBertModel", **SMALL)
    state = load_file(tmp_path / "model.safetensors")
    state["encoder.layer.0.attention.self.rotary.weight"] = torch.zeros(3)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(UnexpectedWeightsError, match=r"rotary\.weight"):
        model_def.MobileBertModel.from_pretrained(tmp_path)


def test_label_count_mismatch_is_a_shape_error_naming_both_shapes(tmp_path):
    save_hf_checkpoint(tmp_path, "MobileBertForSequenceClassification", num_labels=3, **SMALL)
    with pytest.raises(ShapeMismatchError, match=r"classifier\.weight: checkpoint \(3, 512\) vs model \(5, 512\)"):
        model_def.MobileBertForSequenceClassification.from_pretrained(tmp_path, num_labels=5)


def test_missing_directory_and_missing_weights_are_clear(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        model_def.MobileBertModel.from_pretrained(tmp_path / "nope")
    model_def.MobileBertConfig(num_hidden_layers=1).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match=r"no weights in .*expected model\.safetensors"):
        model_def.MobileBertModel.from_pretrained(tmp_path)


def test_missing_config_is_clear(tmp_path):
    with pytest.raises(ConfigError, match="no config file"):
        model_def.MobileBertModel.from_pretrained(tmp_path)


def test_corrupt_weights_file_is_clear(tmp_path):
    save_hf_checkpoint(tmp_path, "MobileBertModel", **SMALL)
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot read weights file"):
        model_def.MobileBertModel.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_type": "bert"}, "model_type 'bert', not 'mobilebert'"),
        ({"normalization_type": "rms_norm"}, "normalization_type 'rms_norm' is not supported"),
        ({"hidden_act": "swiglu"}, "hidden_act 'swiglu' is not supported"),
        ({"num_attention_heads": 5}, "not divisible by num_attention_heads=5"),
        ({"num_hidden_layers": 0}, "num_hidden_layers must be a positive integer"),
        ({"key_query_shared_bottleneck": False}, "needs use_bottleneck_attention=true"),
    ],
)
def test_invalid_config_json_is_rejected_naming_the_field(tmp_path, change, message):
    data = model_def.MobileBertConfig().to_dict()
    data.update(change)
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError) as err:
        model_def.MobileBertConfig.from_pretrained(tmp_path)
    assert message in str(err.value)


def test_unknown_config_override_is_rejected(tmp_path):
    save_hf_checkpoint(tmp_path, "MobileBertModel", **SMALL)
    with pytest.raises(TypeError, match="unknown config override 'num_layers'"):
        model_def.MobileBertModel.from_pretrained(tmp_path, num_layers=3)


def test_question_answering_needs_two_labels():
    config = model_def.MobileBertConfig(num_hidden_layers=1)
    config.num_labels = 3
    with pytest.raises(ConfigError, match="needs num_labels=2"):
        model_def.MobileBertForQuestionAnswering(config)
