"""Adding single models to a repository outside a full build (a tokenizer-only repository, for instance)."""

from __future__ import annotations

from pathlib import Path

from model_def import MobileBertTokenizer

from .build import BuildSettings, add_tokenizer_model, check_length_buckets
from .model_configs import DEFAULT_LENGTH_BUCKETS


def add_tokenizer(
    repository: Path,
    checkpoint: Path,
    *,
    length_buckets: tuple[int, ...] = DEFAULT_LENGTH_BUCKETS,
    truncation: str = "longest_first",
    name: str = "tokenizer",
) -> Path:
    """The tokenizer model: model.py, config.pbtxt, and tokenizer.json saved from the checkpoint's tokenizer."""
    tokenizer = MobileBertTokenizer.from_pretrained(checkpoint)
    check_length_buckets(length_buckets, tokenizer.model_max_length)
    settings = BuildSettings(length_buckets=length_buckets, truncation=truncation)
    add_tokenizer_model(Path(repository), name, tokenizer.backend.to_str(), settings)
    return Path(repository) / name
