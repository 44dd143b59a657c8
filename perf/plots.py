"""PNG plots of a results folder (matplotlib, headless): throughput vs concurrency, latency percentiles vs throughput.

One panel per task; one line per series (tool, input length profile, rows per request), points in concurrency order.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path


def _series(points: list[dict]) -> dict[str, dict[tuple, list[dict]]]:
    by_task: dict[str, dict[tuple, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for p in points:
        if p.get("seq_per_s") is None:
            continue
        by_task[p["task"]][(p["tool"], p.get("profile", ""), p["batch"])].append(p)
    for series in by_task.values():
        for key in series:
            series[key].sort(key=lambda p: p["concurrency"])
    return by_task


def _label(key: tuple) -> str:
    tool, profile, batch = key
    name = "perf_analyzer" if tool == "perf_analyzer" else "async client"
    return f"{name}, {profile}, {batch} row{'s' if batch > 1 else ''}/request"


def plot_all(out: Path, points: list[dict]) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_task = _series(points)
    tasks = sorted(by_task)
    files = {}
    if not tasks:
        return files

    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.5), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for key, pts in sorted(by_task[task].items()):
            ax.plot([p["concurrency"] for p in pts], [p["seq_per_s"] for p in pts], marker="o", label=_label(key))
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrency (requests in flight)")
        ax.set_ylabel("sequences / s")
        ax.set_title(task)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Throughput vs concurrency")
    fig.tight_layout()
    files["throughput_png"] = out / "throughput_vs_concurrency.png"
    fig.savefig(files["throughput_png"], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.5), squeeze=False)
    styles = {"p50_ms": "-", "p90_ms": "--", "p99_ms": ":"}
    for ax, task in zip(axes[0], tasks, strict=True):
        for i, (key, pts) in enumerate(sorted(by_task[task].items())):
            color = f"C{i}"
            for field, style in styles.items():
                xs = [p["seq_per_s"] for p in pts if p.get(field) is not None]
                ys = [p[field] for p in pts if p.get(field) is not None]
                label = f"{_label(key)} {field[:3]}" if field == "p50_ms" else f"{field[:3]}"
                ax.plot(xs, ys, style, marker="o", markersize=3, color=color, label=label)
        ax.set_yscale("log")
        ax.set_xlabel("sequences / s")
        ax.set_ylabel("latency per request, ms (p50 -, p90 --, p99 :)")
        ax.set_title(task)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
    fig.suptitle("Latency percentiles vs throughput")
    fig.tight_layout()
    files["latency_png"] = out / "latency_vs_throughput.png"
    fig.savefig(files["latency_png"], dpi=110)
    plt.close(fig)
    return files
