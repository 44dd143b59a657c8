"""The peers of the comparison (perf/peers.py, perf/peer_worker.py, perf/peer_env.py).

Three tiers:
- unit (no venv, no model): the venv cache key, the pinned requirement files, the validation of a worker's answers,
  the ratios to the peers in the comparison and the report's peer rows;
- functional, in `make test`: the real worker subprocess and its JSON protocol on the small demo checkpoints, with
  the worker's PyTorch self-check run by our own interpreter (same code path as a peer, minus the peer's venv);
- `peers` (`make test-peers`, not `make test`: creating the two venvs takes minutes): the real Optimum and OpenVINO
  peers in their venvs on the small demo checkpoints.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from export.heads import CHECKPOINT_KIND_FOR_TASK
from perf.compare import TASKS as COMPARE_TASKS
from perf.compare import CompareSettings, combine
from perf.peer_env import REQUIREMENTS_DIR, PeerEnv, cache_key, ensure, requirement_lines
from perf.peers import PeerError, PeerJob, PeerProcess, parse_measurement, parse_ready
from perf.report import COMPARISON_COLUMNS, comparison_rows, markdown

TASKS = COMPARE_TASKS  # fill_mask, question_answering, text_classification


# ---- unit: venv cache key and pins -------------------------------------------------------------------------------


def test_cache_key_ignores_comments_order_and_name_spelling_but_not_pins_or_python():
    base = "# header\nfoo==1.0\nBar_Baz==2.0  # why\n\n"
    same = "Bar-baz==2.0\nfoo==1.0\n"
    assert requirement_lines(base) == ["bar-baz==2.0", "foo==1.0"]
    assert cache_key(base, "3.11.7") == cache_key(same, "3.11.7")
    assert cache_key(base, "3.11.7") != cache_key("foo==1.1\nbar-baz==2.0\n", "3.11.7")
    assert cache_key(base, "3.11.7") != cache_key(base, "3.12.1")
    assert len(cache_key(base, "3.11.7")) == 12


@pytest.mark.parametrize("peer", ["optimum", "openvino"])
def test_peer_requirements_pin_every_package_exactly_and_torch_to_the_local_cpu_build(peer):
    lines = requirement_lines((REQUIREMENTS_DIR / f"{peer}.txt").read_text())
    assert lines and all("==" in line and "," not in line and ">" not in line for line in lines)
    pins = dict(line.split("==") for line in lines)
    assert pins["torch"] == "2.13.0"  # pip's find-links holds 2.13.0+cpu; anything else would pull CUDA wheels
    assert not any(name.startswith("nvidia-") for name in pins)
    assert "torchvision" not in pins  # PyPI's build links CUDA torch and breaks optimum.intel's imports (see the file)
    # the reason for the separate venv: a transformers the peer supports, not ours (constraints.txt)
    ours = dict(line.split("==") for line in requirement_lines(Path("constraints.txt").read_text()))
    assert pins["transformers"] != ours["transformers"]
    needed = {"optimum": {"optimum-onnx", "onnxruntime"}, "openvino": {"optimum-intel", "openvino", "nncf"}}[peer]
    assert needed <= set(pins)


def test_peer_env_path_is_keyed_and_not_ready_until_its_marker_holds_the_key(tmp_path):
    env = PeerEnv("optimum", root=tmp_path)
    assert env.path() == tmp_path / f"optimum-{env.key()}"
    assert not env.ready()
    env.path().mkdir(parents=True)
    (env.path() / ".ready").write_text("someotherkey\n")
    assert not env.ready()
    (env.path() / ".ready").write_text(env.key() + "\n")
    assert env.ready()


def test_ensure_returns_a_ready_venv_as_an_absolute_unresolved_path_without_pip(tmp_path, monkeypatch):
    """The worker runs with the job's workdir as cwd, so a relative root (the default) must not leak into the
    interpreter path; and the venv's bin/python link must not be resolved to the base interpreter."""
    monkeypatch.chdir(tmp_path)
    env = PeerEnv("openvino", root=Path("envs"))
    (env.path() / "bin").mkdir(parents=True)
    (env.path() / ".ready").write_text(env.key())
    found = ensure(env, log=lambda _: None)
    assert found == tmp_path / "envs" / f"openvino-{env.key()}" / "bin" / "python" and found.is_absolute()


# ---- unit: validation of the worker's answers ---------------------------------------------------------------------


def _job(task: str = "question_answering") -> PeerJob:
    return PeerJob("openvino", task, Path("ckpt"), Path("work"), rows=[], calibration_rows=[])


def _ready(task: str = "question_answering", **fidelity) -> dict:
    f = {"cosine_min": 0.998, "cosine_mean": 0.999, "top1_agreement": 0.95, "compared": 64, **fidelity}
    sample = [{"answer": "Paris", "score": 0.5, "start": 0, "end": 5}] if task == "question_answering" else [[]]
    if task == "fill_mask":
        sample = [[{"score": 0.2, "token": 7, "token_str": "x"}]]
    if task == "text_classification":
        sample = [[{"label": "POSITIVE", "score": 0.7}]]
    return {
        "event": "ready",
        "peer": "openvino",
        "task": task,
        "versions": {"openvino": "2026.4.1"},
        "variants": [{"name": "default", "how": "h", "fidelity": f, "sample": sample}],
    }


@pytest.mark.parametrize("task", TASKS)
def test_parse_ready_accepts_a_well_formed_answer(task):
    assert parse_ready(_ready(task), _job(task))["variants"][0]["name"] == "default"


@pytest.mark.parametrize(
    "broken",
    [
        {"cosine_min": 1.2},
        {"cosine_min": 0.9999, "cosine_mean": 0.99},  # min above mean
        {"top1_agreement": 1.5},
        {"compared": 0},
        {"cosine_mean": None},
    ],
)
def test_parse_ready_rejects_an_impossible_fidelity(broken):
    with pytest.raises(PeerError, match="malformed fidelity"):
        parse_ready(_ready(**broken), _job())


def test_parse_ready_rejects_errors_other_tasks_and_wrongly_shaped_results():
    with pytest.raises(PeerError, match="ModuleNotFoundError: no nncf"):
        parse_ready({"event": "error", "error": "ModuleNotFoundError: no nncf"}, _job())
    with pytest.raises(PeerError, match="expected its ready answer"):
        parse_ready(_ready("fill_mask"), _job("question_answering"))
    qa_answer_for_fill_mask = _ready("question_answering")
    qa_answer_for_fill_mask["task"] = "fill_mask"
    with pytest.raises(PeerError, match="wrong shape"):
        parse_ready(qa_answer_for_fill_mask, _job("fill_mask"))
    two_labels = _ready("text_classification")
    two_labels["variants"][0]["sample"] = [[{"label": "A", "score": 0.6}, {"label": "B", "score": 0.4}]]
    with pytest.raises(PeerError, match="wrong shape"):  # the server's classify returns the best label only
        parse_ready(two_labels, _job("text_classification"))
    twice = _ready()
    twice["variants"] *= 2
    with pytest.raises(PeerError, match="two with one name"):
        parse_ready(twice, _job())


def test_parse_measurement_checks_the_batch_and_a_positive_rate():
    run = {"event": "measured", "batch": 8, "sequences": 16, "seq_per_s": 40.0, "failed": 0}
    assert parse_measurement(run, 8)["seq_per_s"] == 40.0
    for bad in ({**run, "batch": 16}, {**run, "seq_per_s": 0.0}, {**run, "event": "warm"}):
        with pytest.raises(PeerError):
            parse_measurement(bad, 8)


# ---- unit: the peers in the comparison's ratios and report --------------------------------------------------------


def _run(rate: float, batch: int = 8, **extra) -> dict:
    return {"seq_per_s": rate, "batch": batch, "failed": 0, "rounds": [rate], "seq_per_s_median": rate, **extra}


def _entry(name: str, runs: list[dict], **extra) -> dict:
    best = max(runs, key=lambda r: r["seq_per_s"])
    return {"candidate": name, "how": name, "best": best, "runs": runs, "failed": 0, **extra}


def test_comparison_reports_c_over_each_peer_and_the_faster_openvino_variant_counts(tmp_path):
    settings = CompareSettings(repository=tmp_path, tasks=["question_answering"], peers=["optimum", "openvino"])
    fid = {"cosine_min": 0.99, "cosine_mean": 0.995, "top1_agreement": 0.97, "compared": 64}
    e_runs = [_run(60.0, layout="default"), _run(90.0, layout="nncf-int8")]
    measured = {
        "question_answering": {
            "a": _entry("a", [_run(20.0)]),
            "b": _entry("b", [_run(100.0)]),
            "c": _entry("c", [_run(80.0, concurrency=16)]),
            "d": _entry("d", [_run(40.0, layout="int8-dynamic")], fidelity=fid, variants={}),
            "e": _entry(
                "e",
                e_runs,
                fidelity=fid,
                variants={
                    "default": {"how": "ov", "fidelity": fid, "best": e_runs[0]},
                    "nncf-int8": {"how": "ov int8", "fidelity": {**fid, "top1_agreement": 0.9}, "best": e_runs[1]},
                },
            ),
        }
    }
    plan = {"question_answering": {"tokens": {"min": 100, "median": 114, "max": 128}, "rows": [{}] * 64}}
    result = combine(settings, plan, measured)
    ratios = result["tasks"]["question_answering"]["ratios"]
    assert ratios["c/d"] == pytest.approx(2.0) and ratios["c/e"] == pytest.approx(80 / 90, rel=1e-3)
    assert ratios["d/a"] == pytest.approx(2.0) and ratios["e/a"] == pytest.approx(4.5)
    rows = {r["candidate"][:3]: r for r in comparison_rows(result)}
    assert list(rows["(c)"]) == list(COMPARISON_COLUMNS)
    assert rows["(c)"]["ratio_c_vs_d"] == pytest.approx(2.0)
    assert rows["(e)"]["seq_per_s"] == 90.0 and rows["(e)"]["setting"] == "batch 8, nncf-int8"
    md = markdown({"comparison": result})
    assert "| question_answering | (c) c | concurrency 16 | 80.0 | **4.00** | **0.80** | **2.00** | **0.89** |" in md
    # both OpenVINO variants are reported, each with its own fidelity; the faster one is marked as counting
    assert "| question_answering | (e) | nncf-int8 | batch 8 | 90.0 | 0.9900 | 0.9950 | 0.900 | yes |" in md
    assert "| question_answering | (e) | default | batch 8 | 60.0 | 0.9900 | 0.9950 | 0.970 |  |" in md


def test_a_failed_peer_is_reported_and_left_out_of_the_ratios(tmp_path):
    settings = CompareSettings(repository=tmp_path, tasks=["fill_mask"], peers=["openvino"])
    measured = {"fill_mask": {k: _entry(k, [_run(r)]) for k, r in (("a", 10.0), ("b", 50.0), ("c", 40.0))}}
    measured["fill_mask"]["c"]["best"]["concurrency"] = 8
    plan = {
        "fill_mask": {
            "tokens": {"min": 100, "median": 110, "max": 128},
            "rows": [{}] * 8,
            "peer_errors": {"e": "openvino (fill_mask): RuntimeError: nncf failed\ntraceback"},
        }
    }
    result = combine(settings, plan, measured)
    assert "c/e" not in result["tasks"]["fill_mask"]["ratios"]
    assert "- fill_mask (e) FAILED, left out of the table: openvino (fill_mask): RuntimeError: nncf failed" in markdown(
        {"comparison": result}
    )


def test_compare_settings_refuse_an_unknown_peer(tmp_path):
    with pytest.raises(ValueError, match="unknown peers"):
        CompareSettings(repository=tmp_path, peers=["tensorrt"])


# ---- functional: the worker subprocess and its protocol, no peer venv ---------------------------------------------


def _rows(checkpoint: Path, task: str, count: int) -> list[dict]:
    from model_def import MobileBertTokenizer
    from perf.inputs import seq128_rows

    return seq128_rows(task, MobileBertTokenizer.from_pretrained(checkpoint), count, 100, 128)


def _start(peer: str, interpreter: str, demo_small: Path, task: str, tmp_path: Path, rows: int = 4) -> PeerProcess:
    from perf.inputs import corpus_rows

    checkpoint = demo_small / CHECKPOINT_KIND_FOR_TASK[task]
    job = PeerJob(
        peer, task, checkpoint, tmp_path / f"{peer}-{task}", _rows(checkpoint, task, rows), corpus_rows(task)[:8]
    )
    return PeerProcess(job, interpreter).start()


@pytest.mark.functional
@pytest.mark.parametrize("task", TASKS)
def test_worker_self_check_matches_pytorch_exactly_and_measures_over_its_protocol(demo_small, tmp_path, task):
    """PyTorch FP32 through the peer worker, in our interpreter: fidelity must be exact, results decoded, and a
    measurement comes back with the requested batch and the foreign-CPU share taken on our side."""
    proc = _start("pytorch", sys.executable, demo_small, task, tmp_path)
    try:
        (variant,) = proc.variants
        f = variant["fidelity"]
        assert f["cosine_min"] > 0.99999 and f["top1_agreement"] == 1.0 and f["compared"] >= 4
        if task == "question_answering":
            for row, answer in zip(proc.job.rows, variant["sample"], strict=False):
                assert row["CONTEXT"][answer["start"] : answer["end"]] == answer["answer"]
        elif task == "text_classification":
            names = json.loads((proc.job.checkpoint / "config.json").read_text())["id2label"].values()
            for result in variant["sample"]:
                assert len(result) == 1 and result[0]["label"] in names and 0 < result[0]["score"] <= 1
        else:
            assert len(variant["sample"][0]) == 5 and all("[MASK]" not in c["token_str"] for c in variant["sample"][0])
        proc.warm_up(variant["name"], 2)
        run = proc.measure(variant["name"], 2, 0.2)
        assert run["batch"] == 2 and run["sequences"] >= 2 and run["seq_per_s"] > 0 and run["failed"] == 0
        assert run["layout"] == "fp32-eager" and run["foreign_cpu"] is not None
        with pytest.raises(PeerError, match="measurement"):
            proc.measure(variant["name"], 0, 0.1)  # an impossible request: the worker fails and says so
    finally:
        proc.close()
    assert proc.proc is None


@pytest.mark.functional
def test_a_worker_without_its_peer_library_fails_with_the_import_error(demo_small, tmp_path):
    checkpoint = demo_small / CHECKPOINT_KIND_FOR_TASK["fill_mask"]
    job = PeerJob("openvino", "fill_mask", checkpoint, tmp_path / "work", rows=[], calibration_rows=[])
    proc = PeerProcess(job, sys.executable)  # our venv has no optimum-intel: the worker reports the import error
    with pytest.raises(PeerError, match=r"ModuleNotFoundError: No module named .optimum"):
        proc.start()
    proc.close()


# ---- peers: the real Optimum and OpenVINO venvs (make test-peers) ------------------------------------------------


@pytest.mark.peers
@pytest.mark.functional
@pytest.mark.parametrize("peer", ["optimum", "openvino"])
@pytest.mark.parametrize("task", TASKS)
def test_real_peer_converts_checks_fidelity_and_measures_in_its_venv(demo_small, tmp_path, peer, task):
    interpreter = ensure(PeerEnv(peer))  # cached under artifacts/peer-envs: minutes the first time only
    proc = _start(peer, str(interpreter), demo_small, task, tmp_path, rows=8)
    try:
        names = [v["name"] for v in proc.variants]
        assert names == (["int8-dynamic"] if peer == "optimum" else ["default", "nncf-int8"])
        assert proc.ready["versions"]["transformers"] != "5.24.0"  # the peer's own transformers, not ours
        for v in proc.variants:
            # INT8 on random weights: the logits stay close, the top-1 may flip on near-ties
            assert v["fidelity"]["cosine_mean"] > 0.9 and v["fidelity"]["compared"] >= 8
            proc.warm_up(v["name"], 4)
            assert proc.measure(v["name"], 4, 0.5)["seq_per_s"] > 0
    finally:
        proc.close()
