"""Progress lines: a long job's log shows where it is (step/total, loss, rate, ETA), at a steady pace."""
from __future__ import annotations

import io
import json
import re

import pytest

from tests.core.test_trainer import assert_same_weights, run
from xkdbench.progress import Progress, interval_seconds


def test_a_line_names_the_step_the_total_the_fields_the_rate_and_the_eta(monkeypatch):
    clock = iter([100.0, 110.0, 120.0])  # start, then two reads: 10 s per 25 steps
    monkeypatch.setattr("xkdbench.progress.time.perf_counter", lambda: next(clock))
    out = io.StringIO()
    progress = Progress("distill x", 100, stream=out, every=5)
    progress.update(25, loss=2.5)
    progress.update(100, loss=1.25)
    lines = out.getvalue().splitlines()
    assert lines[0] == "[distill x] step 0/100: starting"
    # 25 steps in 10 s: 2.5 steps/s, 75 to go: 30 s
    assert lines[1] == "[distill x] step 25/100 (25%) | loss 2.5 | 2.5 steps/s | elapsed 0:00:10 | ETA 0:00:30"
    assert lines[2] == "[distill x] step 100/100 (100%) | loss 1.25 | 5 steps/s | elapsed 0:00:20"  # done: no ETA


def test_a_resumed_run_counts_its_rate_from_where_it_resumed(monkeypatch):
    clock = iter([0.0, 4.0])
    monkeypatch.setattr("xkdbench.progress.time.perf_counter", lambda: next(clock))
    out = io.StringIO()
    progress = Progress("t", 10, start=6, stream=out, every=1, unit="batch")
    progress.update(8)  # 2 batches in 4 s: 2 s per batch, 2 to go
    assert out.getvalue().splitlines() == ["[t] batch 6/10, resumed at 6: starting",
                                           "[t] batch 8/10 (80%) | 2 s/batch | elapsed 0:00:04 | ETA 0:00:04"]


def test_lines_are_due_at_the_interval(monkeypatch):
    now = [0.0]
    monkeypatch.setattr("xkdbench.progress.time.perf_counter", lambda: now[0])
    progress = Progress("t", 10, stream=io.StringIO(), every=30)
    now[0] = 29.9
    assert not progress.due()
    now[0] = 30.0
    assert progress.due()
    progress.update(3)
    assert not progress.due()  # the next one is 30 s after the last line


@pytest.mark.parametrize("value,expected", [("", 30.0), ("5", 5.0), ("0", 0.0), ("-1", 0.0)])
def test_the_interval_comes_from_the_environment(monkeypatch, value, expected):
    monkeypatch.setenv("XKDBENCH_PROGRESS_SECONDS", value)
    assert interval_seconds() == expected


def test_a_bad_interval_is_named(monkeypatch):
    monkeypatch.setenv("XKDBENCH_PROGRESS_SECONDS", "often")
    with pytest.raises(ValueError, match="XKDBENCH_PROGRESS_SECONDS: expected a number of seconds"):
        interval_seconds()


def test_off_prints_nothing():
    out = io.StringIO()
    progress = Progress("t", 10, stream=out, every=0)
    progress.update(5)
    assert out.getvalue() == "" and not progress.due()


def test_a_training_run_prints_progress_and_the_same_numbers_with_or_without_it(tokenizer, family, toy_data,
                                                                               tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("XKDBENCH_PROGRESS_SECONDS", "0")
    quiet, _ = run(tokenizer, family, toy_data, tmp_path / "quiet", method="gkd",
                   settings={"student_data_fraction": 0.5})
    ours = lambda err: [line for line in err.splitlines() if line.startswith("[train]")]  # noqa: E731
    assert ours(capfd.readouterr().err) == []
    monkeypatch.setenv("XKDBENCH_PROGRESS_SECONDS", "1e-9")  # a line after every step
    loud, _ = run(tokenizer, family, toy_data, tmp_path / "loud", method="gkd",
                  settings={"student_data_fraction": 0.5})
    lines = ours(capfd.readouterr().err)
    assert lines[0] == "[train] step 0/4: starting"
    assert [int(re.match(r"\[train\] step (\d+)/4 ", line).group(1)) for line in lines[1:]] == [1, 2, 3, 4]
    logged = [float(line.split(" | ")[1].removeprefix("loss ")) for line in lines[1:]]
    losses = [r["loss"] for r in map(json.loads, (tmp_path / "loud" / "train_log.jsonl").open())]
    assert logged == pytest.approx(losses, rel=1e-3)  # the step's loss, as the log has it (4 digits)
    assert_same_weights(quiet, loud, exact=True)
