"""Test helpers: MobileBERT checkpoints made by transformers itself (random weights, saved with save_pretrained)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

HEAD_NAMES = (
    "MobileBertModel",
    "MobileBertForPreTraining",
    "MobileBertForMaskedLM",
    "MobileBertForNextSentencePrediction",
    "MobileBertForSequenceClassification",
    "MobileBertForMultipleChoice",
    "MobileBertForTokenClassification",
    "MobileBertForQuestionAnswering",
)

# Output fields to compare per head (transformers names).
OUTPUT_FIELDS = {
    "MobileBertModel": ("last_hidden_state", "pooler_output"),
    "MobileBertForPreTraining": ("prediction_logits", "seq_relationship_logits"),
    "MobileBertForQuestionAnswering": ("start_logits", "end_logits"),
}


def output_fields(head: str) -> tuple[str, ...]:
    return OUTPUT_FIELDS.get(head, ("logits",))


def perturb_norms(model: torch.nn.Module, seed: int = 0) -> None:
    """Random init leaves every norm at identity and biases at zero; perturb them so parity tests see them."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                param.add_(torch.randn(param.shape, generator=gen) * 0.1)


def make_hf_model(head: str, seed: int = 0, **config: Any) -> torch.nn.Module:
    import transformers

    torch.manual_seed(seed)
    hf_config = transformers.MobileBertConfig(**config)
    model = getattr(transformers, head)(hf_config).eval()
    perturb_norms(model, seed)
    return model


def save_hf_checkpoint(
    directory: Path, head: str, seed: int = 0, safe_serialization: bool = True, **config: Any
) -> torch.nn.Module:
    model = make_hf_model(head, seed, **config)
    model.save_pretrained(directory, safe_serialization=safe_serialization)
    return model


def example_inputs(head: str, batch: int = 2, seq: int = 16, vocab: int = 30522, seed: int = 0) -> dict:
    """Token ids with padding on the right of the second row and a sentence-B segment, as a tokenizer makes them."""
    gen = torch.Generator().manual_seed(seed)
    shape = (batch, 3, seq) if head == "MobileBertForMultipleChoice" else (batch, seq)
    input_ids = torch.randint(1, vocab, shape, generator=gen)
    attention_mask = torch.ones(shape, dtype=torch.long)
    attention_mask[1:, ..., seq - seq // 4 :] = 0
    input_ids[attention_mask == 0] = 0
    token_type_ids = torch.zeros(shape, dtype=torch.long)
    token_type_ids[..., seq // 2 :] = 1
    token_type_ids[attention_mask == 0] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}


def max_rel_diff(reference: torch.Tensor, candidate: torch.Tensor) -> float:
    """max |a - b| / max |a|: the relative max difference the parity targets are stated in."""
    return float((reference - candidate).abs().max() / reference.abs().max().clamp_min(1e-12))
