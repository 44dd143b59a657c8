"""What a build builds and what it built, as library calls shared by `python -m deploy build` and the demo."""

from __future__ import annotations

from pathlib import Path

from export.checkpoints import demo_checkpoints, resolve_checkpoints

from .tasks import DEPLOYMENTS


def deployment_plan(
    checkpoint: Path | None,
    *,
    small: bool = False,
    tasks: list[str] | None = None,
    overrides: dict[str, Path] | None = None,
) -> dict[str, Path]:
    """task -> checkpoint directory for the deployable tasks of `checkpoint` (None: the demo set, `small` or not,
    written first if absent); `overrides` give single tasks their own checkpoint."""
    source = demo_checkpoints(small) if checkpoint is None else Path(checkpoint).expanduser()
    plan = resolve_checkpoints(source, tasks, overrides or {})
    return {t: c for t, c in plan.items() if t in DEPLOYMENTS}


def build_summary(record: dict, repository: Path) -> str:
    """The printed outcome of a build: every graph with its size and validation cosine, the engine serving each
    task, then how to serve it."""
    lines = [f"\n{'task':22s} {'graph':28s} {'MB':>6s} {'cosine':>8s}"]
    for task, graphs in record["graphs"].items():
        for g in graphs.values():
            cosine = "" if g["cosine"] is None else f"{g['cosine']:.5f}"
            lines.append(f"{task:22s} {g['graph']:28s} {g['MB']:6.1f} {cosine:>8s}")
    for task, choice in record.get("engines", {}).items():
        lines.append(f"{task:22s} served by {choice['chosen']} ({choice['reason']})")
    lines.append(f"\nrepository {repository}: {len(record['models'])} models; serve it with: python -m deploy serve")
    return "\n".join(lines)
