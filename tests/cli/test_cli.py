"""The command line: every user mistake stops before any work with a message naming the field."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from xkdbench.cli import main

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "workflows" / "config" / "smoke.yaml"


def write_config(tmp_path, **changes) -> Path:
    config = yaml.safe_load(SMOKE.read_text())
    config.update(changes)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run(argv, capsys) -> tuple[int, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_help_lists_every_stage():
    out = subprocess.run([sys.executable, "-m", "xkdbench", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("prepare-data", "train-tokenizer", "train-teacher", "teacher-outputs", "init-student", "distill",
                    "evaluate", "lm-eval", "report", "tasks", "methods", "check"):
        assert command in out


def test_lists(capsys):
    code, out = run(["methods"], capsys)
    assert code == 0 and "gkd" in out and "2306.13649" in out
    code, out = run(["tasks"], capsys)
    assert code == 0 and "reasoning" in out and "accuracy_strict" in out


def test_shipped_configs_are_valid(capsys):
    for name in ("smoke", "default", "paper"):
        code, out = run(["check", "--config", str(ROOT / "workflows" / "config" / f"{name}.yaml")], capsys)
        assert code == 0, out


@pytest.mark.parametrize("changes,message", [
    ({"methods": [{"name": "x", "method": "gdk"}]}, "config.methods[0].method: 'gdk' is not allowed; allowed:"),
    ({"tasks": {"reasonin": {}}}, "config.tasks: 'reasonin' is not allowed; allowed: reasoning, summarization, translation"),
    ({"fractions": [1.5]}, "config.fractions[0]: 1.5 is out of range; allowed: (0, 1]"),
    ({"tasks": {"reasoning": {"options": {"difficulty": 9}}}}, "config.tasks.reasoning.options: difficulty must be"),
    ({"tasks": {"reasoning": {"options": {"colour": 1}}}}, "config.tasks.reasoning.options: unknown option(s) 'colour'"),
    ({"distill": {"steps": 0}}, "config.distill.steps: 0 is out of range"),
])
def test_bad_config_fails_before_work(tmp_path, capsys, changes, message):
    config = write_config(tmp_path, **changes)
    out_dir = tmp_path / "out"
    code, out = run(["prepare-data", "--config", str(config), "--task", "reasoning", "--out", str(out_dir)], capsys)
    assert code == 2 and message in out, out
    assert not out_dir.exists(), "nothing may be written before the config is valid"


def test_missing_inputs_are_named(tmp_path, capsys):
    code, out = run(["train-teacher", "--config", str(SMOKE), "--task", "reasoning", "--data", str(tmp_path / "nodata"),
                     "--tokenizer", str(tmp_path / "tok"), "--out", str(tmp_path / "t")], capsys)
    assert code == 2 and "--tokenizer" in out and "does not exist" in out


def test_unknown_cell_names(tmp_path, capsys):
    code, out = run(["distill", "--config", str(SMOKE), "--task", "reasoning", "--method", "nope", "--data", "d",
                     "--teacher", "t", "--student", "s", "--out", str(tmp_path / "c")], capsys)
    assert code == 2 and "--method: 'nope' is not a method variant" in out and "gkd_jsd0.5_lambda0.5" in out
    code, out = run(["distill", "--config", str(SMOKE), "--task", "reasoning", "--method", "sft", "--fraction", "0",
                     "--data", "d", "--teacher", "t", "--student", "s", "--out", str(tmp_path / "c")], capsys)
    assert code == 2 and "--fraction: 0.0 is out of range" in out
