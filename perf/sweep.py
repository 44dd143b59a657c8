"""The full perf run (`python -m perf sweep`, what `make bench` calls): nothing is built here.

1. the comparison (perf.compare): rounds of (a) transformers eager and (b) onnxruntime INT8 in-process with no server
   running, then (c) the async client against a freshly started server, all on the same ~128-token texts;
2. the server again (only the measured tasks' models, free ports): perf_analyzer sweeps over realistic corpus text
   and the ~128-token texts, the async client over corpus text;
3. the report: results.json, points.csv, comparison.csv, results.md, PNG plots.
Before it starts it waits (up to `wait_s`) for the 1-minute load average to drop to `max_load`; before each phase,
until other processes use at most `max_foreign` of the CPU; what it saw is recorded with the results.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import environment
from .analyzer import AnalyzerSettings, run_analyzer
from .compare import CompareSettings, prepare, run_comparison
from .inputs import corpus_rows
from .load import run_load_sweep
from .serving import server_for

# (length profile, rows per request, concurrency levels) of the perf_analyzer sweep
DEFAULT_ANALYZER_PLAN: tuple[tuple[str, int, tuple[int, ...]], ...] = (
    ("corpus", 1, (1, 2, 4, 8, 16)),
    ("corpus", 8, (1, 2, 4)),
    ("seq128", 1, (1, 4, 8, 16)),
)
QUICK_ANALYZER_PLAN: tuple[tuple[str, int, tuple[int, ...]], ...] = (("corpus", 1, (1, 4)), ("seq128", 1, (8,)))


@dataclass
class SweepSettings:
    compare: CompareSettings
    analyzer_plan: tuple = DEFAULT_ANALYZER_PLAN
    interval_ms: int = 4000
    load_concurrency: list[int] = field(default_factory=lambda: [1, 4, 16])
    load_seconds: float = 8.0
    max_load: float = 1.5  # 1-minute load average before the run starts
    max_foreign: float = 0.15  # share of the CPU other processes may use when a phase starts
    wait_s: float = 600.0


def quiet(settings: SweepSettings, log, first: bool = False) -> dict:
    return environment.wait_until_quiet(
        settings.max_foreign, settings.wait_s, max_load=settings.max_load if first else None, log=log
    )


def run_sweep(settings: SweepSettings, out: Path, log=print, save=None) -> dict:
    """The whole run; `save(results)`, when given, is called with the results so far after each phase."""
    c = settings.compare
    plan = prepare(c)  # fails early, with the build command, when the repository is not built
    started = time.time()
    at_start = quiet(settings, log, first=True)
    comparison = run_comparison(c, log, server_log=Path(out) / "tritonserver.log", quiet=lambda: quiet(settings, log))
    comparison["machine_at_start"] = at_start
    analyzer_points: list[dict] = []
    analyzer_errors: list[dict] = []
    load_points: list[dict] = []
    results = {"comparison": comparison, "analyzer": analyzer_points, "load": load_points}
    results["analyzer_errors"] = analyzer_errors
    if save:
        save(results)
    load_before_server = quiet(settings, log)
    with server_for(c.repository, list(plan), log_file=Path(out) / "tritonserver.log") as server:
        url = server.grpc_url
        for task, p in plan.items():
            for profile, batch, levels in settings.analyzer_plan:
                rows = corpus_rows(task) if profile == "corpus" else p["rows"]
                analyzer = AnalyzerSettings(
                    task=task,
                    url=url,
                    metrics_url=server.metrics_url,
                    concurrency=list(levels),
                    batch_sizes=[batch],
                    measurement_interval_ms=settings.interval_ms,
                    profile=profile,
                )
                analyzer_points += run_analyzer(
                    analyzer, rows, Path(out) / "perf_analyzer", log=log, errors=analyzer_errors
                )
                if save:
                    save(results)
            load_points += run_load_sweep(
                task,
                url,
                corpus_rows(task),
                settings.load_concurrency,
                log=log,
                metrics_url=server.metrics_url,
                seconds=settings.load_seconds,
                profile="corpus",
            )
    return {
        **results,
        "sweep": {
            "analyzer_plan": [list(x) for x in settings.analyzer_plan],
            "load_average_before_sweeps": load_before_server,
            **{k: v for k, v in asdict(settings).items() if k not in ("compare", "analyzer_plan")},
        },
        "wall_s": round(time.time() - started, 1),
    }
