"""A small MobileBERT trained for well under a minute on the project corpus, for INT8 fidelity tests.

Random weights give flat logits, so INT8-vs-FP32 top-1 agreement on them measures noise. A briefly trained model has
peaked, structured predictions, which is where the >= 0.99 top-1 agreement bar is meaningful.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from model_def import (
    MobileBertConfig,
    MobileBertForMaskedLM,
    MobileBertForSequenceClassification,
    MobileBertTokenizer,
)
from model_def.corpus import classification_examples, corpus_lines
from model_def.demo_checkpoint import build_vocab

SMALL_CONFIG = {
    "vocab_size": 4000,
    "embedding_size": 64,
    "hidden_size": 256,
    "intra_bottleneck_size": 64,
    "intermediate_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 2,
    "num_feedforward_networks": 2,
    "max_position_embeddings": 128,
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
}


def _mask_batch(input_ids: torch.Tensor, attention: torch.Tensor, tok: MobileBertTokenizer, gen: torch.Generator):
    labels = input_ids.clone()
    special = (input_ids == tok.cls_token_id) | (input_ids == tok.sep_token_id) | (attention == 0)
    chosen = (torch.rand(input_ids.shape, generator=gen) < 0.15) & ~special
    labels[~chosen] = -100
    masked = input_ids.clone()
    masked[chosen] = tok.mask_token_id
    return masked, labels


def train_small_models(out: Path, mlm_steps: int = 400, clf_steps: int = 150, seed: int = 0) -> dict[str, Path]:
    """Train a masked LM, then a sentiment classifier from it; save both as HF checkpoints. Returns kind -> dir.

    Step counts, not wall time, bound the training, so the model is the same on a busy machine as on an idle one.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    vocab_file = out / "vocab.txt"
    vocab_file.write_text("\n".join(build_vocab(corpus_lines(), SMALL_CONFIG["vocab_size"])) + "\n")
    tok = MobileBertTokenizer.from_vocab(vocab_file, model_max_length=128)
    config = MobileBertConfig(**SMALL_CONFIG)

    mlm = MobileBertForMaskedLM(config).train()
    optimizer = torch.optim.AdamW(mlm.parameters(), lr=2e-3)
    lines = corpus_lines()
    rng = random.Random(seed)
    for _ in range(mlm_steps):
        enc = tok(rng.sample(lines, 32), padding=True, truncation=True, max_length=64, return_tensors="pt")
        masked, labels = _mask_batch(enc["input_ids"], enc["attention_mask"], tok, gen)
        loss = mlm(masked, enc["attention_mask"], enc["token_type_ids"], labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    mlm.eval()
    dirs = {"pretraining": out / "masked-lm", "sequence-classification": out / "sequence-classification"}
    mlm.save_pretrained(dirs["pretraining"])
    tok.save_pretrained(dirs["pretraining"])

    examples = classification_examples()
    labels = sorted({ex["label"] for ex in examples})
    clf = MobileBertForSequenceClassification.from_pretrained(dirs["pretraining"], strict=False, num_labels=len(labels))
    clf.config.id2label = dict(enumerate(labels))
    clf.config.label2id = {label: i for i, label in enumerate(labels)}
    clf.train()
    optimizer = torch.optim.AdamW(clf.parameters(), lr=1e-3)
    for _ in range(clf_steps):
        batch = rng.sample(examples, 32)
        enc = tok([ex["text"] for ex in batch], padding=True, truncation=True, max_length=64, return_tensors="pt")
        target = torch.tensor([labels.index(ex["label"]) for ex in batch])
        loss = clf(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"], labels=target).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    clf.eval().save_pretrained(dirs["sequence-classification"])
    tok.save_pretrained(dirs["sequence-classification"])
    return dirs
