"""Demo checkpoints: full-size MobileBERT with seeded random weights and a vocabulary trained on the project corpus.

There is no model hub here, so the pipeline needs checkpoints it can make itself. Their predictions are MEANINGLESS
(random weights); every command that takes these also takes a real Hugging Face checkpoint directory instead.

A Hugging Face checkpoint serves the heads whose weights it holds, and the task heads share parameter names
(`classifier.weight` is [num_labels, 512] for sequence classification but [1, 512] for multiple choice), so one
directory cannot serve every task. The demo therefore writes one directory per checkpoint kind, all with the same
backbone weights, as a set of models fine-tuned from one base would be:

    <out>/pretraining/              MobileBertForPreTraining: base model, pre-training, masked LM, next sentence
    <out>/sequence-classification/  MobileBertForSequenceClassification (NEGATIVE / POSITIVE)
    <out>/multiple-choice/          MobileBertForMultipleChoice
    <out>/token-classification/     MobileBertForTokenClassification (BIO tags: PER, ORG, LOC, MISC)
    <out>/question-answering/       MobileBertForQuestionAnswering

    python -m model_def.demo_checkpoint [--out artifacts/demo-checkpoints] [--seed 0] [--small]
"""

from __future__ import annotations

import argparse
import collections
import logging
from pathlib import Path

import torch
from tokenizers import normalizers, pre_tokenizers

from .configuration_mobilebert import MobileBertConfig
from .corpus import corpus_lines
from .modeling_mobilebert import (
    MobileBertForMultipleChoice,
    MobileBertForPreTraining,
    MobileBertForQuestionAnswering,
    MobileBertForSequenceClassification,
    MobileBertForTokenClassification,
    MobileBertPreTrainedModel,
)
from .tokenization_mobilebert import MobileBertTokenizer

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
SENTIMENT_LABELS = ("NEGATIVE", "POSITIVE")
NER_LABELS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
DEMO_NOTICE = (
    "DEMO CHECKPOINT: random weights and a vocabulary trained on the project's small corpus. "
    "Its predictions are meaningless; pass a real Hugging Face checkpoint directory for real results."
)

# kind -> (class, labels or None)
CHECKPOINT_KINDS: dict[str, tuple[type[MobileBertPreTrainedModel], tuple[str, ...] | None]] = {
    "pretraining": (MobileBertForPreTraining, None),
    "sequence-classification": (MobileBertForSequenceClassification, SENTIMENT_LABELS),
    "multiple-choice": (MobileBertForMultipleChoice, None),
    "token-classification": (MobileBertForTokenClassification, NER_LABELS),
    "question-answering": (MobileBertForQuestionAnswering, None),
}


# Common English suffixes as WordPiece continuations, so unseen inflections split into known pieces.
SUFFIXES = ("s", "es", "ed", "ing", "ly", "er", "ers", "est", "ion", "ions", "ment", "ness", "able", "al", "ic", "y")


def build_vocab(lines: list[str], vocab_size: int) -> list[str]:
    """A deterministic WordPiece vocabulary for `lines`, padded with [unusedN] to exactly `vocab_size` (as BERT's).

    Special tokens, then printable ASCII characters and their ## continuations (so ordinary English never falls back
    to [UNK]), common suffixes, then the corpus' words by descending frequency. The WordPiece trainer is not used
    because its tie-breaking varies between runs, and the demo checkpoint must be reproducible byte for byte.
    """
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    counts: collections.Counter[str] = collections.Counter()
    for line in lines:
        counts.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(line)))
    chars = [chr(c) for c in range(33, 127) if not chr(c).isupper()]
    corpus_chars = sorted({ch for word in counts for ch in word} - set(chars))
    vocab = list(SPECIAL_TOKENS) + chars + corpus_chars
    vocab += ["##" + ch for ch in chars + corpus_chars] + ["##" + suffix for suffix in SUFFIXES]
    vocab += [word for word, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    vocab = list(dict.fromkeys(vocab))  # first occurrence wins, order kept
    if len(vocab) > vocab_size:
        vocab = vocab[:vocab_size]  # the rarest words go; they still tokenize as pieces
    return vocab + [f"[unused{i}]" for i in range(vocab_size - len(vocab))]


def _config(kind: str, small: bool) -> MobileBertConfig:
    config = MobileBertConfig(num_hidden_layers=2) if small else MobileBertConfig()
    labels = CHECKPOINT_KINDS[kind][1]
    if labels is not None:
        config.id2label = dict(enumerate(labels))
        config.label2id = {label: i for i, label in enumerate(labels)}
    config.extra["demo_checkpoint"] = DEMO_NOTICE
    return config


def _scale_task_head(model: MobileBertPreTrainedModel, seed: int) -> None:
    """Give the task's output layer the scale of a fine-tuned one (logits of order 1, std 1/sqrt(hidden)).

    With transformers' init (std 0.02) the demo's classifier logits are ~1e-3, so every comparison of them
    (INT8 against FP32, say) measures rounding noise rather than the model.
    """
    gen = torch.Generator().manual_seed(seed + 2)
    for name in ("classifier", "qa_outputs"):
        layer = getattr(model, name, None)
        if isinstance(layer, torch.nn.Linear):
            with torch.no_grad():
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) / layer.in_features**0.5)
                layer.bias.copy_(torch.randn(layer.bias.shape, generator=gen) * 0.1)


def write_demo_checkpoints(out: str | Path, *, seed: int = 0, small: bool = False) -> dict[str, Path]:
    """Write one checkpoint directory per kind under `out`; returns kind -> directory. Deterministic for a seed."""
    out = Path(out)
    vocab_size = MobileBertConfig().vocab_size
    vocab = build_vocab(corpus_lines(), vocab_size)
    vocab_file = out / "vocab.txt"
    out.mkdir(parents=True, exist_ok=True)
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = MobileBertTokenizer.from_vocab(vocab_file, model_max_length=512)

    torch.manual_seed(seed)
    backbone = MobileBertForPreTraining(_config("pretraining", small))
    with torch.no_grad():  # random weights leave norms at identity; vary them so every parameter matters
        gen = torch.Generator().manual_seed(seed)
        for name, param in backbone.named_parameters():
            if "LayerNorm" in name:
                param.add_(torch.randn(param.shape, generator=gen) * 0.05)
    written = {}
    for kind, (cls, _) in CHECKPOINT_KINDS.items():
        directory = out / kind
        torch.manual_seed(seed + 1)
        model = backbone if cls is MobileBertForPreTraining else cls(_config(kind, small))
        if model is not backbone:
            model.mobilebert.load_state_dict(backbone.mobilebert.state_dict(), strict=False)
            _scale_task_head(model, seed)
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        written[kind] = directory
        logger.info("wrote %s checkpoint to %s", kind, directory)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="artifacts/demo-checkpoints", help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--small", action="store_true", help="2 layers instead of 24 (for quick tests)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(DEMO_NOTICE)
    for kind, directory in write_demo_checkpoints(args.out, seed=args.seed, small=args.small).items():
        print(f"  {kind:25s} {directory}")


if __name__ == "__main__":
    main()
