"""Hugging Face checkpoint directories: find and read the weights, match them to a model, write them back.

Loading is strict by design: a weight the model needs but the checkpoint lacks is an error naming it (never a silent
random init), a weight of the wrong shape is an error naming both shapes, and a weight that belongs to no MobileBERT
head at all is an error. Weights of *other* MobileBERT heads (the NSP head when loading a pre-training checkpoint
for fill-mask, say) are skipped and listed in the model's `load_report`.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .configuration_mobilebert import MobileBertConfig

logger = logging.getLogger(__name__)

SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
WEIGHTS_NAME = "pytorch_model.bin"
WEIGHTS_INDEX_NAME = "pytorch_model.bin.index.json"

# Parameters that belong to some MobileBERT head or buffer: unexpected in one class, legitimate in a checkpoint.
_SIBLING_HEAD_PATTERN = re.compile(
    r"^(mobilebert\.)?pooler\.|^cls\.|^classifier\.|^qa_outputs\.|(^|\.)embeddings\.position_ids$"
)
_HEAD_ROOTS = ("cls.", "classifier.", "qa_outputs.")  # head weights live outside the base-model prefix
_LEGACY_NAMES = ((".gamma", ".weight"), (".beta", ".bias"))  # old TF-converted LayerNorm names


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be loaded into the requested model."""


class MissingWeightsError(CheckpointError):
    """The checkpoint lacks weights the model needs (they would otherwise be random)."""


class UnexpectedWeightsError(CheckpointError):
    """The checkpoint holds weights that belong to no MobileBERT model."""


class ShapeMismatchError(CheckpointError):
    """A checkpoint weight has a different shape from the model's parameter."""


@dataclass
class LoadReport:
    """What from_pretrained did with each weight: loaded, skipped (other heads), or randomly initialised."""

    weights_file: str
    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    randomly_initialised: list[str] = field(default_factory=list)


def _preview(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def find_weights_file(directory: Path) -> Path:
    """The weights file of a checkpoint directory, preferring safetensors as transformers does."""
    for name in (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, WEIGHTS_NAME, WEIGHTS_INDEX_NAME):
        if (directory / name).is_file():
            return directory / name
    present = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
    raise CheckpointError(
        f"no weights in {directory}: expected {SAFE_WEIGHTS_NAME} or {WEIGHTS_NAME} (or a sharded index); "
        f"the directory holds {present or 'nothing'}"
    )


def _read_single(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or truncated files surface as many different exception types
        raise CheckpointError(f"cannot read weights file {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return state


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a weights file, or every shard named by a *.index.json file."""
    if not path.name.endswith(".index.json"):
        return _read_single(path)
    try:
        weight_map: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))["weight_map"]
    except (json.JSONDecodeError, KeyError) as exc:
        raise CheckpointError(f"{path} is not a valid shard index (needs a 'weight_map'): {exc}") from exc
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = path.parent / shard
        if not shard_path.is_file():
            raise CheckpointError(f"shard {shard} named in {path.name} is missing from {path.parent}")
        state.update(_read_single(shard_path))
    return state


def _rename_legacy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    renamed = {}
    for key, value in state.items():
        for old, new in _LEGACY_NAMES:
            if key.endswith(old) and "LayerNorm" in key:
                key = key[: -len(old)] + new
        renamed[key] = value
    return renamed


def _align_prefix(state: dict[str, torch.Tensor], model_keys: set[str], prefix: str) -> dict[str, torch.Tensor]:
    """Bridge base-model checkpoints (no 'mobilebert.' prefix) and head checkpoints (with it), both ways."""
    dotted = prefix + "."
    model_has_prefix = any(k.startswith(dotted) for k in model_keys)
    state_has_prefix = any(k.startswith(dotted) for k in state)
    if model_has_prefix and not state_has_prefix:
        return {k if k.startswith(_HEAD_ROOTS) else dotted + k: v for k, v in state.items()}
    if not model_has_prefix and state_has_prefix:
        return {k[len(dotted) :] if k.startswith(dotted) else k: v for k, v in state.items()}
    return state


def load_pretrained(
    cls: type,
    directory: str | Path,
    *,
    strict: bool,
    attn_implementation: str | None,
    overrides: dict[str, Any],
) -> Any:
    """Build `cls` from the checkpoint directory; see MobileBertPreTrainedModel.from_pretrained."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory {directory} does not exist (or is not a directory)")
    config = MobileBertConfig.from_pretrained(directory)
    for name, value in overrides.items():
        if name == "num_labels":
            config.num_labels = value
        elif not hasattr(config, name) or name in ("extra",):
            raise TypeError(f"{cls.__name__}.from_pretrained() got an unknown config override {name!r}")
        else:
            setattr(config, name, value)
    if attn_implementation is not None:
        config.attn_implementation = attn_implementation
    config.validate()
    weights_file = find_weights_file(directory)
    state = _rename_legacy(read_state_dict(weights_file))

    model = cls(config)
    expected = model.state_dict()
    tied = set(getattr(cls, "tied_weights", {}))
    state = _align_prefix(state, set(expected), cls.base_model_prefix)

    report = LoadReport(weights_file=str(weights_file))
    unknown = []
    for key in sorted(state):
        if key in expected:
            continue
        if _SIBLING_HEAD_PATTERN.search(key):
            report.skipped.append(key)
        else:
            unknown.append(key)
    if unknown:
        raise UnexpectedWeightsError(
            f"{weights_file} holds {len(unknown)} weights that belong to no MobileBERT model: {_preview(unknown)}. "
            "Is this a MobileBERT checkpoint, and does config.json match it?"
        )

    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if mismatched:
        raise ShapeMismatchError(
            f"{len(mismatched)} weights in {weights_file} do not fit the model built from config.json: "
            f"{_preview(mismatched, 6)}"
        )

    # Tied aliases (the MLM decoder) are satisfied by the weight they point at.
    missing = sorted(k for k in expected if k not in state and k not in tied)
    if missing and strict:
        raise MissingWeightsError(
            f"{cls.__name__} needs {len(missing)} weights that {weights_file} lacks: {_preview(missing)}. "
            "They would be randomly initialised; pass strict=False to accept that (e.g. to fine-tune a new head)."
        )
    if config.tie_word_embeddings is False:
        for alias in tied:
            if alias.endswith("decoder.weight") and alias in expected and alias not in state:
                raise MissingWeightsError(f"config sets tie_word_embeddings=false but {alias} is not in {weights_file}")

    loadable = {k: v for k, v in state.items() if k in expected}
    # An untied checkpoint may carry its own copy of a tied alias; the canonical name wins.
    if config.tie_word_embeddings:
        for alias in tied:
            loadable.pop(alias, None)
    model.load_state_dict(loadable, strict=False)
    model.tie_weights()
    report.loaded = sorted(loadable)
    report.randomly_initialised = missing
    if missing:
        logger.warning("%s: randomly initialised %d weights: %s", cls.__name__, len(missing), _preview(missing))
    if report.skipped:
        logger.info(
            "%s: skipped %d weights of other heads: %s", cls.__name__, len(report.skipped), _preview(report.skipped)
        )
    model.load_report = report
    return model.eval()


def save_pretrained(model: Any, directory: str | Path, *, safe_serialization: bool = True) -> Path:
    """config.json + weights, tied aliases written once (under their canonical names), as transformers writes."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(f"cannot create checkpoint directory {directory}: {exc}") from exc
    config: MobileBertConfig = model.config
    config.architectures = [type(model).__name__]
    config.save_pretrained(directory)
    tied = set(getattr(model, "tied_weights", {})) if config.tie_word_embeddings else {"cls.predictions.decoder.bias"}
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k not in tied}
    if safe_serialization:
        from safetensors.torch import save_file

        path = directory / SAFE_WEIGHTS_NAME
        save_file(state, str(path), metadata={"format": "pt"})
    else:
        path = directory / WEIGHTS_NAME
        torch.save(state, str(path))
    return path
