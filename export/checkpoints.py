"""Which checkpoint directory serves each task: one checkpoint, a set of per-kind ones, or the demo set.

A library module: `python -m export` and `python -m deploy build` / `demo` all resolve their checkpoints here.
"""

from __future__ import annotations

import logging
from pathlib import Path

from model_def import MobileBertConfig

from .errors import ExportError
from .heads import CHECKPOINT_KIND_FOR_TASK, TASKS_BY_ARCHITECTURE

logger = logging.getLogger("export")
DEMO_CHECKPOINTS = Path("artifacts/demo-checkpoints")
SMALL_DEMO_CHECKPOINTS = Path("artifacts/demo-checkpoints-small")


def is_checkpoint_set(directory: Path) -> bool:
    """A directory of per-kind checkpoints (pretraining/, question-answering/, ...) rather than one checkpoint."""
    return not (directory / "config.json").is_file() and any(
        (directory / kind / "config.json").is_file() for kind in set(CHECKPOINT_KIND_FOR_TASK.values())
    )


def demo_checkpoints(small: bool = False) -> Path:
    """The demo checkpoint set (2-layer with `small`), written first if absent: random weights, see DEMO_NOTICE."""
    directory = SMALL_DEMO_CHECKPOINTS if small else DEMO_CHECKPOINTS
    if not is_checkpoint_set(directory):
        from model_def.demo_checkpoint import DEMO_NOTICE, write_demo_checkpoints  # torch-heavy; only when needed

        logger.info("writing demo checkpoints to %s", directory)
        write_demo_checkpoints(directory, small=small)
        logger.warning(DEMO_NOTICE)
    return directory


def tasks_for_checkpoint(directory: Path) -> tuple[str, ...]:
    config = MobileBertConfig.from_pretrained(directory)
    tasks: list[str] = []
    for arch in config.architectures or ["MobileBertModel"]:
        tasks += TASKS_BY_ARCHITECTURE.get(arch, ())
    if not tasks:
        raise ExportError(f"{directory}: architectures {config.architectures} serve no known task")
    return tuple(dict.fromkeys(tasks))


def resolve_checkpoints(checkpoint: Path, tasks: list[str] | None, overrides: dict[str, Path]) -> dict[str, Path]:
    """task -> checkpoint directory."""
    if is_checkpoint_set(checkpoint):
        available = {
            t: checkpoint / kind for t, kind in CHECKPOINT_KIND_FOR_TASK.items() if (checkpoint / kind).is_dir()
        }
        chosen = tasks or list(available)
        missing = [t for t in chosen if t not in available and t not in overrides]
        if missing:
            raise ExportError(f"checkpoint set {checkpoint} has no checkpoint for {missing}")
        plan = {t: available[t] for t in chosen if t in available}
    else:
        if not checkpoint.is_dir():
            raise ExportError(f"checkpoint directory {checkpoint} does not exist")
        chosen = tasks or list(tasks_for_checkpoint(checkpoint))
        plan = {t: checkpoint for t in chosen}
    plan.update(overrides)
    return plan
