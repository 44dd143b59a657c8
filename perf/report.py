"""One results folder: results.json (everything), points.csv, comparison.csv, results.md and the PNG plots.

`results` is a dict with `meta` (command, machine, versions, settings) and any of the sections `analyzer`
(perf_analyzer points), `load` (async client points), `comparison` (perf.compare) and `memory` (perf.memory: RSS
and PSS per server process, also in memory.csv; a comparison carries its own for the models it served). Each point
carries its server breakdown per model; the CSV flattens it by role (tokenizer, onnx, post, ensemble) so every
task shares the same columns.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from deploy.tasks import DEPLOYMENTS

from .memory import markdown as memory_markdown
from .stats import STAGES

POINT_COLUMNS = (
    "tool",
    "task",
    "profile",
    "concurrency",
    "batch",
    "seq_per_s",
    "requests_per_s",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "mean_ms",
    "failed",
    "foreign_cpu",
)
ROLES = ("tokenizer", "onnx", "post", "ensemble")
BREAKDOWN_FIELDS = ("avg_batch", *(f"{s}_ms" for s in STAGES), "runner_compute_ms")
COMPARISON_COLUMNS = (
    "task",
    "candidate",
    "how",
    "setting",
    "seq_per_s",
    "tokens_min",
    "tokens_median",
    "tokens_max",
    "ratio_vs_a",
    "ratio_vs_b",
    "ratio_c_vs_d",
    "ratio_c_vs_e",
    "cosine_min",
    "top1_agreement",
)
PEERS = ("d", "e", "p")  # perf.compare.PEER_KEYS: Optimum, OpenVINO, the worker's PyTorch self-check
CANDIDATES = ("a", "b", "c", "c_bulk", *PEERS)


def role(model: str, task: str) -> str:
    if model == task:
        return "ensemble"
    if model.endswith("_onnx"):
        return "onnx"
    if model.endswith("_post"):
        return "post"
    return "tokenizer"


def point_row(point: dict) -> dict:
    row = {c: point.get(c) for c in POINT_COLUMNS}
    for model, figures in (point.get("server") or {}).items():
        r = role(model, point["task"])
        for f in BREAKDOWN_FIELDS:
            row[f"{r}_{f}"] = figures.get(f)
    return row


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)


def comparison_rows(comparison: dict) -> list[dict]:
    """One row per task and candidate: best setting, sequences/s, the ratios to (a) and (b), for (c) the ratios to the
    peers (d) and (e), and for a peer its fidelity against PyTorch FP32 (of the variant that counts)."""
    rows = []
    for task, t in comparison["tasks"].items():
        ratios = t["ratios"]
        vs = {"a": (None, None), "b": (ratios["b/a"], None), "c": (ratios["c/a"], ratios["c/b"])}
        vs["c_bulk"] = (ratios.get("c_bulk/a"), ratios.get("c_bulk/b"))
        for k in PEERS:
            vs[k] = (ratios.get(f"{k}/a"), None)
        for key in CANDIDATES:
            if key not in t:
                continue
            best = t[key]["best"]
            setting = f"concurrency {best['concurrency']}" if key.startswith("c") else f"batch {best['batch']}"
            prefix = "c" if key.startswith("c") else None
            fidelity = t[key].get("fidelity") or {}
            if best.get("layout"):
                setting += f", {best['layout']}"
            rows.append(
                {
                    "task": task,
                    "candidate": f"({key.replace('_', ' ')}) {t[key]['candidate']}",
                    "how": t[key]["how"],
                    "setting": setting,
                    "seq_per_s": best["seq_per_s"],
                    "tokens_min": t["tokens"]["min"],
                    "tokens_median": t["tokens"]["median"],
                    "tokens_max": t["tokens"]["max"],
                    "ratio_vs_a": vs[key][0],
                    "ratio_vs_b": vs[key][1],
                    "ratio_c_vs_d": ratios.get(f"{key}/d") if prefix else None,
                    "ratio_c_vs_e": ratios.get(f"{key}/e") if prefix else None,
                    "cosine_min": fidelity.get("cosine_min"),
                    "top1_agreement": fidelity.get("top1_agreement"),
                }
            )
    return rows


def all_points(results: dict) -> list[dict]:
    points = list(results.get("analyzer", [])) + list(results.get("load", []))
    for t in (results.get("comparison") or {}).get("tasks", {}).values():
        points += [run for key in ("c", "c_bulk") if key in t for run in t[key]["runs"]]
    return points


def _f(value: object, digits: int = 1) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown(results: dict) -> str:
    meta = results.get("meta", {})
    machine = meta.get("machine", {})
    versions = meta.get("versions", {})
    lines = [f"# Throughput: {meta.get('title', 'perf results')}", ""]
    lines += ["```bash", meta.get("command", "python -m perf"), "```", ""]
    lines.append(
        f"Machine: {machine.get('cpu')} ({machine.get('cores')} cores, flags {', '.join(machine.get('cpu_flags', []))}"
        f"), load average before {machine.get('load_average')}, after {meta.get('load_average_after')}; "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
        + "."
    )
    lines.append("")
    if results.get("tuning"):
        from .tune import markdown as tuning_markdown

        lines += tuning_markdown(results["tuning"])
    comparison = results.get("comparison")
    if comparison:
        s = comparison["settings"]
        lines += [
            f"## Comparison at sequence length ~128 ({s['threads']} threads each, one candidate at a time, "
            f"best of {s.get('rounds', 1)} rounds per setting)",
            "",
            "| task | candidate | best setting | seq/s | x (a) | x (b) | (c) / (d) | (c) / (e) |",
            "|---|---|---|---:|---:|---:|---:|---:|",
        ]
        for row in comparison_rows(comparison):
            ratios = [
                f"**{_f(row[k], 2)}**" if row[k] is not None else ""
                for k in ("ratio_vs_a", "ratio_vs_b", "ratio_c_vs_d", "ratio_c_vs_e")
            ]
            cells = [row["task"], row["candidate"], row["setting"], _f(row["seq_per_s"]), *ratios]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        lines += peer_lines(comparison)
        for task, t in comparison["tasks"].items():
            failed = sum(t[k]["failed"] for k in ("c", "c_bulk") if k in t)
            lines.append(
                f"- {task}: {t['items']} texts of {t['tokens']['min']}..{t['tokens']['max']} tokens "
                f"(median {t['tokens']['median']}); failed requests in (c): {failed}."
            )
            for key in CANDIDATES:
                if key not in t:
                    continue
                tried = ", ".join(
                    f"{'concurrency' if key.startswith('c') else 'batch'} "
                    f"{r['concurrency'] if key.startswith('c') else r['batch']}"
                    f"{' (' + r['layout'] + ')' if r.get('layout') else ''}: "
                    f"{_f(r['seq_per_s'])} ({_f(r.get('seq_per_s_median'))}; {_pct(r.get('foreign_cpu'))})"
                    for r in t[key]["runs"]
                )
                lines.append(
                    f"  - ({key.replace('_', ' ')}) {t[key]['how']}. seq/s best round (median; CPU share other "
                    f"processes took during the best round): {tried}"
                )
        start = comparison.get("machine_at_start") or results.get("meta", {}).get("machine_at_start")
        if start:
            lines.append(
                f"- Machine at the start: load average {start.get('load_average')}, other processes "
                f"{_pct(start.get('foreign_cpu'))} of the CPU."
            )
        for phase in comparison.get("load_average_before", []):
            if isinstance(phase, dict) and "round" in phase:
                lines.append(
                    f"- Round {phase['round']}: before (a)/(b) {_quiet(phase['before_in_process'])}; before (c) "
                    f"{_quiet(phase['before_server'])}."
                )
        if comparison.get("server_during_in_process"):
            lines.append("- Note: a server was running (idle) while (a) and (b) were measured.")
        lines.append("")
    runners = {DEPLOYMENTS[t].onnx_model: r for t, r in meta.get("repository", {}).get("runner", {}).items()}
    for title, memory in (
        ("Memory of the whole repository, served under load", results.get("memory")),
        ("Memory of the models served in (c), after its last round", (comparison or {}).get("memory")),
    ):
        if memory:
            lines += [f"## {title}", "", *memory_markdown(memory, runners), ""]
            load = results.get("memory_load") if memory is results.get("memory") else None
            if load:
                calls = ", ".join(f"{t} {f['calls']} calls ({f['failed']} failed)" for t, f in load["tasks"].items())
                how = f"{load['seconds']:g} s of load on each task in turn at concurrency {load['concurrency']}"
                lines += [f"Read after {how} ({load.get('profile', 'corpus')} texts): {calls}.", ""]
    for title, key in (("perf_analyzer", "analyzer"), ("Async client (text in, results out)", "load")):
        points = list(results.get(key) or [])
        if key == "load":  # the (c) runs of the comparison are async client points too
            points += [p for p in all_points(results) if p.get("tool") == "async_client" and p not in points]
        if not points:
            continue
        lines += [
            f"## {title}",
            "",
            "| task | profile | conc. | batch | seq/s | p50 ms | p90 ms | p99 ms | failed "
            "| tokenizer ms | onnx queue ms | onnx infer ms | onnx rows/exec | post ms | others' CPU |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for p in points:
            r = point_row(p)
            tokenizer = _sum(r, "tokenizer")
            post = _sum(r, "post")
            lines.append(
                f"| {p['task']} | {p.get('profile', '')} | {p['concurrency']} | {p['batch']} | {_f(p['seq_per_s'])} | "
                f"{_f(p['p50_ms'])} | {_f(p['p90_ms'])} | {_f(p['p99_ms'])} | {p['failed']} | {_f(tokenizer)} | "
                f"{_f(r.get('onnx_queue_ms'))} | {_f(_onnx_infer_ms(r))} | "
                f"{_f(r.get('onnx_avg_batch'), 2)} | {_f(post)} | {_pct(p.get('foreign_cpu'))} |"
            )
        lines.append("")
    for e in results.get("analyzer_errors") or []:
        lines.append(
            f"- perf_analyzer could not measure {e['task']} ({e['profile']}) at concurrency "
            f"{e['concurrency']}, batch {e['batch']}: {e['error'].splitlines()[-1]}"
        )
    if any(results.get(k) for k in ("analyzer", "load", "comparison")):
        lines += [
            "",
            "Server columns come from Triton's statistics diffed around each point: per request, ms spent in",
            "the tokenizer (queue + compute), queued before the ONNX model, computing in it (the whole batch it ran",
            "in: the runner's own counters on Triton's metrics endpoint, which time a batch on its stream; Triton's",
            "compute_infer where those were not read), its rows per execute call (dynamic batching), and in the",
            "post-processing (queue + compute).",
            "\"others' CPU\": the share of the machine's CPU that processes outside this run took meanwhile (the",
            "machine may be shared).",
            "",
        ]
    return "\n".join(lines)


def peer_lines(comparison: dict) -> list[str]:
    """Every peer variant (both are reported, the faster counts) with its speed beside its fidelity against
    PyTorch FP32, so no speed is bought with silent accuracy loss; and any peer that failed."""
    rows = [
        (task, key, name, v)
        for task, t in comparison["tasks"].items()
        for key in PEERS
        if key in t
        for name, v in t[key]["variants"].items()
    ]
    lines = []
    if rows:
        lines += [
            "Peers, every variant: speed and fidelity against PyTorch FP32 on the same rows (cosine of the logits at "
            "the decoded positions - fill-mask: each [MASK]'s vocabulary logits, QA: start and end logits - and top-1 "
            "agreement):",
            "",
            "| task | peer | variant | best setting | seq/s | cosine min | cosine mean | top-1 agreement | counts |",
            "|---|---|---|---|---:|---:|---:|---:|---|",
        ]
        for task, key, name, v in rows:
            best, f = v.get("best") or {}, v["fidelity"]
            counts = "yes" if comparison["tasks"][task][key]["best"].get("layout") == name else ""
            lines.append(
                f"| {task} | ({key}) | {name} | batch {best.get('batch', '')} | {_f(best.get('seq_per_s'))} | "
                f"{_f(f['cosine_min'], 4)} | {_f(f['cosine_mean'], 4)} | {_f(f['top1_agreement'], 3)} | {counts} |"
            )
        lines.append("")
        for task, t in comparison["tasks"].items():
            for key in PEERS:
                if key in t:
                    versions = ", ".join(f"{k} {x}" for k, x in (t[key].get("versions") or {}).items())
                    lines.append(
                        f"- {task} ({key}): {versions}; conversion and fidelity check {t[key].get('prepare_s')} s."
                    )
        lines.append("")
    for task, t in comparison["tasks"].items():
        for key, error in (t.get("peer_errors") or {}).items():
            lines.append(f"- {task} ({key}) FAILED, left out of the table: {error.splitlines()[0][:300]}")
    return lines


def _pct(share: float | None) -> str:
    return "n/a" if share is None else f"{100 * share:.0f}%"


def _quiet(seen: object) -> str:
    if isinstance(seen, dict):
        return f"load average {seen.get('load_average')}, other processes {_pct(seen.get('foreign_cpu'))} CPU"
    return f"load average {seen}"


def _onnx_infer_ms(row: dict) -> float | None:
    """The runner's own compute time per request where its counters were read, else Triton's compute_infer (which,
    with pipelined streams, times the wait for a free stream instead: perf/stats.py)."""
    own = row.get("onnx_runner_compute_ms")
    return own if own is not None else row.get("onnx_compute_infer_ms")


def _sum(row: dict, prefix: str) -> float | None:
    values = [row.get(f"{prefix}_{s}_ms") for s in STAGES]
    values = [v for v in values if v is not None]
    return sum(values) if values else None


def write_report(out: Path, results: dict, plots: bool = True) -> dict[str, Path]:
    """Write every file of the results folder; returns {kind: path}."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": out / "results.json", "points_csv": out / "points.csv", "markdown": out / "results.md"}
    files["json"].write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    points = all_points(results)
    columns = list(POINT_COLUMNS) + [f"{r}_{f}" for r in ROLES for f in BREAKDOWN_FIELDS]
    _write_csv(files["points_csv"], columns, [point_row(p) for p in points])
    if results.get("comparison"):
        files["comparison_csv"] = out / "comparison.csv"
        _write_csv(files["comparison_csv"], list(COMPARISON_COLUMNS), comparison_rows(results["comparison"]))
    memory = results.get("memory") or (results.get("comparison") or {}).get("memory")
    if memory:
        files["memory_csv"] = out / "memory.csv"
        _write_csv(files["memory_csv"], ["name", "pid", "rss_mb", "pss_mb"], memory["processes"])
    files["markdown"].write_text(markdown(results), encoding="utf-8")
    if plots and points:
        from .plots import plot_all

        files.update(plot_all(out, points))
    return files
