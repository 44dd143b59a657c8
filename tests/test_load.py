"""perf/load.py's closed loop (the one load generator: perf, demo, soak) against a stand-in client: no server.

What is checked: a mix of tasks is taken in turn, each task with its own rows, through the client method that
`task_call` names; calls and failures are counted per task (warm-up failures included); retries reach the client
as set; the probe sees the server before and after the measured part only.
"""

from __future__ import annotations

import asyncio
from typing import ClassVar

import pytest

import client
from perf import load
from perf.inputs import MULTIPLE_CHOICES, corpus_rows, write_analyzer_data
from perf.load import MAX_ERRORS, LoadSettings, run_load


class StandInClient:
    """AsyncMobileBertClient's task methods; records each call, and fails every call of the tasks in `failing`."""

    made: ClassVar[list[StandInClient]] = []
    failing: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, url: str, **options) -> None:
        self.url, self.options = url, options
        self.calls: list[tuple[str, tuple]] = []
        StandInClient.made.append(self)

    async def __aenter__(self) -> StandInClient:
        return self

    async def __aexit__(self, *exc) -> None:
        return None

    async def _record(self, task: str, *args) -> str:
        self.calls.append((task, args))
        await asyncio.sleep(0)  # let the other workers run, as a real call does
        if task in self.failing:
            raise RuntimeError(f"{task} refused")
        return "ok"

    async def fill_mask(self, text, top_k=5):
        return await self._record("fill_mask", text)

    async def answer(self, question, context):
        return await self._record("question_answering", question, context)

    async def classify(self, text):
        return await self._record("text_classification", text)

    async def tag(self, text):
        return await self._record("token_classification", text)

    async def embed(self, text):
        return await self._record("feature_extraction", text)

    async def next_sentence(self, text, pair):
        return await self._record("next_sentence", text, pair)

    async def multiple_choice(self, prompt, choices):
        return await self._record("multiple_choice", prompt, choices)


@pytest.fixture
def stand_in(monkeypatch):
    StandInClient.made = []
    StandInClient.failing = frozenset()
    monkeypatch.setattr(client, "AsyncMobileBertClient", StandInClient)
    monkeypatch.setattr(load, "snapshot", lambda url, models, metrics_url=None: {})  # no server: no statistics to read
    return StandInClient


def _rows(tasks: tuple[str, ...]) -> dict[str, list[dict]]:
    return {task: corpus_rows(task)[:5] for task in tasks}


def test_a_mix_takes_the_tasks_in_turn_each_with_its_own_rows(stand_in):
    tasks = ("fill_mask", "question_answering", "multiple_choice")
    rows = _rows(tasks)
    settings = LoadSettings(tasks=tasks, url="127.0.0.1:1", concurrency=3, seconds=None, requests=30, warmup_s=0)
    result = run_load(settings, rows)

    calls = stand_in.made[0].calls
    assert len(calls) == 30
    assert {task: result["tasks"][task]["calls"] for task in tasks} == dict.fromkeys(tasks, 10)
    assert {task: result["tasks"][task]["requests"] for task in tasks} == dict.fromkeys(tasks, 10)
    assert result["calls"] == result["requests"] == result["sequences"] == 30 and result["failed"] == 0
    assert result["task"] == "fill_mask+question_answering+multiple_choice"
    # Each task's rows, cycled in order, sent through that task's client method.
    sent = {task: [args for name, args in calls if name == task] for task in tasks}
    assert sent["fill_mask"] == [(r["TEXT"],) for r in rows["fill_mask"]] * 2
    assert sent["question_answering"] == [(r["QUESTION"], r["CONTEXT"]) for r in rows["question_answering"]] * 2
    assert sent["multiple_choice"] == [(r["PROMPT"], r["CHOICES"]) for r in rows["multiple_choice"]] * 2


def test_several_rows_per_request_go_as_one_list_call(stand_in):
    rows = _rows(("next_sentence",))
    settings = LoadSettings(
        tasks=("next_sentence",), url="127.0.0.1:1", seconds=None, requests=2, rows_per_request=2, warmup_s=0
    )
    result = run_load(settings, rows)
    first = rows["next_sentence"][:2]
    assert stand_in.made[0].calls[0] == (
        "next_sentence",
        ([r["TEXT"] for r in first], [r["TEXT_PAIR"] for r in first]),
    )
    assert result["requests"] == 2 and result["sequences"] == 4


def test_failures_are_counted_per_task_warm_up_included_and_their_errors_kept(stand_in):
    stand_in.failing = frozenset({"token_classification"})
    tasks = ("text_classification", "token_classification")
    settings = LoadSettings(tasks=tasks, url="127.0.0.1:1", concurrency=2, seconds=None, requests=20, warmup_s=0.01)
    result = run_load(settings, _rows(tasks))

    tagged = result["tasks"]["token_classification"]
    assert tagged["warmup_calls"] >= 1  # the warm-up calls every task at least once
    assert tagged["calls"] == 10 and tagged["requests"] == 0
    assert tagged["failed"] == tagged["calls"] + tagged["warmup_calls"]  # the warm-up's failures too
    assert tagged["p50_ms"] is None
    assert tagged["errors"] == ["RuntimeError: token_classification refused"] * MAX_ERRORS
    assert result["tasks"]["text_classification"]["failed"] == 0
    assert result["tasks"]["text_classification"]["requests"] == 10
    assert result["failed"] == tagged["failed"]
    assert result["errors"] == [f"token_classification: {e}" for e in tagged["errors"]]


def test_the_client_makes_no_retries_unless_asked(stand_in):
    for retries in (0, 3):
        settings = LoadSettings(
            tasks=("feature_extraction",), url="127.0.0.1:1", seconds=None, requests=1, warmup_s=0, retries=retries
        )
        assert run_load(settings, _rows(("feature_extraction",)))["retries"] == retries
        assert stand_in.made[-1].options["retries"] == retries
    assert LoadSettings(tasks=("fill_mask",), url="u").retries == 0


def test_the_probe_sees_the_server_before_and_after_the_measured_part_only(stand_in):
    def probe() -> int:
        return len(stand_in.made[0].calls)

    settings = LoadSettings(tasks=("fill_mask",), url="127.0.0.1:1", seconds=None, requests=7, warmup_s=0.01)
    result = run_load(settings, _rows(("fill_mask",)), probe=probe)
    warmup = result["tasks"]["fill_mask"]["warmup_calls"]
    assert warmup >= 1
    assert result["probe"] == {"before": warmup, "after": warmup + 7}


@pytest.mark.parametrize(
    ("tasks", "message"),
    [
        ("fill_mask", "tuple of task names"),
        ((), "tuple of task names"),
        (("pretraining",), "no client call"),
        (("fill_mask", "fill_mask"), "named twice"),
        (("translation",), "no perf input data"),
    ],
)
def test_load_settings_refuse_tasks_it_cannot_call(tasks, message):
    with pytest.raises(ValueError, match=message):
        LoadSettings(tasks=tasks, url="127.0.0.1:1")


def test_a_task_without_rows_is_refused_before_any_call(stand_in):
    settings = LoadSettings(tasks=("fill_mask", "feature_extraction"), url="127.0.0.1:1", warmup_s=0)
    with pytest.raises(ValueError, match="no rows to send for feature_extraction"):
        run_load(settings, {"fill_mask": corpus_rows("fill_mask")})
    assert stand_in.made == []


def test_multiple_choice_rows_are_a_prompt_and_the_lines_after_it_and_perf_analyzer_refuses_them(tmp_path):
    rows = corpus_rows("multiple_choice")
    assert rows and all(isinstance(r["PROMPT"], str) and r["PROMPT"] for r in rows)
    assert all(len(r["CHOICES"]) == MULTIPLE_CHOICES and all(c for c in r["CHOICES"]) for r in rows)
    with pytest.raises(ValueError, match="not multiple_choice"):
        write_analyzer_data(rows[:2], tmp_path / "data.json")
