"""The command line: every user mistake stops before any work with a message naming the field."""
from __future__ import annotations

import re
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
    # the names in the command listing, not substrings of the help ("check" is in "checkpoint")
    listed = set(re.findall(r"^ {4}([a-z][a-z-]*)\b", out, flags=re.MULTILINE))
    assert listed >= {"prepare-data", "train-tokenizer", "train-teacher", "teacher-outputs", "teacher-cache",
                      "init-student", "distill", "evaluate", "cell-inputs", "lm-eval", "report", "tasks", "methods",
                      "check"}


def test_garbage_collector_is_quieted_for_a_command_process_only(capsys):
    """`xkdbench <command>` as a process freezes what its imports left and collects rarely (a faster
    run, the same numbers); called as a library (main(argv)), it leaves the caller's collector alone."""
    probe = ("import gc, sys\n"
             "from xkdbench.cli import main\n"
             "sys.argv = ['xkdbench', 'tasks']\n"
             "code = main()\n"
             "print(gc.get_threshold(), gc.get_freeze_count() > 10_000, code)\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "(50000, 50, 100) True 0"
    import gc

    before = gc.get_threshold(), gc.get_freeze_count()
    assert main(["tasks"]) == 0
    assert (gc.get_threshold(), gc.get_freeze_count()) == before
    capsys.readouterr()


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


def test_teacher_cache_then_an_off_policy_cell_that_never_runs_the_teacher(tmp_path, capsys, monkeypatch):
    import json

    import xkdbench.models
    from xkdbench.models import ModelSpec, build_model, load_tokenizer

    sizes = {"train": 40, "warmup": 8, "validation": 8, "test": 8}
    config = write_config(
        tmp_path, tasks={"reasoning": {"options": {"difficulty": 0, "sizes": sizes}, "max_target_tokens": 32}},
        methods=[{"name": "kd", "method": "supervised_kd"}, {"name": "sft", "method": "sft"}], report={},
        teacher_cache={"mode": "top_k", "top_k": 16},
        distill={"steps": 2, "batch_size": 4, "warmup_steps": 1, "log_every": 1})
    common = ["--config", str(config), "--task", "reasoning"]
    data, tok = tmp_path / "data", tmp_path / "tok"
    assert run(["prepare-data", *common, "--out", str(data)], capsys)[0] == 0
    assert run(["train-tokenizer", *common, "--data", str(data), "--out", str(tok)], capsys)[0] == 0
    spec = ModelSpec(family="llama", d_model=16, n_layers=1, n_heads=2, d_ff=32)
    for name, seed in (("teacher", 1), ("student", 2), ("other_teacher", 3)):
        build_model(spec, load_tokenizer(tok), seed=seed).save(tmp_path / name)
    code, out = run(["check", "--config", str(config), "--json"], capsys)
    plan = json.loads(out)
    assert plan["teacher_cache"] == {"reasoning": {"teacher_outputs": False}}
    assert plan["methods"]["kd"]["teacher_cache"] and not plan["methods"]["sft"]["teacher_cache"]

    cache = tmp_path / "cache"
    code, out = run(["teacher-cache", *common, "--data", str(data), "--teacher", str(tmp_path / "teacher"),
                     "--out", str(cache)], capsys)
    assert code == 0, out
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["rows"] == 40 and manifest["top_k"] == 16 and manifest["token_id_dtype"] == "int16"

    loaded = []
    load_model = xkdbench.models.load_model
    monkeypatch.setattr(xkdbench.models, "load_model", lambda path, *a, **k: loaded.append(Path(path).name)
                        or load_model(path, *a, **k))
    distill = ["distill", *common, "--method", "kd", "--data", str(data), "--student", str(tmp_path / "student")]
    teacher = ["--teacher", str(tmp_path / "teacher")]
    code, out = run([*distill, *teacher, "--teacher-cache", str(cache), "--out", str(tmp_path / "cell")], capsys)
    assert code == 0, out
    summary = json.loads((tmp_path / "cell" / "train_summary.json").read_text())
    assert summary["teacher_forward_sequences"] == 0 and summary["teacher_cache_sequences"] == 2 * 4
    assert loaded == ["student"], "an off-policy cell on the cache must not even load the teacher"

    code, out = run([*distill, *teacher, "--out", str(tmp_path / "c2")], capsys)
    assert code == 2 and "--teacher-cache: required" in out and "teacher_cache.mode: live" in out
    code, out = run([*distill, "--teacher", str(tmp_path / "other_teacher"), "--teacher-cache", str(cache),
                     "--out", str(tmp_path / "c3")], capsys)
    assert code == 2 and "built from other teacher weights" in out and "rebuild it" in out
    (cache / "logprobs.npy").write_bytes((cache / "logprobs.npy").read_bytes()[:-2])
    code, out = run([*distill, *teacher, "--teacher-cache", str(cache), "--out", str(tmp_path / "c4")], capsys)
    assert code == 2 and "logprobs.npy has" in out and "truncated" in out
    assert not any((tmp_path / c).exists() for c in ("c2", "c3", "c4"))
