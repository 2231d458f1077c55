"""A cell as several processes: `resources.student.processes: 2` runs the distill job under torchrun."""
from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from tests.workflow.test_workflow import OFFLINE, SNAKEMAKE, workflow_copy
from xkdbench.core.trainer import read_log


def two_rank_config(work, name: str, processes: int):
    """The smoke study cut to one task and one off-policy variant, as `processes` ranks."""
    config = yaml.safe_load((work / "workflows/config/smoke.yaml").read_text())
    config.update(name=name, fractions=[1.0], tasks={"reasoning": config["tasks"]["reasoning"]},
                  methods=[m for m in config["methods"] if m["name"] == "sft"] +
                  [{"name": "kd", "method": "supervised_kd"}],
                  report={"claims": []}, resources={"student": {"processes": processes, "threads": 2}})
    path = work / "workflows/config" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_plan_launches_torchrun(tmp_path):
    work = workflow_copy(tmp_path)
    config = two_rank_config(work, "ranks", 2)
    out = subprocess.run(SNAKEMAKE + ["-n", "-p", "--cores", "2", "--configfile", str(config)], cwd=work, env=OFFLINE,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "torchrun --standalone --nproc_per_node 2 -m xkdbench distill" in out.stdout
    assert "--threads 1 " in out.stdout  # the job's 2 threads shared by its 2 processes


def test_processes_must_split_the_batch(tmp_path):
    work = workflow_copy(tmp_path)
    config = two_rank_config(work, "ranks", 3)  # the smoke distill batch is 8
    out = subprocess.run(SNAKEMAKE + ["-n", "--cores", "2", "--configfile", str(config)], cwd=work, env=OFFLINE,
                         capture_output=True, text=True)
    assert out.returncode != 0
    assert "config.resources.student.processes: 3 does not divide the distill batch_size 8" in out.stdout + out.stderr


@pytest.mark.slow
def test_two_rank_cells_equal_one_process_cells(tmp_path):
    """The same cells through the workflow as 2 ranks and as 1 process (the second run reuses the first's
    data, teacher and student initialisation): the same training losses (to float rounding) and tokens;
    rank 0 alone wrote the cell and its evaluation."""
    work = workflow_copy(tmp_path)
    study = work / "results" / "ranks"
    for processes in (2, 1):
        config = two_rank_config(work, "ranks", processes)
        out = subprocess.run(SNAKEMAKE + ["--cores", "2", "--configfile", str(config)], cwd=work, env=OFFLINE,
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        if processes == 2:
            (study / "cells").rename(study / "cells_2_ranks")  # the 1-process run redoes the cells only
    for method in ("sft", "kd"):
        ranks, single = (study / cells / "reasoning" / method / "f1/seed0" for cells in ("cells_2_ranks", "cells"))
        assert [r["loss"] for r in read_log(ranks / "train_log.jsonl")] == \
            pytest.approx([r["loss"] for r in read_log(single / "train_log.jsonl")], abs=1e-5)
        assert [r["tokens"] for r in read_log(ranks / "train_log.jsonl")] == \
            [r["tokens"] for r in read_log(single / "train_log.jsonl")]
        assert json.loads((ranks / "train_summary.json").read_text())["processes"] == 2
        assert "processes" not in json.loads((single / "train_summary.json").read_text())
        assert (ranks / "eval" / "metrics.json").is_file()
