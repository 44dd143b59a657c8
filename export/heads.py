"""What gets exported per task: the PyTorch head, its graph inputs and outputs, and how to read its prediction.

Each HeadSpec wraps a model_def class in a module whose forward takes (input_ids, attention_mask, token_type_ids)
and returns a tuple of tensors named like the model's output fields. `fill_mask` is the serving-shaped masked-LM
graph: vocabulary logits only at [MASK] positions, top-k ids and probabilities out, so neither the 30522-wide
decoder matmul over every token nor [batch, seq, 30522] floats over the wire are paid for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from model_def import (
    MobileBertForMaskedLM,
    MobileBertForMultipleChoice,
    MobileBertForNextSentencePrediction,
    MobileBertForPreTraining,
    MobileBertForQuestionAnswering,
    MobileBertForSequenceClassification,
    MobileBertForTokenClassification,
    MobileBertModel,
    MobileBertPreTrainedModel,
)

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
# Defaults of the fill-mask graph; both are baked into the graph and recorded in its manifest.
FILL_MASK_MAX_MASKS = 8
FILL_MASK_TOP_K = 10


class HeadOutputs(nn.Module):
    """Calls a model_def head and returns the named output fields as a tuple (what exporters want)."""

    def __init__(self, model: MobileBertPreTrainedModel, output_names: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.output_names = output_names

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        out = self.model(input_ids, attention_mask, token_type_ids)
        return tuple(getattr(out, name) for name in self.output_names)


class FillMaskTopK(nn.Module):
    """Masked-LM head evaluated only at the first `max_masks` [MASK] positions of each row, returning top-k.

    Outputs, each [batch, M, ...] with M = min(max_masks, the most [MASK]s of any row of the batch), at least 1:
    the vocabulary projection, softmax and top-k (~6% of a 128-token row's time when all 8 slots ran) run only for
    slots some row fills; a serving runner pads the slot axis back to min(max_masks, seq) (`mask_slot_axis`).
      mask_positions [batch, M] int64: sequence index of each [MASK] (in order of appearance);
      mask_valid     [batch, M] bool: False where the row has fewer than M masks (those slots are padding);
      top_ids        [batch, M, k] int64 and top_probs [batch, M, k] float: softmax over the vocabulary, top-k.
    Every output has the batch as its first dimension, so Triton's dynamic batcher can split responses.
    """

    output_names = ("mask_positions", "mask_valid", "top_ids", "top_probs")

    def __init__(self, model: MobileBertForMaskedLM, mask_token_id: int, max_masks: int, top_k: int) -> None:
        super().__init__()
        if top_k > model.config.vocab_size:
            raise ValueError(f"top_k={top_k} exceeds the vocabulary size {model.config.vocab_size}")
        self.encoder = model.mobilebert
        self.head = model.cls.predictions
        self.mask_token_id = mask_token_id
        self.max_masks = max_masks
        self.top_k = top_k

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        hidden = self.encoder(input_ids, attention_mask, token_type_ids).last_hidden_state
        is_mask = (input_ids == self.mask_token_id).to(hidden.dtype)
        # A unique key per position, masks first and each group in sequence order, so a (full) top-k over it is
        # a stable sort whatever the backend's tie-breaking; the first M indices are the first M masks.
        seq = input_ids.shape[1]
        descending_index = torch.arange(seq, 0, -1, device=input_ids.device).to(hidden.dtype)
        order = torch.topk(is_mask * (seq + 1) + descending_index, seq, dim=1).indices
        # data-dependent slot count: the exporter writes it as a Slice whose end the graph computes
        most = (input_ids == self.mask_token_id).sum(dim=1).max()
        slots = torch.clamp(most, min=1, max=self.max_masks).item()  # <= seq: a count of positions
        torch._check(slots >= 1)
        torch._check(slots <= self.max_masks)
        torch._check(slots <= seq)
        positions = order[:, :slots]
        valid = torch.gather(is_mask, 1, positions) > 0.5
        gathered = torch.gather(hidden, 1, positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
        probs = torch.softmax(self.head(gathered), dim=-1)
        top_probs, top_ids = torch.topk(probs, self.top_k, dim=-1)
        return positions, valid, top_ids, top_probs


def mask_slot_axis(max_masks: int) -> str:
    """The name the fill-mask graph gives its slot axis: at most `max_masks`, and never more than the sequence."""
    return f"Min({max_masks}, masks)"


@dataclass(frozen=True)
class HeadSpec:
    """One exportable task graph."""

    name: str  # task key; also the ONNX model's name in the Triton repository
    model_class: type[MobileBertPreTrainedModel]
    output_names: tuple[str, ...]
    description: str
    # Which output carries the prediction used for agreement checks, and how to read it.
    prediction_output: str
    prediction: Callable[[np.ndarray], np.ndarray]
    # Dims of each output after batch (named, for dynamic axes): "sequence", "choices" or a fixed size.
    choices_axis: bool = False

    @property
    def input_rank(self) -> int:
        return 3 if self.choices_axis else 2

    def build(self, model: MobileBertPreTrainedModel, **options: int) -> nn.Module:
        """The module to export, wrapping a loaded head."""
        if self.name == "fill_mask":
            return FillMaskTopK(
                model,  # type: ignore[arg-type]
                mask_token_id=options["mask_token_id"],
                max_masks=options.get("max_masks", FILL_MASK_MAX_MASKS),
                top_k=options.get("top_k", FILL_MASK_TOP_K),
            )
        return HeadOutputs(model, self.output_names)


def _argmax_last(x: np.ndarray) -> np.ndarray:
    return np.argmax(x, axis=-1)


def _top1_ids(top_ids: np.ndarray) -> np.ndarray:
    return top_ids[..., 0]


HEAD_SPECS: dict[str, HeadSpec] = {
    spec.name: spec
    for spec in (
        HeadSpec(
            "feature_extraction",
            MobileBertModel,
            ("last_hidden_state", "pooler_output"),
            "base model: token features and the pooled [CLS] vector",
            "pooler_output",
            lambda x: x,
        ),
        HeadSpec(
            "pretraining",
            MobileBertForPreTraining,
            ("prediction_logits", "seq_relationship_logits"),
            "raw pre-training heads: full vocabulary logits at every position and NSP logits",
            "prediction_logits",
            _argmax_last,
        ),
        HeadSpec(
            "masked_lm",
            MobileBertForMaskedLM,
            ("logits",),
            "masked LM with full vocabulary logits at every position",
            "logits",
            _argmax_last,
        ),
        HeadSpec(
            "fill_mask",
            MobileBertForMaskedLM,
            FillMaskTopK.output_names,
            "masked LM evaluated at [MASK] positions only, top-k ids and probabilities",
            "top_ids",
            _top1_ids,
        ),
        HeadSpec(
            "next_sentence",
            MobileBertForNextSentencePrediction,
            ("logits",),
            "next-sentence prediction logits (index 0: B follows A)",
            "logits",
            _argmax_last,
        ),
        HeadSpec(
            "text_classification",
            MobileBertForSequenceClassification,
            ("logits",),
            "sequence classification logits",
            "logits",
            _argmax_last,
        ),
        HeadSpec(
            "multiple_choice",
            MobileBertForMultipleChoice,
            ("logits",),
            "one score per (prompt, choice) pair; inputs [batch, choices, seq]",
            "logits",
            _argmax_last,
            choices_axis=True,
        ),
        HeadSpec(
            "token_classification",
            MobileBertForTokenClassification,
            ("logits",),
            "per-token tag logits",
            "logits",
            _argmax_last,
        ),
        HeadSpec(
            "question_answering",
            MobileBertForQuestionAnswering,
            ("start_logits", "end_logits"),
            "extractive QA span start and end logits",
            "start_logits",
            _argmax_last,
        ),
    )
}


# Which tasks a checkpoint of each architecture can serve (its config.json "architectures").
TASKS_BY_ARCHITECTURE: dict[str, tuple[str, ...]] = {
    "MobileBertForPreTraining": ("feature_extraction", "pretraining", "masked_lm", "fill_mask", "next_sentence"),
    "MobileBertForMaskedLM": ("feature_extraction", "masked_lm", "fill_mask"),
    "MobileBertForNextSentencePrediction": ("feature_extraction", "next_sentence"),
    "MobileBertModel": ("feature_extraction",),
    "MobileBertForSequenceClassification": ("text_classification",),
    "MobileBertForMultipleChoice": ("multiple_choice",),
    "MobileBertForTokenClassification": ("token_classification",),
    "MobileBertForQuestionAnswering": ("question_answering",),
}

# In a checkpoint set (one directory per kind, as the demo writes), the kind directory serving each task.
CHECKPOINT_KIND_FOR_TASK: dict[str, str] = {
    "feature_extraction": "pretraining",
    "pretraining": "pretraining",
    "masked_lm": "pretraining",
    "fill_mask": "pretraining",
    "next_sentence": "pretraining",
    "text_classification": "sequence-classification",
    "multiple_choice": "multiple-choice",
    "token_classification": "token-classification",
    "question_answering": "question-answering",
}
