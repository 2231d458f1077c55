"""The workflow: the DAG of every shipped config, and a real end-to-end run of the smoke study."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.workflow.browser import report_figures_render

ROOT = Path(__file__).resolve().parents[2]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
OFFLINE = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
# the `xkdbench` the rules call must be this interpreter's
OFFLINE["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{OFFLINE.get('PATH', '')}"


def workflow_copy(tmp_path: Path) -> Path:
    """A fresh copy of the workflow files, so runs never touch the checkout's results."""
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(ROOT / "Snakefile", work / "Snakefile")
    shutil.copytree(ROOT / "workflows", work / "workflows")
    shutil.copytree(ROOT / "profiles", work / "profiles", symlinks=True)
    return work


@pytest.mark.parametrize("config", ["smoke", "default", "paper"])
def test_dry_run_of_every_shipped_config(tmp_path, config):
    work = workflow_copy(tmp_path)
    args = [] if config == "default" else ["--configfile", f"workflows/config/{config}.yaml"]
    out = subprocess.run(SNAKEMAKE + ["-n", "--cores", "2", *args], cwd=work, env=OFFLINE, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "distill" in out.stdout and "report" in out.stdout


def test_bad_config_stops_the_workflow_at_start(tmp_path):
    work = workflow_copy(tmp_path)
    text = (work / "workflows/config/smoke.yaml").read_text().replace("method: seqkd}", "method: seqkdd}")
    (work / "workflows/config/smoke.yaml").write_text(text)
    out = subprocess.run(SNAKEMAKE + ["-n", "--cores", "2", "--configfile", "workflows/config/smoke.yaml"], cwd=work,
                         env=OFFLINE, capture_output=True, text=True)
    assert out.returncode != 0
    assert "config.methods[1].method: 'seqkdd' is not allowed" in out.stdout + out.stderr


def test_a_task_with_its_own_seeds_plans_its_initialisations_and_cells(tmp_path):
    """tasks.<t>.seeds: the task gets a student initialisation, its evaluation and every cell per own seed."""
    from xkdbench.config import load_config

    work = workflow_copy(tmp_path)
    path = work / "workflows/config/smoke.yaml"
    text = path.read_text()
    assert "  reasoning:\n" in text
    path.write_text(text.replace("  reasoning:\n", "  reasoning:\n    seeds: [0, 1, 2]\n", 1))
    out = subprocess.run(SNAKEMAKE + ["-n", "--cores", "2", "--configfile", "workflows/config/smoke.yaml"], cwd=work,
                         env=OFFLINE, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out.stdout, flags=re.MULTILINE))
    cfg = load_config(path)
    assert cfg.task_seeds("reasoning") == [0, 1, 2] and cfg.task_seeds("translation") == [0]
    tasks = len(cfg.tasks)
    assert int(counts["init_student"]) == int(counts["evaluate_student_init"]) == tasks - 1 + 3
    in_house = [c for c in cfg.cells() if not cfg.method(c[1]).external]  # external ones run their own rule
    assert int(counts["distill"]) == len(in_house)
    assert "student_init/reasoning/seed2/eval/metrics.json" in out.stdout


@pytest.mark.slow
def test_smoke_study_end_to_end_and_interrupted_rerun(tmp_path):
    work = workflow_copy(tmp_path)
    cmd = SNAKEMAKE + ["--cores", "2", "--configfile", "workflows/config/smoke.yaml"]
    out = subprocess.run(cmd, cwd=work, env=OFFLINE, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-5000:]
    figures = work / "paper_figures" / "smoke"
    tidy = pd.read_csv(figures / "all_cells.csv")
    distilled = tidy[(tidy.role == "distilled") & (tidy.decoding == "greedy")]
    # tasks x methods x fractions (one seed), plus two one-cell variants, plus gkd and trl_gkd at fraction 1
    assert len(distilled) == 3 * 4 * 2 + 2 + 3 * 2
    assert set(distilled.task) == {"summarization", "translation", "reasoning"}
    limited = distilled[distilled.method == "gkd_rkl_on"]
    assert list(zip(limited.task, limited.fraction, strict=True)) == [("reasoning", 1.0)]
    # the external method (TRL's GKDTrainer, a Snakemake rule) beside the suite's gkd, in every table
    external = distilled[distilled.method == "trl_gkd"]
    assert list(external.method_key) == ["external"] * 3 and set(external.fraction) == {1.0}
    assert (external.train_steps == 6).all() and (external.generated_tokens > 0).all()
    assert (external.teacher_forward_sequences == 6 * 8).all() and (external.train_seconds > 0).all()
    assert set(distilled[distilled.method == "gkd"].task) == set(external.task)
    cost = pd.read_csv(figures / "cost.csv")
    assert set(cost.method) >= {"gkd", "trl_gkd"}
    main = pd.read_csv(figures / "main_table.csv")
    assert set(main.loc[main.model == "trl_gkd", "task"]) == {"summarization", "translation", "reasoning"}
    claims = pd.read_csv(figures / "claims.csv")
    # by score and by oracle (a claim that names its measure: that one): 3 tasks x 2, 1, 1 task x 2, 3 tasks x 2
    assert len(claims) == 6 + 1 + 2 + 6 and set(claims.verdict) <= {"reproduced", "not reproduced (B better)",
                                                                   "inconclusive"}
    assert set(claims.measure) == {"greedy_score", "greedy_oracle"}
    paired = claims[claims.method_a == "trl_gkd"]
    assert list(paired.method_b) == ["gkd"] * 6 and (paired.n_inputs == 16).all()
    control = claims[claims.control]  # one seed: the interval covers the inputs only and decides nothing
    assert list(control.verdict) == ["inconclusive"] * 2 and "A/A control" in control.claim.iloc[0]
    assert (claims.interval_covers == "inputs only (1 seed)").all()
    for name in ("main_table.md", "main_table.tex", "main_table.csv", "gkd_grid.md", "claims.md"):
        assert (figures / name).stat().st_size > 0
    for name in ("data_efficiency", "performance_diversity", "cost", "gkd_grid"):
        assert (figures / "figures" / f"{name}.png").stat().st_size > 1000
    assert "test inputs" in (figures / "main_table.md").read_text()

    # The HTML report, opened in a real headless browser: every figure shows, as its own PNG, drawn
    out = subprocess.run(cmd + ["--report", "report.html"], cwd=work, env=OFFLINE, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    shown = report_figures_render(work / "report.html", figures / "figures", tmp_path / "screenshots")
    tables = shown.pop("tables")["names"]
    assert set(shown) == {p.stem for p in (figures / "figures").glob("*.png")} >= {"claims_forest",
                                                                                   "data_efficiency_paired"}
    for name, seen in shown.items():
        assert seen["size"] == seen["expected_size"], name  # the figure's own pixels, fully decoded
        assert seen["ink"] > 0.02 and seen["colours"] > 50, (name, seen)  # a drawing, not a blank box
    assert {"main table", "claims of the source papers", "missing or failed cells"} <= set(tables)

    # An interrupted run: delete one finished cell and leave a half-written checkpoint behind; the same
    # command redoes only that cell (and the report), and nothing else is recomputed.
    cell = work / "results/smoke/cells/reasoning/sft/f0.5/seed0"
    kept = (work / "results/smoke/cells/reasoning/gkd_jsd0.5_lambda0.5/f1/seed0/eval/metrics.json").stat().st_mtime
    shutil.rmtree(cell)
    (figures / "main_table.md").unlink()  # the interrupted run never reached its report
    out = subprocess.run(cmd + ["-n"], cwd=work, env=OFFLINE, capture_output=True, text=True)
    plan = out.stdout
    assert "distill" in plan and "report" in plan and "train_teacher" not in plan, plan[-3000:]
    out = subprocess.run(cmd, cwd=work, env=OFFLINE, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (cell / "eval" / "metrics.json").exists()
    assert (work / "results/smoke/cells/reasoning/gkd_jsd0.5_lambda0.5/f1/seed0/eval/metrics.json").stat().st_mtime == kept

    # A finished study is up to date; editing the distillation budget reruns every cell and the report,
    # and nothing upstream (each rule's parameters carry a hash of the config values it reads).
    out = subprocess.run(cmd + ["-n"], cwd=work, env=OFFLINE, capture_output=True, text=True)
    assert "Nothing to be done" in out.stdout + out.stderr, out.stdout[-3000:]
    config = work / "workflows/config/smoke.yaml"
    config.write_text(config.read_text().replace("distill: {steps: 6,", "distill: {steps: 5,"))
    out = subprocess.run(cmd + ["-n"], cwd=work, env=OFFLINE, capture_output=True, text=True)
    rules = set(re.findall(r"^(?:local)?rule (\w+):$", out.stdout, flags=re.MULTILINE))
    external = {"cell_inputs", "trl_gkd", "evaluate_external"}  # the external method's cells: inputs, rule, evaluation
    assert out.returncode == 0 and rules == {"distill", *external, "report", "all"}, out.stdout[-3000:]


@pytest.mark.slow
def test_a_fresh_clone_plans_the_whole_study(tmp_path):
    """`git clone` and `snakemake` with no arguments: every cell of the default study is planned, not
    "Nothing to be done" because the committed tables under paper_figures/ look up to date."""
    from xkdbench.config import load_config

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    out = subprocess.run(SNAKEMAKE + ["-n", "--cores", "2"], cwd=clone, env=OFFLINE, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out.stdout, flags=re.MULTILINE))
    cells = load_config(clone / "workflows/config/default.yaml").cells()
    assert int(counts["distill"]) == len(cells) and int(counts["report"]) == 1, out.stdout[-3000:]
