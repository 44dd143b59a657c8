"""A small MobileBERT trained for well under a minute on the project corpus, for INT8 fidelity tests.

Random weights give flat logits, so INT8-vs-FP32 top-1 agreement on them measures noise. A briefly trained model has
peaked, structured predictions, which is where the >= 0.99 top-1 agreement bar is meaningful.

The recipe must converge on every CPU. Float rounding differs between CPUs (MKL and oneDNN pick other kernels on
AMX than on AVX512), so the same seed follows another trajectory on each. The first recipe (AdamW at 2e-3, no warm-up,
no clipping; MobileBERT has no LayerNorm in its layers) diverged to NaN for seeds 1 and 2 and collapsed to a constant
classifier for seed 3 on an AMD Zen 4; on an Intel AMX machine its seed 0 gave a classifier whose INT8 logits missed
the cosine gate (0.989). Warm-up, clipping and a lower rate converge for every seed tried, and training now checks
that it learned, so a broken model fails here, naming the cause, instead of failing a fidelity gate downstream.
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


MLM_LR, CLF_LR = 1e-3, 5e-4
WARMUP_STEPS = 50
CLIP_NORM = 1.0


class TrainingFailed(RuntimeError):
    """The small model did not learn (diverged or collapsed): no fidelity figure on it would mean anything."""


def _optimizer(model: torch.nn.Module, lr: float, steps: int) -> tuple[torch.optim.Optimizer, object]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    warmup = min(WARMUP_STEPS, max(1, steps // 4))
    # Linear warm-up, then linear decay to 10%: the usual BERT schedule, which keeps NoNorm layers from blowing up.
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.1, 1 - (step - warmup) / max(1, steps - warmup)))
    )
    return optimizer, schedule


def _step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, schedule: object, loss: torch.Tensor, what: str):
    if not torch.isfinite(loss):
        raise TrainingFailed(f"{what}: the loss became {loss.item()} (diverged)")
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP_NORM)
    optimizer.step()
    schedule.step()  # type: ignore[attr-defined]


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
    optimizer, schedule = _optimizer(mlm, MLM_LR, mlm_steps)
    lines = corpus_lines()
    rng = random.Random(seed)
    losses = []
    for _ in range(mlm_steps):
        enc = tok(rng.sample(lines, 32), padding=True, truncation=True, max_length=64, return_tensors="pt")
        masked, labels = _mask_batch(enc["input_ids"], enc["attention_mask"], tok, gen)
        loss = mlm(masked, enc["attention_mask"], enc["token_type_ids"], labels=labels).loss
        _step(mlm, optimizer, schedule, loss, f"masked LM (seed {seed})")
        losses.append(loss.item())
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    if not last < 0.8 * first:
        raise TrainingFailed(f"masked LM (seed {seed}) did not learn: loss {first:.2f} -> {last:.2f}")
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
    optimizer, schedule = _optimizer(clf, CLF_LR, clf_steps)
    for _ in range(clf_steps):
        batch = rng.sample(examples, 32)
        enc = tok([ex["text"] for ex in batch], padding=True, truncation=True, max_length=64, return_tensors="pt")
        target = torch.tensor([labels.index(ex["label"]) for ex in batch])
        loss = clf(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"], labels=target).loss
        _step(clf, optimizer, schedule, loss, f"classifier (seed {seed})")
    clf.eval()
    _check_classifier_learned(clf, tok, examples, labels, seed)
    clf.save_pretrained(dirs["sequence-classification"])
    tok.save_pretrained(dirs["sequence-classification"])
    return dirs


def _check_classifier_learned(clf, tok, examples: list[dict], labels: list[str], seed: int) -> None:
    """A collapsed classifier predicts one class for everything; a learned one fits its training examples."""
    enc = tok([ex["text"] for ex in examples], padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        predicted = clf(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]).logits.argmax(-1)
    target = torch.tensor([labels.index(ex["label"]) for ex in examples])
    accuracy = float((predicted == target).float().mean())
    if accuracy < 0.8 or len(set(predicted.tolist())) < len(labels):
        raise TrainingFailed(f"classifier (seed {seed}) did not learn: training accuracy {accuracy:.2f}")
