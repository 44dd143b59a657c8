"""Assembling the Triton model repository: committed Python models + generated configs and artifacts.

The hand-written Python models live in the project's `triton_repo/` (committed); their generated configs and the
artifacts they load (tokenizer.json, ONNX graphs) are written beside them by the build and ignored by git. A build
into another directory copies the committed models there first.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from model_def import MobileBertTokenizer

from .model_configs import DEFAULT_LENGTH_BUCKETS, tokenizer_config, write_config

SOURCE_REPOSITORY = Path(__file__).resolve().parent.parent / "triton_repo"


def add_tokenizer(
    repository: Path,
    checkpoint: Path,
    *,
    length_buckets: tuple[int, ...] = DEFAULT_LENGTH_BUCKETS,
    truncation: str = "longest_first",
    name: str = "tokenizer",
) -> Path:
    """The tokenizer model: model.py, config.pbtxt, and tokenizer.json saved from the checkpoint's tokenizer."""
    model_dir = repository / name
    version = model_dir / "1"
    version.mkdir(parents=True, exist_ok=True)
    source = SOURCE_REPOSITORY / "tokenizer" / "1" / "model.py"
    if source.resolve() != (version / "model.py").resolve():
        shutil.copy2(source, version / "model.py")
    tokenizer = MobileBertTokenizer.from_pretrained(checkpoint)
    if max(length_buckets) > tokenizer.model_max_length:
        raise ValueError(
            f"the largest length bucket {max(length_buckets)} exceeds the tokenizer's model_max_length "
            f"{tokenizer.model_max_length}"
        )
    tokenizer.backend.save(str(version / "tokenizer.json"))
    write_config(tokenizer_config(name=name, length_buckets=length_buckets, truncation=truncation), model_dir)
    return model_dir
