"""benchmarks/workflow_times.py reads Snakemake's own log: job seconds per rule and how many jobs ran at once."""
from __future__ import annotations

import pytest

from tests.scripts import load_script


@pytest.fixture(scope="module")
def workflow_times():
    return load_script("benchmarks/workflow_times.py")


# Snakemake 9's log lines, as a run writes them: a lone job, then two at once, the second finishing last
LOG = """\
[Fri Dec  4 20:00:00 2026]
localrule train_teacher:
    output: results/default/teacher/reasoning/model
    jobid: 7
    wildcards: task=reasoning
[Fri Dec  4 20:01:00 2026]
Finished jobid: 7 (Rule: train_teacher)
[Fri Dec  4 20:01:00 2026]
localrule distill:
    jobid: 11
    wildcards: task=reasoning, method=sft, fraction=1, seed=0
[Fri Dec  4 20:01:30 2026]
localrule distill:
    jobid: 12
    wildcards: task=reasoning, method=sft, fraction=1, seed=1
[Fri Dec  4 20:02:00 2026]
Finished jobid: 11 (Rule: distill)
[Fri Dec  4 20:03:00 2026]
Finished jobid: 12 (Rule: distill)
"""


def test_jobs_and_their_seconds_come_from_the_log(tmp_path, workflow_times):
    log = tmp_path / "run.snakemake.log"
    log.write_text(LOG)
    jobs, first, last = workflow_times.finished_jobs(log)
    assert [(j["rule"], j["seconds"]) for j in jobs] == [("train_teacher", 60.0), ("distill", 60.0), ("distill", 90.0)]
    assert jobs[2]["wildcards"] == {"task": "reasoning", "method": "sft", "fraction": "1", "seed": "1"}
    assert (last - first).total_seconds() == 180.0
    # one job from 20:00 to 20:01:30 (the teacher, then the first cell alone), two until 20:02, one to 20:03
    assert workflow_times.concurrency(jobs) == {1: 150.0, 2: 30.0}


def test_the_printed_summary(tmp_path, workflow_times, capsys, monkeypatch):
    log = tmp_path / "run.snakemake.log"
    log.write_text(LOG)
    monkeypatch.setattr("sys.argv", ["workflow_times.py", str(log)])
    workflow_times.main()
    out = capsys.readouterr().out
    assert "jobs running at once: 1: 2.5 min, 2: 0.5 min (of 3.0 min from the first start to the last finish)" in out
    assert "distill                      2          2.5     75.0" in out
