"""Which served graphs of a built repository were never validated on this CPU.

Light on purpose: `deploy serve` (and the container image, which has no torch or onnx) reads only the manifests'
JSON and export's CPU signature (stdlib only).
"""

from __future__ import annotations

import json
from pathlib import Path

from export.cpu import cpu_signature, same_kernels

# The graphs the CPU profiles serve (int8-qdq is TensorRT's, validated there by its own engine build).
CPU_SERVED_FLAVOURS = ("int8-dynamic", "fp32")


def graphs_not_validated_here(repository: Path) -> list[str]:
    """CPU-served graphs in a built repository whose gates never ran on this CPU's kernels, as "<model>/<graph>".

    A repository built on one machine and served on another (copied, or baked into an image) carries manifests
    that name the CPUs it was proven on; `deploy build` on this machine validates it here.
    """
    here = cpu_signature()
    unproven = []
    for flavour in CPU_SERVED_FLAVOURS:
        for path in sorted(Path(repository).glob(f"*_onnx/1/model.{flavour}.json")):
            manifest = _read_json(path)
            if not any(same_kernels(cpu, here) for cpu in manifest.get("validated_on", [])):
                unproven.append(f"{path.parent.parent.name}/{path.stem}")
    return unproven + _engines_not_validated_here(Path(repository), here)


def _engines_not_validated_here(repository: Path, here: dict) -> list[str]:
    """Graphs the build chose another engine for (build.json), whose figures under it came from other CPUs."""
    unproven = []
    for task, choice in sorted(_read_json(repository / "build.json").get("engines", {}).items()):
        spec = choice.get("spec", {})
        if spec.get("engine") in (None, "onnxruntime"):
            continue
        stem = Path(spec["graph"]).stem
        manifest = _read_json(repository / f"{task}_onnx" / "1" / f"{stem}.json")
        figures = manifest.get("engines", {}).get(f"{spec['engine']}-{spec['precision']}", {})
        if not (figures.get("passed") and same_kernels(figures.get("cpu"), here)):
            unproven.append(f"{task}_onnx/{stem} ({spec['engine']} {spec['precision']})")
    return unproven


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
