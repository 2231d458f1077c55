"""The stages API (what the command line calls) and a cell whose loss diverges."""
from __future__ import annotations

import json

import pytest

import xkdbench.core.trainer as trainer
from tests.cli.test_cli import SMOKE, run, write_config
from xkdbench import stages


@pytest.fixture
def cell_inputs(tmp_path):
    """A tiny reasoning study: prepared data, tokenizer, an untrained teacher and student."""
    from xkdbench.models import ModelSpec, build_model, load_tokenizer

    sizes = {"train": 24, "warmup": 8, "validation": 8, "test": 8}
    config = write_config(
        tmp_path, tasks={"reasoning": {"options": {"difficulty": 0, "sizes": sizes}, "max_target_tokens": 24}},
        methods=[{"name": "kd", "method": "supervised_kd"}], report={}, teacher_cache={"mode": "live"},
        distill={"steps": 4, "batch_size": 4, "warmup_steps": 1, "log_every": 1},
        evaluation={"batch_size": 8, "samples_per_input": 0, "sampled_inputs": 2})
    data, tok = tmp_path / "data", tmp_path / "tok"
    stages.prepare_data(config, task="reasoning", out=data)
    stages.train_tokenizer(config, task="reasoning", data=data, out=tok)
    spec = ModelSpec(family="llama", d_model=16, n_layers=1, n_heads=2, d_ff=32)
    for name, seed in (("teacher", 1), ("student", 2)):
        build_model(spec, load_tokenizer(tok), seed=seed).save(tmp_path / name)
    return config, ["--config", str(config), "--task", "reasoning", "--method", "kd", "--data", str(data),
                    "--teacher", str(tmp_path / "teacher"), "--student", str(tmp_path / "student")]


def test_check_is_the_plan_the_command_line_prints(capsys):
    code, out = run(["check", "--config", str(SMOKE), "--json"], capsys)
    assert code == 0 and json.loads(out) == stages.check(SMOKE)


def test_stage_errors_name_the_flag(tmp_path):
    from xkdbench.config import ConfigError

    with pytest.raises(ConfigError, match="--student: .* does not exist"):
        stages.distill(SMOKE, task="reasoning", method="sft", data=tmp_path, teacher=tmp_path, student=tmp_path / "no",
                       out=tmp_path / "cell")


def nan_from_step(monkeypatch, first: int) -> None:
    """The method's loss term turns NaN from optimiser step `first` on (1-based)."""
    backward_step = getattr(trainer.backward_step, "__wrapped__", trainer.backward_step)  # not an earlier patch
    calls = []

    def diverging(method, micro):
        step_tokens, totals = backward_step(method, micro)
        calls.append(1)
        if len(calls) >= first:
            totals = {name: value * float("nan") for name, value in totals.items()}
        return step_tokens, totals

    diverging.__wrapped__ = backward_step
    monkeypatch.setattr(trainer, "backward_step", diverging)


def test_a_diverged_cell_is_recorded_for_the_workflow(tmp_path, capsys, monkeypatch, cell_inputs):
    _, flags = cell_inputs
    nan_from_step(monkeypatch, 3)
    code, out = run(["distill", *flags, "--out", str(tmp_path / "raw"), "--evaluate"], capsys)
    assert code == 1 and "training diverged: step 3: loss term 'forward_kl' is nan" in out
    assert not (tmp_path / "raw" / "train_summary.json").exists() and not (tmp_path / "raw" / "model").exists()

    nan_from_step(monkeypatch, 3)
    code, out = run(["distill", *flags, "--out", str(tmp_path / "cell"), "--evaluate", "--record-divergence"], capsys)
    assert code == 0 and "DIVERGED: step 3: loss term 'forward_kl' is nan" in out
    for name in ("train_summary.json", "eval/metrics.json"):
        outcome = json.loads((tmp_path / "cell" / name).read_text())
        assert outcome["status"] == "diverged" and outcome["error"].startswith("step 3: loss term 'forward_kl'")
        assert "headline" not in outcome and "steps" not in outcome  # no number that could be read as a score
    assert not (tmp_path / "cell" / "model").exists()


def test_the_report_lists_a_diverged_cell_and_gives_it_no_score(tmp_path):
    from tests.reporting.conftest import make_config, write_results
    from xkdbench.reporting.collect import collect

    write_results(tmp_path)
    config = make_config()
    before, _ = collect(config, tmp_path)
    cell = next((tmp_path / "cells").glob("*/*/*/seed0"))
    task, method, fraction = cell.parts[-4], cell.parts[-3], cell.parts[-2]
    outcome = {"status": "diverged", "error": "step 3: loss term 'forward_kl' is nan; ..."}
    for name in ("eval/metrics.json", "train_summary.json"):
        (cell / name).write_text(json.dumps(outcome))
    table, missing = collect(config, tmp_path)
    gone = before[(before.task == task) & (before.method == method) & (before.seed == 0)]
    assert len(table) == len(before) - len([r for r in gone.itertuples() if f"f{r.fraction:g}" == fraction])
    assert any("diverged, no scores (step 3: loss term 'forward_kl' is nan" in line and method in line
               for line in missing)
