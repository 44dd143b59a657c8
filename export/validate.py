"""Compare an ONNX graph with the PyTorch head on real tokenized text, and hold it to the gates.

Figures, per graph: max abs and relative difference (relative = max|a-b| / max|a|), cosine similarity per output
tensor and batch (mean and min), top-1 agreement of the task's prediction, and how often the graph's prediction
lies inside PyTorch's top-5. Only attended positions count: padding positions are never served.

Gates: FP32 graphs must match PyTorch (relative max diff <= 1e-4); INT8 graphs need mean cosine >= 0.99 and the INT8
prediction inside FP32's top-5 for >= 0.99 of cases. A graph that misses a gate raises GateFailure naming the head,
the flavour and the figure.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from .errors import GateFailure
from .heads import INPUT_NAMES, HeadSpec
from .sample_inputs import Batch

FP32_MAX_REL_DIFF = 1e-4
INT8_MIN_COSINE = 0.99
INT8_MIN_IN_TOP5 = 0.99


@dataclass
class Gates:
    fp32_max_rel_diff: float = FP32_MAX_REL_DIFF
    int8_min_cosine: float = INT8_MIN_COSINE
    int8_min_in_top5: float = INT8_MIN_IN_TOP5


@dataclass
class Figures:
    examples: int
    max_abs_diff: float
    max_rel_diff: float
    cosine_mean: float
    cosine_min: float
    top1_agreement: float | None
    in_top5: float | None
    topk_overlap: float | None = None  # fill-mask: share of PyTorch's top-k ids the graph also returns
    per_output: dict[str, dict[str, float]] = field(default_factory=dict)
    gate: str = ""
    passed: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


def _positions_mask(spec: HeadSpec, name: str, batch: Batch, value: np.ndarray) -> np.ndarray | None:
    """Boolean mask over the leading dims of `value` selecting served positions, or None to use everything."""
    attention = batch.arrays["attention_mask"].astype(bool)
    if value.ndim >= 2 and value.shape[:2] == attention.shape[:2] and spec.name != "multiple_choice":
        return attention
    return None


def _rows(spec: HeadSpec, name: str, batch: Batch, value: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """Flatten an output into comparable rows (one per example or per served position)."""
    if spec.name == "fill_mask" and valid is not None and value.ndim >= 2:
        return value[valid].reshape(int(valid.sum()), -1)
    mask = _positions_mask(spec, name, batch, value)
    if mask is not None:
        return value[mask].reshape(int(mask.sum()), -1)
    return value.reshape(value.shape[0], -1)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(denom > 0, (a * b).sum(1) / np.maximum(denom, 1e-30), 1.0)


def torch_outputs(module: torch.nn.Module, batch: Batch) -> list[np.ndarray]:
    with torch.inference_mode():
        out = module(*(torch.from_numpy(batch.arrays[n]) for n in INPUT_NAMES))
    return [o.numpy() for o in out]


def compare(
    spec: HeadSpec,
    batches: list[Batch],
    reference: list[list[np.ndarray]],
    candidate: list[list[np.ndarray]],
) -> Figures:
    """Figures for candidate outputs against reference outputs (both lists over batches of per-output arrays)."""
    names = spec.output_names
    float_outputs = [i for i, n in enumerate(names) if np.issubdtype(reference[0][i].dtype, np.floating)]
    pred_index = names.index(spec.prediction_output)
    per_output: dict[str, dict[str, float]] = {}
    cosines, agree, in_top5, overlap = [], [], [], []
    max_abs = max_rel = 0.0
    for batch, ref, cand in zip(batches, reference, candidate, strict=True):
        valid = ref[names.index("mask_valid")] if spec.name == "fill_mask" else None
        for i in float_outputs:
            r, c = _rows(spec, names[i], batch, ref[i], valid), _rows(spec, names[i], batch, cand[i], valid)
            abs_diff = float(np.abs(r - c).max()) if r.size else 0.0
            rel_diff = abs_diff / max(float(np.abs(r).max()) if r.size else 0.0, 1e-12)
            stats = per_output.setdefault(names[i], {"max_abs_diff": 0.0, "max_rel_diff": 0.0})
            stats["max_abs_diff"] = max(stats["max_abs_diff"], abs_diff)
            stats["max_rel_diff"] = max(stats["max_rel_diff"], rel_diff)
            max_abs, max_rel = max(max_abs, abs_diff), max(max_rel, rel_diff)
            # Tensor-level cosine over the served positions of the batch (for fill-mask: the sorted top-k
            # probability profiles; top-k overlap below checks the ids). Per example it would be ill-conditioned for
            # small outputs: a 2-logit vector's cosine is just the sign of a near-boundary decision.
            if r.size:
                cosines.append(_cosines(r.reshape(1, -1), c.reshape(1, -1)))
        if spec.name == "feature_extraction":
            continue
        if spec.name == "fill_mask":
            ref_ids, cand_ids = ref[pred_index][valid], cand[pred_index][valid]  # [n, k]
            agree.append(ref_ids[:, 0] == cand_ids[:, 0])
            in_top5.append((ref_ids[:, :5] == cand_ids[:, :1]).any(axis=1))
            overlap.append((ref_ids[:, :, None] == cand_ids[:, None, :]).any(axis=2).mean(axis=1))
            continue
        ref_scores, cand_scores = ref[pred_index], cand[pred_index]
        mask = _positions_mask(spec, spec.prediction_output, batch, ref_scores)
        if spec.name in ("question_answering",):  # spans are over positions: score rows are [batch, seq]
            ref_scores = np.where(batch.arrays["attention_mask"].astype(bool), ref_scores, -np.inf)
            cand_scores = np.where(batch.arrays["attention_mask"].astype(bool), cand_scores, -np.inf)
            mask = None
        if mask is not None:
            ref_scores, cand_scores = ref_scores[mask], cand_scores[mask]
        ref_scores = ref_scores.reshape(-1, ref_scores.shape[-1])
        cand_scores = cand_scores.reshape(-1, cand_scores.shape[-1])
        cand_top1 = cand_scores.argmax(-1)
        agree.append(ref_scores.argmax(-1) == cand_top1)
        k = min(5, ref_scores.shape[-1])
        top5 = np.argpartition(-ref_scores, k - 1, axis=-1)[:, :k]
        in_top5.append((top5 == cand_top1[:, None]).any(axis=1))
    all_cos = np.concatenate(cosines) if cosines else np.ones(1)
    return Figures(
        examples=sum(b.size for b in batches),
        max_abs_diff=max_abs,
        max_rel_diff=max_rel,
        cosine_mean=float(all_cos.mean()),
        cosine_min=float(all_cos.min()),
        top1_agreement=float(np.concatenate(agree).mean()) if agree else None,
        in_top5=float(np.concatenate(in_top5).mean()) if in_top5 else None,
        topk_overlap=float(np.concatenate(overlap).mean()) if overlap else None,
        per_output=per_output,
    )


def apply_gates(spec: HeadSpec, flavour: str, figures: Figures, gates: Gates) -> Figures:
    """Set figures.gate/passed; raise GateFailure naming head and flavour when the graph misses its gate.

    `flavour` is "fp32" (the FP32 gate) or any INT8 flavour name (the INT8 gates).
    """
    if flavour == "fp32":
        figures.gate = f"max_rel_diff <= {gates.fp32_max_rel_diff:g}"
        failures = (
            [f"max relative difference {figures.max_rel_diff:.3g} > {gates.fp32_max_rel_diff:g}"]
            if figures.max_rel_diff > gates.fp32_max_rel_diff
            else []
        )
    else:
        figures.gate = f"cosine_mean >= {gates.int8_min_cosine:g}, in_top5 >= {gates.int8_min_in_top5:g}"
        failures = []
        if figures.cosine_mean < gates.int8_min_cosine:
            failures.append(f"mean cosine {figures.cosine_mean:.4f} < {gates.int8_min_cosine:g}")
        if figures.in_top5 is not None and figures.in_top5 < gates.int8_min_in_top5:
            failures.append(f"prediction inside FP32 top-5 for {figures.in_top5:.4f} < {gates.int8_min_in_top5:g}")
    figures.passed = not failures
    if failures:
        raise GateFailure(f"{spec.name} [{flavour}] misses its validation gate: {'; '.join(failures)}")
    return figures
