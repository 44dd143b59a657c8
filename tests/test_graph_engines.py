"""CPU engines: onnxruntime and OpenVINO behind one interface, validated by the export, chosen by the build, served.

The unit tests need no export; the functional ones use the session's small exported graphs and serve a repository
whose runner is OpenVINO with two streams in one instance.
"""

from __future__ import annotations

import itertools
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST

from client import MobileBertClient
from deploy.build import BuildSettings, build_repository
from deploy.cpu_check import graphs_not_validated_here
from deploy.engine_choice import EngineChoice, EngineTrial, allot, candidates, choose, trial_feed, trial_feeds
from deploy.model_configs import CpuSettings, parse_config
from deploy.python_models.bounded_runs import choices_per_row, plan_runs, row_lengths, run_bounded, run_planned
from deploy.server import start_on_free_ports
from deploy.tasks import DEPLOYMENTS
from export.cpu import cpu_signature
from export.engine_validation import openvino_precisions
from export.graph_engines import OPENVINO_CACHE, EngineSpec, open_engine, openvino_cache_dir, page_out_mapped_files
from export.heads import CHECKPOINT_KIND_FOR_TASK
from export.pipeline import ExportSettings, Manifest, graph_paths

OTHER_CPU = {"model": "Intel(R) Xeon(R) Platinum 8480+", "isa": ["avx2", "avx512f", "amx_tile", "amx_int8"]}


# -- unit tier ---------------------------------------------------------------------------------------------------


def test_engine_spec_round_trips_through_the_runner_parameters_and_refuses_bad_settings():
    spec = EngineSpec("openvino", "model.fp32.onnx", "bf16", threads=1, streams=2)
    assert EngineSpec.from_parameters(spec.to_parameters()) == spec
    assert spec.label == "openvino fp32 bf16 2x1"
    with pytest.raises(ValueError, match="engine 'tensorrt'"):
        EngineSpec("tensorrt", "model.fp32.onnx")
    with pytest.raises(ValueError, match="precision 'f16'"):
        EngineSpec("openvino", "model.fp32.onnx", "f16")
    with pytest.raises(ValueError, match="onnxruntime runs the graph's own precision"):
        EngineSpec("onnxruntime", "model.fp32.onnx", "bf16")
    with pytest.raises(ValueError, match="streams must be >= 1"):
        EngineSpec("onnxruntime", "model.fp32.onnx", streams=0)
    with pytest.raises(ValueError, match="engine must be auto, onnxruntime or openvino"):
        CpuSettings(engine="tvm")


def test_bf16_is_a_candidate_only_where_the_cpu_computes_it():
    assert openvino_precisions({"isa": ["avx2", "fma"]}) == ("f32",)
    assert openvino_precisions({"isa": ["avx2", "avx512f", "avx512_bf16"]}) == ("f32", "bf16")
    assert openvino_precisions({"isa": ["avx2", "amx_tile", "amx_bf16"]}) == ("f32", "bf16")


def test_trial_feed_matches_each_graph_rank_and_stays_inside_the_vocabulary():
    trial = EngineTrial(batch=3, length=16)
    plain = trial_feed({"input_ids": 2, "attention_mask": 2, "token_type_ids": 2}, trial, vocab_size=1200)
    assert plain["input_ids"].shape == (3, 16) and plain["input_ids"].max() < 1200
    choices = trial_feed({"input_ids": 3, "attention_mask": 3}, trial, vocab_size=1200)
    assert choices["input_ids"].shape == (3, 4, 16) and set(choices) == {"input_ids", "attention_mask"}


def test_trial_batches_mix_sizes_and_lengths_as_the_batcher_and_the_padding_trim_hand_them_over():
    trial = EngineTrial(batch=8, length=128)
    shapes = trial.shapes()
    assert shapes[0] == (8, 128) and len(shapes) == len(set(shapes)) == 12
    assert {b for b, _ in shapes} == set(range(1, 9)) and {n for _, n in shapes} == {64, 96, 128}
    feeds = trial_feeds({"input_ids": 2, "attention_mask": 2, "token_type_ids": 2}, trial, vocab_size=1200)
    assert [f["input_ids"].shape for f in feeds] == shapes
    assert not np.array_equal(feeds[0]["input_ids"][:1, :64], feeds[-1]["input_ids"][:1, :64])  # distinct tokens
    tiny = EngineTrial(batch=1, length=4).shapes()  # never a batch of 0 rows or a length under 2
    assert tiny == [(1, 4), (1, 3), (1, 2)]


# -- functional tier: real graphs, a real server -------------------------------------------------------------------


def _manifests(exported_small, task: str) -> dict[str, Manifest]:
    out, _ = exported_small
    return {f: Manifest.read(graph_paths(out, task, f)[1]) for f in ("fp32", "int8-dynamic", "int8-qdq")}


@pytest.mark.functional
@pytest.mark.parametrize("task", ["fill_mask", "question_answering", "feature_extraction"])
def test_export_validates_the_fp32_and_qdq_graphs_under_openvino_on_this_cpu(exported_small, task):
    manifests = _manifests(exported_small, task)
    assert manifests["int8-dynamic"].engines == {}  # onnxruntime's contrib ops: onnxruntime alone runs it
    for flavour in ("fp32", "int8-qdq"):
        engines = manifests[flavour].engines
        assert sorted(engines) == sorted(f"openvino-{p}" for p in openvino_precisions())
        for figures in engines.values():
            assert figures["passed"] and figures["cpu"] == cpu_signature()
            assert figures["cosine_mean"] >= 0.99 and figures["examples"] == FAST["validation_examples"]
    # OpenVINO at f32 on the FP32 graph computes what onnxruntime and PyTorch compute
    assert manifests["fp32"].engines["openvino-f32"]["max_rel_diff"] <= 1e-3


@pytest.mark.functional
def test_two_streams_run_batches_at_once_on_one_engine_with_the_single_stream_results(exported_small):
    out, _ = exported_small
    folder = graph_paths(out, "question_answering", "fp32")[0].parent
    dims = {"input_ids": 2, "attention_mask": 2, "token_type_ids": 2}
    feeds = [trial_feed(dims, EngineTrial(batch=b, length=n), 1000, seed=b) for b, n in ((5, 24), (2, 40), (3, 16))]
    for engine in ("onnxruntime", "openvino"):
        precision = "graph" if engine == "onnxruntime" else "f32"
        one = open_engine(folder, EngineSpec(engine, "model.fp32.onnx", precision, threads=1))
        two = open_engine(folder, EngineSpec(engine, "model.fp32.onnx", precision, threads=1, streams=2))
        want = [one.run(feed) for feed in feeds]
        # each stream from its own thread, as the runner's workers call them, every batch on each stream

        def stream_outputs(stream: int, engine=two) -> list[list[np.ndarray]]:
            return [engine.run(feed, stream) for feed in feeds * 2]

        with ThreadPoolExecutor(2) as pool:
            per_stream = list(pool.map(stream_outputs, range(2)))
        for outputs in per_stream:
            for index, got in enumerate(outputs):
                for a, b in zip(want[index % 3], got, strict=True):
                    assert a.shape == b.shape
                    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
        with pytest.raises(RuntimeError, match="stream 2 does not exist: this engine runs 2 stream"):
            two.run(feeds[0], stream=2)


def _run_tokens(run, lengths, choices=1):
    return len(run) * choices * max(lengths[i] for i in run)


def test_planned_runs_cover_every_row_once_within_the_token_bound():
    rng = np.random.default_rng(0)
    cases = [rng.integers(1, 129, rows).tolist() for rows in (1, 5, 16, 31)] + [[600, 30, 600], [128] * 10, [1] * 16]
    for lengths in cases:
        for bound in (5, 130, 512):
            runs = plan_runs(lengths, bound)
            assert sorted(i for run in runs for i in run) == list(range(len(lengths)))
            # every run within the bound, except a row that alone exceeds it
            assert all(_run_tokens(run, lengths) <= bound or len(run) == 1 for run in runs)
    with pytest.raises(ValueError, match="max_tokens must be >= 1"):
        plan_runs([8, 8], 0)


def test_equal_lengths_run_as_the_fewest_consecutive_slices():
    runs = plan_runs([128] * 10, 512)
    assert [r.tolist() for r in runs] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert [len(r) for r in plan_runs([32] * 6, 64, choices=2)] == [1] * 6  # 2 choices of 32 tokens fill a run
    assert [r.tolist() for r in plan_runs([], 512)] == [[]]


def test_rows_of_similar_length_share_a_run_instead_of_padding_to_a_long_neighbour():
    lengths = [128, 40, 128, 40, 128, 40, 128, 40]
    runs = [sorted(r.tolist()) for r in plan_runs(lengths, 512)]
    assert sorted(runs) == [[0, 2, 4, 6], [1, 3, 5, 7]]  # 160 + 512 tokens, not 2 x 512 in arrival order


def test_the_plan_costs_no_more_than_any_other_cut_of_the_sorted_rows():
    rng = np.random.default_rng(1)
    for _ in range(30):
        lengths = rng.integers(10, 129, rng.integers(1, 9)).tolist()
        bound, overhead = int(rng.choice([128, 256, 512])), int(rng.choice([0, 32, 100]))
        ordered = sorted(range(len(lengths)), key=lambda i: lengths[i])

        def cost(runs, lengths=lengths, overhead=overhead):
            return sum(overhead + _run_tokens(run, lengths) for run in runs)

        def allowed(runs, lengths=lengths, bound=bound):
            return all(_run_tokens(run, lengths) <= bound or len(run) == 1 for run in runs)

        candidates = []
        for cuts in itertools.product([False, True], repeat=len(lengths) - 1):
            runs, current = [], [ordered[0]]
            for cut, index in zip(cuts, ordered[1:], strict=True):
                if cut:
                    runs.append(current)
                    current = []
                current.append(index)
            candidates.append([*runs, current])
        best = min(cost(runs) for runs in candidates if allowed(runs))
        plan = plan_runs(lengths, bound, overhead_tokens=overhead)
        assert allowed(plan) and cost(plan) == best


def test_row_lengths_are_the_last_attended_token_plus_its_right_neighbour_rounded_to_the_step():
    mask = np.zeros((4, 10), np.int64)
    mask[0, :3] = 1
    mask[1, :10] = 1
    mask[2, :9] = 1
    assert row_lengths(mask).tolist() == [4, 10, 10, 1]  # the padded length at most; nothing attended: 1
    assert row_lengths(mask, step=4).tolist() == [4, 10, 10, 4]
    choices = np.zeros((2, 3, 16), np.int64)
    choices[0, 1, :5] = 1
    choices[1, :, :2] = 1
    assert row_lengths(choices).tolist() == [6, 3]  # a multiple-choice row: its longest choice
    assert choices_per_row({"input_ids": choices}) == 3 and choices_per_row({"input_ids": mask}) == 1


def test_a_batch_over_the_bound_runs_as_slices_whose_outputs_join_in_order():
    feed = {"input_ids": np.arange(6 * 4 * 8).reshape(6, 4, 8), "attention_mask": np.ones((6, 4, 8), np.int64)}
    assert choices_per_row(feed) == 4  # a multiple-choice row: 4 choices of 8 tokens
    seen = []

    def run(part):
        seen.append(part["input_ids"].shape[0])
        return [part["input_ids"].sum(axis=(1, 2)), part["input_ids"][:, :, :2] * 2]

    got = run_bounded(run, feed, 64)
    assert seen == [2, 2, 2]
    want = [feed["input_ids"].sum(axis=(1, 2)), feed["input_ids"][:, :, :2] * 2]
    for a, b in zip(want, got, strict=True):
        np.testing.assert_array_equal(a, b)
    seen.clear()
    run_bounded(run, feed, 6 * 32)
    assert seen == [6]  # within the bound: one run, as it came


def test_runs_of_reordered_rows_answer_each_row_in_its_place():
    feed = {"input_ids": np.arange(5 * 4).reshape(5, 4), "attention_mask": np.ones((5, 4), np.int64)}
    runs = [np.array([3, 1]), np.array([4, 0, 2])]
    seen = []

    def run(part):
        seen.append(part["input_ids"][:, 0].tolist())
        return [part["input_ids"][:, 0] * 10, part["input_ids"][:, 1:] + 1]

    got = run_planned(run, feed, runs)
    assert seen == [[12, 4], [16, 0, 8]]
    np.testing.assert_array_equal(got[0], feed["input_ids"][:, 0] * 10)
    np.testing.assert_array_equal(got[1], feed["input_ids"][:, 1:] + 1)
    seen.clear()
    run_planned(run, feed, [np.array([4, 3, 2, 1, 0])])
    assert seen == [[0, 4, 8, 12, 16]]  # one run of every row: the feed as it came


def test_runs_with_fewer_slots_are_zero_padded_to_the_widest_run():
    """The fill-mask graph answers as many slots as a run's rows have [MASK]s: runs of 1 and 3 slots join as 3."""
    feed = {"input_ids": np.array([[7, 0], [5, 5]])}

    def run(part):  # slots: the most 5s of a row, plus one; a valid flag and a 2-wide answer per slot
        slots = int((part["input_ids"] == 5).sum(axis=1).max()) + 1
        return [np.ones((len(part["input_ids"]), slots), bool), np.full((len(part["input_ids"]), slots, 2), 9.0)]

    valid, top = run_planned(run, feed, [np.array([1]), np.array([0])])
    np.testing.assert_array_equal(valid, [[True, False, False], [True, True, True]])
    assert top.shape == (2, 3, 2) and top[0, 1:].sum() == 0 and (top[0, 0] == 9).all() and (top[1] == 9).all()


@pytest.mark.functional
def test_bounded_runs_of_a_real_graph_give_the_whole_batch_results(exported_small, demo_small):
    from transformers import AutoTokenizer

    out, _ = exported_small
    folder = graph_paths(out, "fill_mask", "fp32")[0].parent
    engine = open_engine(folder, EngineSpec("onnxruntime", "model.fp32.onnx", threads=1))
    feed = trial_feed({"input_ids": 2, "attention_mask": 2, "token_type_ids": 2}, EngineTrial(batch=7, length=24), 1000)
    mask_id = AutoTokenizer.from_pretrained(demo_small / CHECKPOINT_KIND_FOR_TASK["fill_mask"]).mask_token_id
    feed["input_ids"][:, 3] = mask_id  # a [MASK] per row: the fill-mask graph's mask slots hold results
    whole = engine.run(feed)
    assert whole[engine.output_names.index("mask_valid")][:, 0].all()
    sliced = run_bounded(engine.run, feed, 48)  # 2 rows per run
    for a, b in zip(whole, sliced, strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    # texts of 6..24 tokens: the rows run reordered, short ones together, and each answer lands in its own row
    for row, length in enumerate([24, 6, 20, 8, 23, 7, 12]):
        feed["attention_mask"][row, length:] = 0
    whole = engine.run(feed)
    runs = []
    lengths = row_lengths(feed["attention_mask"])
    packed = run_bounded(lambda part: runs.append(part) or engine.run(part), feed, 48, lengths)
    planned = plan_runs(lengths, 48)
    assert [len(part["input_ids"]) for part in runs] == [len(rows) for rows in planned]
    assert max(len(rows) for rows in planned) > 2  # short rows share a run: not the 2-row slices of the padding
    for a, b in zip(whole, packed, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def _trialled(label_speed_mb: list[tuple[str, float, float]]) -> EngineChoice:
    specs = [
        EngineSpec(
            "onnxruntime" if "onnxruntime" in label else "openvino",
            f"{label}.onnx",
            **({} if "onnxruntime" in label else {"precision": "bf16"}),
        )
        for label, _, _ in label_speed_mb
    ]
    measured = [{"label": label, "seq_per_s": speed, "memory_mb": mb} for label, speed, mb in label_speed_mb]
    fastest = max(range(len(specs)), key=lambda i: measured[i]["seq_per_s"])
    return EngineChoice(specs[fastest], measured, "fastest of them", specs)


def test_the_memory_allowance_buys_the_largest_speedups_that_fit_and_the_reasons_name_what_was_passed_over():
    choices = {
        # OpenVINO 1.56x for 160 MB more than onnxruntime
        "question_answering": _trialled([("onnxruntime", 138.0, 47.0), ("openvino", 215.0, 207.0)]),
        # 1.39x for 170 MB more
        "fill_mask": _trialled([("onnxruntime", 147.0, 48.0), ("openvino", 205.0, 218.0)]),
        # 1.88x for 150 MB more, or 1.65x for 600 MB more: never worth it next to the first
        "multiple_choice": _trialled([("onnxruntime", 35.6, 48.0), ("openvino", 67.0, 198.0), ("qdq", 58.8, 648.0)]),
        # every engine holds the full-vocabulary output: only what one costs beyond the leanest counts
        "pretraining": _trialled([("onnxruntime", 59.2, 732.0), ("openvino", 58.5, 824.0)]),
    }
    everything = allot(choices, 10_000.0)
    assert [c.spec.graph for c in everything.values()] == ["openvino.onnx"] * 3 + ["onnxruntime.onnx"]
    assert all(c.reason == "fastest of them" for c in everything.values())
    # none beyond the leanest: onnxruntime everywhere, and each reason says what it gave up
    lean = allot(choices, 0.0)
    assert [c.spec.graph for c in lean.values()] == ["onnxruntime.onnx"] * 4
    assert lean["question_answering"].reason == (
        "fastest of them; engine memory beyond each task's leanest limited to 0 MB over the repository (this choice: "
        "0 MB): onnxruntime (47 MB), not openvino (207 MB, 1.56x as fast)"
    )
    assert lean["pretraining"].reason == "fastest of them"
    # room for one OpenVINO engine: the largest gain for the memory, multiple choice's
    one = allot(choices, 160.0)
    assert [one[t].spec.graph for t in ("question_answering", "fill_mask", "multiple_choice")] == [
        "onnxruntime.onnx",
        "onnxruntime.onnx",
        "openvino.onnx",
    ]
    assert "(this choice: 150 MB)" in one["question_answering"].reason
    # room for two: the two largest gains (1.88x and 1.56x) before fill-mask's 1.39x
    two = allot(choices, 320.0)
    assert [two[t].spec.graph for t in ("question_answering", "fill_mask", "multiple_choice")] == [
        "openvino.onnx",
        "onnxruntime.onnx",
        "openvino.onnx",
    ]
    # a gain the trial cannot resolve buys nothing, even where it would also save memory
    close = allot(choices, 10_000.0, min_gain=1.6)
    ort, ov = "onnxruntime.onnx", "openvino.onnx"
    assert [c.spec.graph for c in close.values()] == [ort, ort, ov, ort]
    assert close["question_answering"].reason == (
        "fastest of them; within the trial's noise (1.6x): onnxruntime (47 MB), not openvino (207 MB, only 1.56x as "
        "fast)"
    )
    assert allot(choices, 10_000.0)["pretraining"].spec.graph == "onnxruntime.onnx"  # 0.99x
    assert (
        allot({"p": _trialled([("onnxruntime", 54.4, 733.0), ("openvino", 59.1, 690.0)])}, 0.0, 1.1)["p"].spec.graph
        == "onnxruntime.onnx"
    )
    # a task measured with one candidate only keeps it, whatever the allowance
    only = EngineChoice(EngineSpec("onnxruntime", "x.onnx"), reason="the only candidate")
    assert allot({"t": only}, 0.0)["t"] is only
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="0 <= extra_mb_per_task < inf"):
            EngineTrial(extra_mb_per_task=bad)
    for bad in (0.9, float("nan")):
        with pytest.raises(ValueError, match="min_gain must be >= 1 and finite"):
            EngineTrial(min_gain=bad)
    # as fast and leaner: no reason to give
    tie = allot({"t": _trialled([("onnxruntime", 100.0, 90.0), ("openvino", 100.0, 50.0)])}, 1e6)["t"]
    assert tie.spec.graph == "openvino.onnx" and tie.reason == "fastest of them"


def test_pages_of_files_mapped_from_a_folder_are_handed_back_and_read_back_unchanged(tmp_path):
    import mmap

    if _file_system(tmp_path) == "tmpfs":
        pytest.skip("tmpfs pages have no file to be read back from: without swap the kernel keeps them")
    data = np.random.default_rng(0).integers(0, 255, 8 << 20, dtype=np.uint8).tobytes()
    (tmp_path / "weights.bin").write_bytes(data)
    # a sibling whose name starts with the folder's: never advised with it
    sibling = tmp_path.parent / f"{tmp_path.name}-sibling"
    sibling.mkdir()
    (sibling / "other.bin").write_bytes(data[: 1 << 20])
    views = []
    for path in (tmp_path / "weights.bin", sibling / "other.bin"):
        with open(path, "rb") as f:
            views.append(mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ))
    view, other = views
    try:
        assert view[:] == data and other[:] == data[: 1 << 20]  # every page resident
        assert _mapped_rss_mb("weights.bin") > 7 and _mapped_rss_mb("other.bin") > 0.9
        assert page_out_mapped_files(str(tmp_path)) == pytest.approx(8.0)
        assert _mapped_rss_mb("weights.bin") < 1
        assert _mapped_rss_mb("other.bin") > 0.9  # the sibling's pages stay
        assert view[:] == data  # faulted back in from the file
        assert page_out_mapped_files(str(sibling)) == pytest.approx(1.0)
    finally:
        view.close()
        other.close()


def _file_system(path) -> str:
    """The file system type of the mount holding `path` (longest mount point that is a prefix of it)."""
    best, kind = "", ""
    with open("/proc/self/mounts", encoding="utf-8") as f:
        for line in f:
            _, mount, fs_type = line.split()[:3]
            if str(path).startswith(mount.rstrip("/") + "/") and len(mount) > len(best):
                best, kind = mount, fs_type
    return kind


def _mapped_rss_mb(name: str) -> float:
    rss, current = 0.0, ""
    with open("/proc/self/smaps", encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5:
                current = fields[-1] if len(fields) > 5 else ""
            elif fields[0] == "Rss:" and current.endswith(name):
                rss += int(fields[1]) / 1024
    return rss


def test_openvino_cache_folder_is_per_cpu_kind_and_absent_where_it_cannot_be_created(tmp_path):
    avx2 = "processor\t: 0\nflags\t\t: fpu sse2 avx2\n"
    vnni = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512_vnni\n"
    first = openvino_cache_dir(tmp_path, avx2)
    assert first is not None and Path(first).is_dir() and Path(first).parent == tmp_path / OPENVINO_CACHE
    assert openvino_cache_dir(tmp_path, avx2) == first  # flag order and repeats do not matter
    assert openvino_cache_dir(tmp_path, "flags : avx2 sse2 fpu\n") == first
    assert openvino_cache_dir(tmp_path, vnni) != first
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    assert openvino_cache_dir(not_a_folder, avx2) is None  # cannot be created: OpenVINO compiles at each load
    # one subfolder per precision and layout: OpenVINO's own key leaves the precision hint out
    f32 = EngineSpec("openvino", "model.fp32.onnx", "f32", threads=1, streams=2)
    layouts = {f32, replace(f32, precision="bf16"), replace(f32, streams=1), replace(f32, threads=2)}
    folders = {openvino_cache_dir(tmp_path, avx2, spec.cache_layout) for spec in layouts}
    assert len(folders) == len(layouts) and all(Path(f).parent == Path(first) for f in folders)


@pytest.mark.functional
def test_openvino_engines_of_one_graph_at_two_precisions_keep_their_own_compiled_models(exported_small, tmp_path):
    # On an Intel Xeon with AMX a bf16 engine imported the f32 engine's cached blob (same OpenVINO cache key) and
    # crashed the process in its first two-stream inferences.
    if "bf16" not in openvino_precisions():
        pytest.skip("this CPU computes no bf16: OpenVINO compiles every graph at f32 here")
    out, _ = exported_small
    folder = tmp_path / "1"
    folder.mkdir()
    graph = graph_paths(out, "text_classification", "fp32")[0]
    os.link(graph, folder / graph.name)
    trial = EngineTrial(seconds=0.2, rounds=1, batch=4, length=32)
    feeds = trial_feeds({"input_ids": 2, "attention_mask": 2, "token_type_ids": 2}, trial, 1000)
    outputs = {}
    for precision in ("f32", "bf16", "bf16"):  # the second bf16 engine imports its own blob
        engine = open_engine(folder, EngineSpec("openvino", graph.name, precision, threads=1, streams=2))
        with ThreadPoolExecutor(2) as pool:
            runs = list(pool.map(lambda s, e=engine: [e.run(f, s)[0] for f in feeds for _ in range(5)], range(2)))
        outputs.setdefault(precision, runs[0])
    blobs = {p.parent.name for p in (folder / OPENVINO_CACHE).rglob("*.blob")}
    assert blobs == {"f32-2x1", "bf16-2x1"}
    for a, b in zip(outputs["f32"], outputs["bf16"], strict=True):
        cosine = float(np.dot(a.ravel(), b.ravel()) / (np.linalg.norm(a) * np.linalg.norm(b)))
        assert cosine > 0.99


@pytest.mark.functional
def test_openvino_compiles_once_into_the_cache_and_the_cached_model_computes_the_same(exported_small, tmp_path):
    out, _ = exported_small
    folder = tmp_path / "1"
    folder.mkdir()
    graph = graph_paths(out, "text_classification", "fp32")[0]
    os.link(graph, folder / graph.name)
    feed = trial_feed({"input_ids": 2, "attention_mask": 2, "token_type_ids": 2}, EngineTrial(batch=3, length=16), 1000)
    spec = EngineSpec("openvino", graph.name, "f32", threads=1, streams=2)
    first = open_engine(folder, spec)
    blobs = sorted((folder / OPENVINO_CACHE).rglob("*.blob"))
    assert blobs, "compiling wrote no blob into the cache"
    stamps = [b.stat().st_mtime_ns for b in blobs]
    second = open_engine(folder, spec)
    # the imported blob stays mapped (as a served runner's does): its pages go back to the kernel once compiled
    assert second.paged_out_mb > 0
    assert [b.stat().st_mtime_ns for b in sorted((folder / OPENVINO_CACHE).rglob("*.blob"))] == stamps
    for a, b in zip(first.run(feed), second.run(feed), strict=True):
        np.testing.assert_array_equal(a, b)
    uncached = tmp_path / "uncached"
    uncached.mkdir()
    os.link(graph, uncached / graph.name)
    open_engine(uncached, spec, cache=False)
    assert not (uncached / OPENVINO_CACHE).exists()


@pytest.mark.functional
def test_auto_choice_measures_every_validated_candidate_and_takes_the_fastest(exported_small):
    out, _ = exported_small
    manifests = _manifests(exported_small, "text_classification")
    specs = candidates(manifests, "int8-dynamic", "auto", threads=1, streams=2)
    labels = [s.label for s in specs]
    assert labels[0] == "onnxruntime int8-dynamic 2x1"
    assert {f"openvino fp32 {p} 2x1" for p in openvino_precisions()} <= set(labels)
    assert candidates(manifests, "int8-dynamic", "onnxruntime", threads=1, streams=2) == specs[:1]
    folder = graph_paths(out, "text_classification", "fp32")[0].parent
    trial = EngineTrial(seconds=0.2, rounds=2, batch=4, length=32)
    feeds = trial_feeds({"input_ids": 2, "attention_mask": 2, "token_type_ids": 2}, trial, 1000)
    choice = choose(folder, specs, feeds, trial, max_run_tokens=64)
    assert [m["label"] for m in choice.measured] == labels and all(len(m["rounds"]) == 2 for m in choice.measured)
    # each engine's own growth after its streams' warm-up: never negative, and compiling and running costs some
    assert all(m["memory_mb"] >= 0 for m in choice.measured) and any(m["memory_mb"] > 0 for m in choice.measured)
    best = max(choice.measured, key=lambda m: m["seq_per_s"])
    assert choice.spec.label == best["label"] and choice.to_dict()["chosen"] == best["label"]
    assert [s.label for s in choice.specs] == labels  # what `allot` picks from
    assert f"{len(feeds)} batches of up to 4 rows" in choice.reason
    # an engine validated on another CPU only is no candidate here
    for manifest in manifests.values():
        for figures in manifest.engines.values():
            figures["cpu"] = OTHER_CPU
    with pytest.raises(ValueError, match="no graph was validated for it on this CPU"):
        candidates(manifests, "int8-dynamic", "openvino", threads=1, streams=2)


OPENVINO_TASKS = ("fill_mask", "text_classification", "feature_extraction")


@pytest.fixture(scope="module")
def openvino_server(tmp_path_factory, demo_small, exported_small):
    """A repository whose runners are OpenVINO, one instance with two streams (one copy of the weights) per task."""
    export_dir, _ = exported_small
    repository = tmp_path_factory.mktemp("openvino-repo")
    cpu = CpuSettings(engine="openvino", instances=1, streams=2)
    settings = BuildSettings(export=ExportSettings(**FAST), export_dir=export_dir, cpu=cpu)
    plan = {task: demo_small / CHECKPOINT_KIND_FOR_TASK[task] for task in OPENVINO_TASKS}
    record = build_repository(repository, plan, settings)
    log = tmp_path_factory.mktemp("logs") / "openvino.log"
    with start_on_free_ports(repository, models=record["models"], log_file=log) as server:
        yield server, record


@pytest.mark.functional
def test_an_openvino_repository_records_its_choice_and_serves_like_the_fp32_profile(
    openvino_server, triton_server_fp32
):
    server, record = openvino_server
    repository = server.config.repository
    for task in OPENVINO_TASKS:
        choice = record["engines"][task]
        assert choice["spec"]["engine"] == "openvino" and choice["spec"]["streams"] == 2
        config = parse_config(repository / DEPLOYMENTS[task].onnx_model / "config.pbtxt")
        assert EngineSpec.from_parameters({k: v.string_value for k, v in config.parameters.items()}) == EngineSpec(
            **choice["spec"]
        )
        assert [g.count for g in config.instance_group] == [1]
    assert graphs_not_validated_here(repository) == []
    exact = {t for t in OPENVINO_TASKS if record["engines"][t]["spec"]["graph"] == "model.fp32.onnx"}
    texts = ["a [MASK] sentence.", "the second, much longer [MASK] goes on for a good while longer than the first."]
    with MobileBertClient(server.grpc_url) as ov, MobileBertClient(triton_server_fp32.grpc_url) as ref:
        tol = 1e-3 if "fill_mask" in exact else 5e-2
        for got, want in zip(ov.fill_mask(texts, top_k=3), ref.fill_mask(texts, top_k=3), strict=True):
            np.testing.assert_allclose([c["score"] for c in got], [c["score"] for c in want], rtol=tol, atol=1e-6)
        tol = 1e-3 if "text_classification" in exact else 5e-2
        for got, want in zip(ov.classify(texts), ref.classify(texts), strict=True):
            assert {c["label"] for c in got} == {c["label"] for c in want}
            scores = {c["label"]: c["score"] for c in want}
            np.testing.assert_allclose([c["score"] for c in got], [scores[c["label"]] for c in got], atol=tol)
        # per-token outputs: the batch is trimmed to its real length, run on one of two streams, padded back
        tol = 1e-3 if "feature_extraction" in exact else 5e-2
        for got, want in zip(ov.embed(texts, pooling="none"), ref.embed(texts, pooling="none"), strict=True):
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, atol=tol * max(1.0, float(np.abs(want).max())))
    build = json.loads((repository / "build.json").read_text())
    assert all(build["engines"][t]["chosen"] in build["profiles"]["default"] for t in OPENVINO_TASKS)
