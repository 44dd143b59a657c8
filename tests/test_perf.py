"""Perf smoke (a few seconds per task): perf_analyzer and the async client's text load against the real server of the
small repository, a miniature comparison, and the report they produce. Zero failed requests everywhere.

The full-size sweep (`python -m perf sweep`, `make bench`) is not part of the tests.
"""

from __future__ import annotations

import csv
import json

import pytest

from deploy.model_configs import parse_config
from deploy.tasks import DEPLOYMENTS
from perf import environment
from perf.__main__ import main as perf_main
from perf.analyzer import AnalyzerSettings, run_analyzer
from perf.compare import TASKS as COMPARE_TASKS
from perf.compare import CompareSettings, prepare, run_comparison
from perf.inputs import MASK, corpus_rows, seq128_rows, token_lengths, write_analyzer_data
from perf.load import LOAD_TASKS, LoadSettings, run_load
from perf.memory import by_model, server_memory, summary
from perf.report import COMPARISON_COLUMNS, POINT_COLUMNS, write_report
from perf.serving import onnx_runner_settings
from perf.stats import runner_counters, server_breakdown
from perf.tune import Variant, run_tuning, variant_repository
from perf.tune import markdown as tune_markdown

# Functional tier: real Triton servers or ONNX exports (`make test-quick` leaves these out).
pytestmark = pytest.mark.functional

TASKS = ("fill_mask", "question_answering")
COMPARED = COMPARE_TASKS  # the comparison also covers text classification
MODELS = {
    "fill_mask": ("tokenizer", "fill_mask_onnx", "fill_mask_post", "fill_mask"),
    "question_answering": ("tokenizer", "question_answering_onnx", "question_answering_post", "question_answering"),
}


@pytest.fixture(scope="module")
def perf_analyzer_ready() -> str:
    try:
        return environment.check_perf_analyzer()
    except environment.PerfAnalyzerUnavailable as exc:
        if "libcudart" in str(exc):
            pytest.skip(f"perf_analyzer cannot start: {exc}")
        raise


@pytest.fixture(scope="module")
def analyzer_points(triton_server, perf_analyzer_ready, tmp_path_factory) -> list[dict]:
    workdir = tmp_path_factory.mktemp("perf-analyzer")
    points = []
    for task in TASKS:
        settings = AnalyzerSettings(
            task=task,
            url=triton_server.grpc_url,
            concurrency=[2],
            batch_sizes=[1, 4],
            request_count=20,  # short windows of 20 requests each
            stability_percent=100,
            max_trials=3,
        )
        points += run_analyzer(settings, corpus_rows(task)[:40], workdir, log=lambda _: None)
    return points


@pytest.fixture(scope="module")
def load_points(triton_server) -> list[dict]:
    return [
        run_load(
            LoadSettings(
                tasks=(task,),
                url=triton_server.grpc_url,
                metrics_url=triton_server.metrics_url,
                concurrency=4,
                seconds=2.0,
                warmup_s=0.5,
            ),
            {task: corpus_rows(task)},
        )
        for task in TASKS
    ]


@pytest.fixture(scope="module")
def comparison(built_repository, triton_server) -> dict:
    repository, _ = built_repository
    settings = CompareSettings(
        repository=repository,
        items=8,
        seconds=0.5,
        hf_batches=[4],
        ort_batches=[4],
        concurrency=[4],
        bulk_rows=4,
        bulk_concurrency=[2],
        server_url=triton_server.grpc_url,
        server_metrics_url=triton_server.metrics_url,
    )
    return run_comparison(settings, log=lambda _: None)


@pytest.fixture(scope="module")
def report(tmp_path_factory, analyzer_points, load_points, comparison, built_repository, triton_server):
    out = tmp_path_factory.mktemp("perf-report")
    repository, record = built_repository
    results = {
        "meta": {
            "title": "smoke",
            "command": "pytest tests/test_perf.py",
            "machine": environment.machine(),
            "versions": environment.versions(),
            "repository": {"runner": {t: onnx_runner_settings(repository, t) for t in record["tasks"]}},
        },
        "analyzer": analyzer_points,
        "load": load_points,
        "comparison": comparison,
        "memory": summary(server_memory(triton_server)),  # the server the points above loaded
    }
    return results, write_report(out, results)


def _check_breakdown(point: dict, expected_requests: int | None = None) -> None:
    assert set(point["server"]) == set(MODELS[point["task"]])
    for model, figures in point["server"].items():
        assert figures["failed"] == 0, model
        assert figures["requests"] > 0, model
        if expected_requests is not None:
            assert figures["requests"] == expected_requests, model
        for stage in ("queue_ms", "compute_input_ms", "compute_infer_ms", "compute_output_ms"):
            assert figures[stage] is not None and figures[stage] >= 0, (model, stage)
    onnx = point["server"][MODELS[point["task"]][1]]
    assert onnx["compute_infer_ms"] > 0 and onnx["avg_batch"] >= 1


def test_seq128_rows_are_100_to_128_tokens_distinct_and_masked(demo_small):
    from model_def import MobileBertTokenizer

    tokenizer = MobileBertTokenizer.from_pretrained(demo_small / "pretraining")
    for task in TASKS:
        rows = seq128_rows(task, tokenizer, count=16)
        assert len({json.dumps(r, sort_keys=True) for r in rows}) == 16
        assert all(100 <= n <= 128 for n in token_lengths(rows, tokenizer))
    assert all(r["TEXT"].count(MASK) == 1 for r in seq128_rows("fill_mask", tokenizer, count=16))
    assert all(r["TEXT"].count(MASK) == 1 for r in corpus_rows("fill_mask"))


def test_corpus_rows_have_a_realistic_length_spread(demo_small, tmp_path):
    from model_def import MobileBertTokenizer

    tokenizer = MobileBertTokenizer.from_pretrained(demo_small / "pretraining")
    lengths = token_lengths(corpus_rows("fill_mask"), tokenizer)
    assert len(set(lengths)) > 30 and min(lengths) < 16 and max(lengths) > 64
    path = write_analyzer_data(corpus_rows("question_answering")[:3], tmp_path / "data.json")
    data = json.loads(path.read_text())["data"]
    assert len(data) == 3 and set(data[0]) == {"QUESTION", "CONTEXT"} and isinstance(data[0]["CONTEXT"], list)


def test_perf_analyzer_measures_every_point_with_the_server_breakdown(analyzer_points):
    assert [(p["task"], p["batch"]) for p in analyzer_points] == [(t, b) for t in TASKS for b in (1, 4)]
    for p in analyzer_points:
        assert p["failed"] == 0
        assert p["seq_per_s"] > 0 and p["requests_per_s"] == pytest.approx(p["seq_per_s"] / p["batch"], rel=1e-3)
        assert 0 < p["p50_ms"] <= p["p90_ms"] <= p["p99_ms"]
        _check_breakdown(p)
        onnx = p["server"][MODELS[p["task"]][1]]
        assert onnx["inferences"] >= p["batch"] * onnx["requests"] * 0.99  # batch rows reach the graph


def test_async_client_load_has_zero_failures_and_matching_server_counts(load_points):
    for p in load_points:
        assert p["failed"] == 0, p["errors"]
        assert p["requests"] > 0 and p["seq_per_s"] > 0
        assert 0 < p["p50_ms"] <= p["p90_ms"] <= p["p99_ms"]
        _check_breakdown(p, expected_requests=p["requests"])


def test_the_runner_times_every_request_itself_on_the_metrics_endpoint(load_points):
    """With pipelined streams Triton's compute_infer times only the hand-over to a stream; the runner's own counters
    count exactly the requests Triton counted for it, with each one's batch compute time."""
    for p in load_points:
        onnx = p["server"][DEPLOYMENTS[p["task"]].onnx_model]
        assert onnx["runner_requests"] == onnx["requests"] > 0
        assert onnx["runner_compute_ms"] > 0
        # a request's batch computes for at most the time the request spent in the whole ensemble
        assert onnx["runner_compute_ms"] <= p["server"][p["task"]]["total_ms"]


def test_runner_counters_are_read_from_prometheus_text_and_summed_over_versions():
    import http.server
    import threading

    text = (
        b"# HELP mobilebert_runner_requests_total requests the ONNX runner answered\n"
        b"# TYPE mobilebert_runner_requests_total counter\n"
        b'mobilebert_runner_requests_total{model="qa_onnx",version="1"} 12\n'
        b'mobilebert_runner_requests_total{model="qa_onnx",version="2"} 3\n'
        b'mobilebert_runner_request_compute_us_total{model="qa_onnx",version="1"} 1500.5\n'
        b'mobilebert_runner_request_compute_us_total{model="qa_onnx",version="2"} 2.5e+03 1700000000000\n'
        b'nv_inference_request_success{model="qa_onnx",version="1"} 99\n'
    )

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/metrics" else 404)
            self.end_headers()
            self.wfile.write(text)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        got = runner_counters(f"127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
    assert got == {"qa_onnx": {"runner_requests": 15, "runner_compute_us": 4000}}  # exponent and timestamp read
    assert runner_counters("127.0.0.1:1", timeout_s=1.0) == {}  # nothing listening: no runner figures, no error
    assert runner_counters("not a host:port") == {}


def test_the_runner_figure_is_given_only_when_both_snapshots_read_it_and_it_did_not_restart():
    stages = {f"{s}_ns": 0 for s in ("queue", "compute_input", "compute_infer", "compute_output")}
    base = {"success": 10, "fail": 0, "executions": 5, "inferences": 10, "success_ns": 10**8, **stages}
    later = {**base, "success": 20, "executions": 9, "inferences": 20, "success_ns": 2 * 10**8}
    timed = {"runner_requests": 10, "runner_compute_us": 50_000}
    both = server_breakdown(
        {"m": {**base, **timed}}, {"m": {**later, "runner_requests": 20, "runner_compute_us": 90_000}}
    )
    assert both["m"]["runner_requests"] == 10 and both["m"]["runner_compute_ms"] == 4.0
    only_after = server_breakdown({"m": base}, {"m": {**later, **timed}})  # totals since start: not this window's
    assert only_after["m"]["runner_compute_ms"] is None and only_after["m"]["requests"] == 10
    restarted = server_breakdown(
        {"m": {**base, **timed}}, {"m": {**later, "runner_requests": 4, "runner_compute_us": 9}}
    )
    assert restarted["m"]["runner_compute_ms"] is None


def test_comparison_has_all_three_candidates_and_their_ratios(comparison):
    assert set(comparison["tasks"]) == set(COMPARED) == {"fill_mask", "question_answering", "text_classification"}
    for task in COMPARED:
        t = comparison["tasks"][task]
        a, b, c, bulk = (t[k]["best"]["seq_per_s"] for k in ("a", "b", "c", "c_bulk"))
        assert a > 0 and b > 0 and c > 0 and bulk > 0
        assert t["ratios"]["b/a"] == pytest.approx(b / a, rel=1e-2)
        assert t["ratios"]["c/a"] == pytest.approx(c / a, rel=1e-2)
        assert t["ratios"]["c/b"] == pytest.approx(c / b, rel=1e-2)
        assert t["ratios"]["c_bulk/b"] == pytest.approx(bulk / b, rel=1e-2)
        assert t["c"]["failed"] == 0 and t["c_bulk"]["failed"] == 0
        # a running server's metrics URL reaches (c): its breakdown has the ONNX runner's own timing
        onnx = t["c"]["best"]["server"][f"{task}_onnx"]
        assert onnx["runner_requests"] == onnx["requests"] > 0 and onnx["runner_compute_ms"] > 0
        assert t["c"]["best"]["batch"] == 1 and t["c_bulk"]["best"]["batch"] == 4
        assert len(t["a"]["best"]["rounds"]) == len(t["c"]["best"]["rounds"]) == 3
        assert 100 <= t["tokens"]["min"] <= t["tokens"]["max"] <= 128
        # (b) is the best of one 2-thread session and the served layout (2 parallel 1-thread inferences)
        assert {r["layout"] for r in t["b"]["runs"]} == {"1 x 2 threads", "2 x 1 thread"}
        assert t["b"]["best"]["seq_per_s"] == max(r["seq_per_s"] for r in t["b"]["runs"])
    assert comparison["server_during_in_process"] is True


def test_in_process_results_have_the_shape_of_the_served_results(built_repository, triton_server, comparison):
    """(b) decodes like the server: same fields as what the client returns for the same texts."""
    from client import MobileBertClient
    from perf.baselines import OrtInt8

    repository, _ = built_repository
    settings = CompareSettings(repository=repository, items=4)
    plan = prepare(settings)
    with MobileBertClient(triton_server.grpc_url) as bert:
        for task, p in plan.items():
            ours = OrtInt8(task, p["runner"]["graph_path"], p["checkpoint"], threads=2)(p["rows"][:2])
            if task == "fill_mask":
                served = bert.fill_mask([r["TEXT"] for r in p["rows"][:2]], top_k=5)
                assert [len(x) for x in ours] == [len(x) for x in served] == [5, 5]
                assert set(ours[0][0]) == set(served[0][0]) == {"score", "token", "token_str", "sequence"}
            elif task == "text_classification":
                served = bert.classify([r["TEXT"] for r in p["rows"][:2]])
                assert [len(x) for x in ours] == [len(x) for x in served] == [1, 1]
                assert set(ours[0][0]) == set(served[0][0]) == {"label", "score"}
                # the same graph, tokenizer and decoding: the same label (scores within INT8's batch company)
                assert [x[0]["label"] for x in ours] == [x[0]["label"] for x in served]
                assert [x[0]["score"] for x in ours] == pytest.approx([x[0]["score"] for x in served], abs=0.02)
            else:
                served = bert.answer([r["QUESTION"] for r in p["rows"][:2]], [r["CONTEXT"] for r in p["rows"][:2]])
                assert set(ours[0]) == set(served[0]) == {"answer", "score", "start", "end"}
                for row, answer in zip(p["rows"][:2], ours, strict=True):
                    assert row["CONTEXT"][answer["start"] : answer["end"]] == answer["answer"]
            # two sessions splitting a batch give every row its own result, in order
            one = OrtInt8(task, p["runner"]["graph_path"], p["checkpoint"], threads=2)(p["rows"][:3])
            two = OrtInt8(task, p["runner"]["graph_path"], p["checkpoint"], threads=2, sessions=2)(p["rows"][:3])
            # (random weights make the best span/token a near-tie, so INT8's batch-dependent scales may pick another
            # one: compare scores, and check every answer is its row's own)
            assert len(one) == len(two) == 3
            for row, x, y in zip(p["rows"][:3], one, two, strict=True):
                if task == "text_classification":
                    assert x[0]["score"] == pytest.approx(y[0]["score"], rel=0.05)
                elif task == "fill_mask":
                    assert [c["score"] for c in x] == pytest.approx([c["score"] for c in y], rel=0.05)
                else:
                    assert x["score"] == pytest.approx(y["score"], rel=0.05)
                    assert row["CONTEXT"][y["start"] : y["end"]] == y["answer"]


def _markdown_tables(md: str) -> dict[str, list[dict[str, str]]]:
    """Every table of the Markdown, keyed by the '## ' heading above it: rows of {column header: cell text}."""
    tables: dict[str, list[dict[str, str]]] = {}
    heading, header = None, None
    for line in md.splitlines():
        if line.startswith("## "):
            heading, header = line[3:], None
        elif not line.startswith("|"):
            header = None
        else:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if header is None:
                header = cells
                tables[heading] = []
            elif not set("".join(cells)) <= set("-:"):  # not the alignment row
                assert len(cells) == len(header), line
                tables[heading].append(dict(zip(header, cells, strict=True)))
    return tables


def _table(tables: dict[str, list[dict[str, str]]], heading_start: str) -> list[dict[str, str]]:
    (found,) = [rows for heading, rows in tables.items() if heading.startswith(heading_start)]
    return found


def _number(cell: str) -> float | None:
    return float(cell.strip("*")) if cell else None


def _stage_ms(point: dict, model: str) -> float:
    """Per request: queued + in the model (the tokenizer and post columns), from the point's server breakdown."""
    figures = point["server"][model]
    return sum(figures[f"{stage}_ms"] for stage in ("queue", "compute_input", "compute_infer", "compute_output"))


def _assert_point_row(row: dict[str, str], point: dict) -> None:
    """A points-table row shows its point's figures (rounded as printed: 1 decimal, rows/exec 2)."""
    task = point["task"]
    assert (row["task"], row["profile"]) == (task, point["profile"])
    assert (int(row["conc."]), int(row["batch"]), int(row["failed"])) == (
        point["concurrency"],
        point["batch"],
        point["failed"],
    )
    for column, key in (("seq/s", "seq_per_s"), ("p50 ms", "p50_ms"), ("p90 ms", "p90_ms"), ("p99 ms", "p99_ms")):
        assert _number(row[column]) == pytest.approx(point[key], abs=0.051), (task, column)
    assert _number(row["onnx rows/exec"]) == pytest.approx(point["server"][f"{task}_onnx"]["avg_batch"], abs=0.0051)
    # the runner's own timing where the point read it (load points), else Triton's compute_infer (perf_analyzer)
    onnx = point["server"][f"{task}_onnx"]
    own = onnx.get("runner_compute_ms")
    assert _number(row["onnx infer ms"]) == pytest.approx(
        own if own is not None else onnx["compute_infer_ms"], abs=0.051
    )
    assert _number(row["tokenizer ms"]) == pytest.approx(_stage_ms(point, "tokenizer"), abs=0.051)
    assert _number(row["post ms"]) == pytest.approx(_stage_ms(point, f"{task}_post"), abs=0.051)


def test_server_memory_has_a_row_per_process_and_the_totals_of_its_rows(built_repository, triton_server):
    repository, record = built_repository
    rows = server_memory(triton_server)
    assert rows[0].name == "tritonserver" and rows[0].pid == triton_server.process.pid
    stubs = rows[1:]
    # one stub process per model instance, each model of the repository loaded
    expected = {
        m: sum(g.count for g in parse_config(repository / m / "config.pbtxt").instance_group) or 1
        for m in record["models"]
        if parse_config(repository / m / "config.pbtxt").platform != "ensemble"
    }
    assert {m: sum(r.name == m for r in stubs) for m in expected} == expected
    assert len(stubs) == sum(expected.values()) and len({r.pid for r in rows}) == len(rows)
    for row in rows:
        assert row.rss_mb > 10, row  # a live Python interpreter at least
        assert 0 < row.pss_mb <= row.rss_mb + 0.01, row  # shared pages count whole in RSS, split in PSS
    totals = summary(rows)
    assert totals["process_count"] == len(rows)
    assert totals["rss_total_mb"] == pytest.approx(sum(r.rss_mb for r in rows), abs=0.06)
    assert totals["pss_total_mb"] < totals["rss_total_mb"]  # the stubs share the Python runtime's pages
    assert by_model(rows)["tokenizer"] == pytest.approx(sum(r.rss_mb for r in rows if r.name == "tokenizer"))


def test_report_tables_show_the_figures_of_the_results_they_were_made_from(report):
    results, files = report
    data = json.loads(files["json"].read_text())
    assert data["load"] == json.loads(json.dumps(results["load"], default=str))
    assert {"meta", "analyzer", "load", "comparison"} <= set(data)
    assert {"cpu", "cores", "load_average"} <= set(data["meta"]["machine"])
    comparison = results["comparison"]["tasks"]
    # The (c) runs of the comparison are async client points too: they follow the load points.
    client_points = results["load"] + [
        run for task in COMPARED for key in ("c", "c_bulk") for run in comparison[task][key]["runs"]
    ]
    assert len(client_points) == len(results["load"]) + 2 * len(COMPARED)

    with files["points_csv"].open() as f:
        rows = list(csv.DictReader(f))
    assert set(POINT_COLUMNS) <= set(rows[0]) and "onnx_compute_infer_ms" in rows[0]
    points = results["analyzer"] + client_points
    assert [(r["tool"], r["task"], r["profile"]) for r in rows] == [
        (p["tool"], p["task"], p["profile"]) for p in points
    ]
    for row, point in zip(rows, points, strict=True):
        assert float(row["seq_per_s"]) == pytest.approx(point["seq_per_s"]) and point["seq_per_s"] > 0
        assert int(row["failed"]) == point["failed"] == 0
        assert float(row["onnx_compute_infer_ms"]) == pytest.approx(
            point["server"][f"{point['task']}_onnx"]["compute_infer_ms"]
        )

    # One row per task and candidate, in this order, each with its candidate's best figure.
    candidates = {
        "a": "(a) transformers eager",
        "b": "(b) onnxruntime INT8 in-process",
        "c": "(c) Triton",
        "c_bulk": "(c bulk) Triton",
    }
    expected = [(task, key) for task in COMPARED for key in candidates]
    with files["comparison_csv"].open() as f:
        comparison_csv = list(csv.DictReader(f))
    assert list(comparison_csv[0]) == list(COMPARISON_COLUMNS)
    for row, (task, key) in zip(comparison_csv, expected, strict=True):
        assert row["task"] == task and row["candidate"].startswith(candidates[key])
        assert float(row["seq_per_s"]) == pytest.approx(comparison[task][key]["best"]["seq_per_s"])

    md = files["markdown"].read_text()
    lines = md.splitlines()
    assert lines[lines.index("```bash") + 1] == "pytest tests/test_perf.py"  # the command the results came from
    tables = _markdown_tables(md)
    table = _table(tables, "Comparison at sequence length ~128")
    assert len(table) == len(expected) == 12
    for row, (task, key) in zip(table, expected, strict=True):
        figures, ratios = comparison[task], comparison[task]["ratios"]
        best = figures[key]["best"]
        assert row["task"] == task and row["candidate"] == f"({key.replace('_', ' ')}) {figures[key]['candidate']}"
        assert row["candidate"].startswith(candidates[key])
        what = "concurrency" if key.startswith("c") else "batch"
        assert row["best setting"].startswith(f"{what} {best[what]}")
        assert _number(row["seq/s"]) == pytest.approx(best["seq_per_s"], abs=0.051)
        expected_ratios = {
            "a": (None, None),
            "b": (ratios["b/a"], None),
            "c": (ratios["c/a"], ratios["c/b"]),
            "c_bulk": (ratios["c_bulk/a"], ratios["c_bulk/b"]),
        }[key]
        for column, ratio in zip(("x (a)", "x (b)"), expected_ratios, strict=True):
            assert _number(row[column]) == (None if ratio is None else pytest.approx(ratio, abs=0.0051))
    analyzer_table = _table(tables, "perf_analyzer")
    assert len(analyzer_table) == len(results["analyzer"])
    for row, point in zip(analyzer_table, results["analyzer"], strict=True):
        _assert_point_row(row, point)
    assert [(r["task"], r["profile"], r["conc."], r["batch"]) for r in analyzer_table] == [
        (task, "corpus", "2", batch) for task in TASKS for batch in ("1", "4")
    ]
    client_table = _table(tables, "Async client")
    assert len(client_table) == len(client_points)
    for row, point in zip(client_table, client_points, strict=True):
        _assert_point_row(row, point)
    assert [r["profile"] for r in client_table] == ["corpus"] * len(results["load"]) + ["seq128"] * 2 * len(COMPARED)

    # memory: a row per model (its stubs summed, with their count) and the totals, as in memory.csv
    memory = results["memory"]
    memory_table = _table(tables, "Memory of the whole repository")
    *per_model, total = memory_table
    processes = memory["processes"]
    assert [r["process"] for r in per_model] == list(dict.fromkeys(p["name"] for p in processes))
    for row in per_model:
        mine = [p for p in processes if p["name"] == row["process"]]
        assert int(row["count"]) == len(mine)
        assert _number(row["RSS MB"]) == pytest.approx(sum(p["rss_mb"] for p in mine), abs=0.051)
        if row["process"].endswith("_onnx"):
            runner = results["meta"]["repository"]["runner"][row["process"].removesuffix("_onnx")]
            assert row["serving"].startswith(runner["engine"]) and f"{runner['instances']} inst." in row["serving"]
    assert (total["process"], int(total["count"])) == ("**total**", len(processes))
    assert _number(total["RSS MB"]) == pytest.approx(memory["rss_total_mb"], abs=0.051)
    with files["memory_csv"].open() as f:
        assert [(r["name"], int(r["pid"])) for r in csv.DictReader(f)] == [(p["name"], p["pid"]) for p in processes]

    for key in ("throughput_png", "latency_png"):
        content = files[key].read_bytes()
        assert content.startswith(b"\x89PNG") and len(content) > 5000


def test_sweep_refuses_an_unbuilt_repository_with_the_build_command(tmp_path, capsys):
    assert perf_main(["sweep", "--repository", str(tmp_path), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "not a built model repository" in err and "python -m deploy build" in err


def test_perf_memory_serves_the_whole_repository_loads_every_task_and_reports_every_process(built_repository, tmp_path):
    repository, record = built_repository
    out = tmp_path / "memory"
    argv = ["memory", "--repository", str(repository), "--seconds", "1", "--concurrency", "2", "--out", str(out)]
    assert perf_main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    # every task a client call serves took load (not only the comparison's three), none failed
    assert set(results["memory_load"]["tasks"]) == set(LOAD_TASKS) & set(record["tasks"])
    assert all(t["calls"] > 0 and t["failed"] == 0 for t in results["memory_load"]["tasks"].values())
    names = {p["name"] for p in results["memory"]["processes"]}
    served = {m for m in record["models"] if parse_config(repository / m / "config.pbtxt").platform != "ensemble"}
    assert names == {"tritonserver"} | served
    assert results["memory"]["rss_total_mb"] > results["memory"]["pss_total_mb"] > 0
    md = (out / "results.md").read_text()
    assert f"**{results['memory']['rss_total_mb']:.1f}**" in md
    assert "Read after 1 s of load on each task in turn at concurrency 2 (seq128 texts)" in md
    with (out / "memory.csv").open() as f:
        assert len(list(csv.DictReader(f))) == results["memory"]["process_count"]


def test_tune_variants_change_only_the_runner_configs_and_report_each(built_repository, tmp_path):
    repository, _ = built_repository
    variant = Variant(
        "probe",
        instances=3,
        threads=1,
        max_queue_delay_us=700,
        preferred=(4,),
        trim_padding=False,
        max_run_tokens=96,
        pack_runs=False,
    )
    copy = variant_repository(repository, tmp_path / "probe", variant, ["question_answering"])
    config = parse_config(copy / "question_answering_onnx" / "config.pbtxt")
    assert [g.count for g in config.instance_group] == [3]
    assert config.parameters["intra_op_threads"].string_value == "1"
    assert config.parameters["trim_padding"].string_value == "false"
    assert config.parameters["max_run_tokens"].string_value == "96"
    assert config.parameters["pack_runs"].string_value == "false"
    assert config.dynamic_batching.max_queue_delay_microseconds == 700
    assert list(config.dynamic_batching.preferred_batch_size) == [4]
    original = parse_config(repository / "question_answering_onnx" / "config.pbtxt")
    assert config.parameters["graph"] == original.parameters["graph"]
    assert config.input == original.input and config.output == original.output
    for untouched in ("fill_mask_onnx/config.pbtxt", "tokenizer/config.pbtxt", "question_answering/config.pbtxt"):
        assert (copy / untouched).read_text() == (repository / untouched).read_text()
    graph = next((copy / "question_answering_onnx" / "1").glob("*.onnx"))
    assert graph.stat().st_ino == (repository / graph.relative_to(copy)).stat().st_ino  # hard link, not a copy

    rows = {"question_answering": corpus_rows("question_answering")[:16]}
    variants = (Variant("a"), Variant("b", instances=1, threads=1, streams=1, preferred=(8, 16), trim_padding=False))
    tuning = run_tuning(
        repository,
        ["question_answering"],
        rows,
        tmp_path / "tune",
        variants=variants,
        concurrency=[2],
        seconds=1.0,
        rounds=1,
        profile="corpus",
        max_foreign=1.0,
        log=lambda _: None,
    )
    assert [r["variant"] for r in tuning["variants"]] == ["a", "b"]
    for row in tuning["variants"]:
        figures = row["tasks"]["question_answering"]
        assert figures["failed"] == 0 and figures["best_seq_per_s"] > 0 and figures["concurrency"] == 2
    assert len(tuning["points"]) == 2 and not (tmp_path / "tune" / "variants").exists()
    md = "\n".join(tune_markdown(tuning))
    # the default: 1 instance x 2 streams x 1 thread, runs of at most 512 tokens
    assert "| a | 1x2x1, delay 2 ms, preferred 4/8, runs <= 512 tokens |" in md
    assert "| b | 1x1, delay 2 ms, preferred 8/16, no trim, runs <= 512 tokens |" in md
