"""Methods as rules (xkdbench/external.py): the config entry, the cell's inputs and the outputs contract.

The end-to-end run of the worked example (TRL's GKDTrainer as the rule `trl_gkd`) is the smoke study
(tests/workflow/test_workflow.py, marked slow)."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from tests.cli.test_cli import SMOKE, run, write_config
from tests.scripts import load_script
from xkdbench import stages
from xkdbench.config import ConfigError, load_config
from xkdbench.external import ContractError, declarations, load_declaration

ROOT = Path(__file__).resolve().parents[1]
TRL_ENTRY = {"name": "trl_gkd", "method": "external", "rule": "trl_gkd", "beta": 0.5, "student_data_fraction": 1.0}


def config_with(tmp_path, entry: dict) -> Path:
    return write_config(tmp_path, methods=[{"name": "sft", "method": "sft"}, entry], report={})


# -- the config entry -----------------------------------------------------------------------------
def test_the_smoke_study_declares_trl_gkd_beside_gkd():
    cfg = load_config(SMOKE)
    trl, gkd = cfg.method("trl_gkd"), cfg.method("gkd")
    assert trl.external and trl.rule == "trl_gkd" and not gkd.external
    assert trl.settings == {k: gkd.settings[k] for k in ("beta", "student_data_fraction")}
    plan = stages.check(SMOKE)["methods"]
    assert plan["trl_gkd"] == {"method": "external", "rule": "trl_gkd", "needs_teacher": True,
                               "uses_teacher_outputs": False, "learns_reward": False, "teacher_cache": False}
    assert set(declarations()) >= {"trl_gkd"}


@pytest.mark.parametrize("change, message", [
    ({"rule": None}, r"config.methods\[1\].rule: required for method: external"),
    ({"rule": "trl_gdk"}, r"config.methods\[1\].rule: 'trl_gdk' is not a declared external rule; declared in .*: "
                          r"trl_gkd"),
    ({"beta": None}, r"config.methods\[1\].settings.beta: required by rule 'trl_gkd'"),
    ({"betta": 0.5}, r"config.methods\[1\].settings: unknown setting\(s\) 'betta' for rule 'trl_gkd'; allowed: beta, "
                     r"student_data_fraction"),
    ({"beta": 1.5}, r"config.methods\[1\].settings.beta: 1.5 is out of range; allowed: \[0, 1\]"),
    ({"student_data_fraction": "all"}, r"config.methods\[1\].settings.student_data_fraction: expected float"),
])
def test_a_wrong_external_entry_names_the_field(tmp_path, change, message):
    entry = {k: v for k, v in {**TRL_ENTRY, **change}.items() if v is not None}
    with pytest.raises(ConfigError, match=message):
        load_config(config_with(tmp_path, entry))


def test_only_an_external_entry_names_a_rule(tmp_path):
    with pytest.raises(ConfigError, match=r"config.methods\[1\].rule: only an external method"):
        load_config(config_with(tmp_path, {"name": "g", "method": "gkd", "rule": "trl_gkd"}))


def test_a_bad_declaration_names_its_file_and_key(tmp_path):
    path = tmp_path / "my_rule.yaml"
    path.write_text(yaml.safe_dump({"rule": "my_rule", "settings": {"alpha": {"type": "flot"}}}))
    with pytest.raises(ConfigError, match=r"my_rule.yaml: settings.alpha.type: 'flot' is not allowed"):
        load_declaration(path)
    path.write_text(yaml.safe_dump({"rule": "other", "settings": {}}))
    with pytest.raises(ConfigError, match=r"my_rule.yaml: rule: expected 'my_rule'"):
        load_declaration(path)
    path.write_text(yaml.safe_dump({"rule": "my_rule", "settings": {"k": {"type": "int", "default": 0.5}}}))
    with pytest.raises(ConfigError, match=r"settings.k.default: expected int"):
        load_declaration(path)


def test_distill_refuses_an_external_method(tmp_path, capsys):
    code, out = run(["distill", "--config", str(SMOKE), "--task", "reasoning", "--method", "trl_gkd", "--data", "d",
                     "--teacher", "t", "--student", "s", "--out", str(tmp_path / "c")], capsys)
    assert code == 2 and "'trl_gkd' is an external method, trained by the Snakemake rule 'trl_gkd'" in out


# -- the cell's inputs and the outputs contract ---------------------------------------------------
@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A tiny reasoning study with one external variant: prepared data, tokenizer, a teacher and a student."""
    from xkdbench.models import ModelSpec, build_model, load_tokenizer

    tmp = tmp_path_factory.mktemp("external")
    sizes = {"train": 24, "warmup": 8, "validation": 8, "test": 8}
    config = write_config(
        tmp, tasks={"reasoning": {"options": {"difficulty": 0, "sizes": sizes}, "max_target_tokens": 24}},
        methods=[TRL_ENTRY], report={}, teacher_cache={"mode": "live"}, fractions=[0.5, 1.0],
        distill={"steps": 3, "batch_size": 4, "warmup_steps": 1, "log_every": 1},
        evaluation={"batch_size": 8, "samples_per_input": 2, "sampled_fractions": [1.0], "sampled_inputs": 2})
    data, tok = tmp / "data", tmp / "tok"
    stages.prepare_data(config, task="reasoning", out=data)
    stages.train_tokenizer(config, task="reasoning", data=data, out=tok)
    spec = ModelSpec(family="llama", d_model=16, n_layers=1, n_heads=2, d_ff=32)
    for name, seed in (("teacher", 1), ("student", 2)):
        build_model(spec, load_tokenizer(tok), seed=seed).save(tmp / name)
    return {"config": config, "data": data, "tokenizer": tok, "teacher": tmp / "teacher", "student": tmp / "student",
            "root": tmp}


def write_inputs(study, cell: Path, fraction: float = 0.5, seed: int = 3) -> dict:
    return stages.cell_inputs(study["config"], task="reasoning", method="trl_gkd", fraction=fraction, seed=seed,
                              data=study["data"], tokenizer=study["tokenizer"], teacher=study["teacher"],
                              student=study["student"], out=cell / "inputs")


def test_cell_inputs_are_the_examples_and_order_of_an_in_house_cell(study, tmp_path):
    from xkdbench.core.data import StepLoader

    cell = write_inputs(study, tmp_path)
    task = stages.load_task(load_config(study["config"]), "reasoning", study["data"])
    _, prompts, targets = stages.split_texts(task, "train", 0.5)
    rows = [json.loads(line) for line in (tmp_path / "inputs" / "train.jsonl").read_text().splitlines()]
    assert rows == [{"prompt": p, "target": t} for p, t in zip(prompts, targets, strict=True)] and len(rows) == 12
    order = json.loads((tmp_path / "inputs" / "order.json").read_text())
    loader = StepLoader(rows, None, batch_size=4, grad_accum=1, seed=3)
    assert len(order) == 3 and order == [loader.step_indices(s) for s in range(3)]
    assert cell == json.loads((tmp_path / "inputs" / "cell.json").read_text())
    assert cell["settings"] == {"beta": 0.5, "student_data_fraction": 1.0} and cell["family"] == "llama"
    assert cell["training"]["steps"] == 3 and cell["max_target_tokens"] == 24 and cell["seed"] == 3
    assert cell["paths"]["student"] == str(study["student"])


def finished_cell(study, tmp_path, summary=None) -> Path:
    """A cell as a well-behaved rule leaves it: inputs, the student saved as the model, a summary."""
    from xkdbench.models import load_model

    cell = tmp_path / "cell"
    write_inputs(study, cell, fraction=1.0)
    student = load_model(study["student"])
    student.model.save_pretrained(cell / "model")  # a plain Hugging Face directory
    student.tokenizer.save_pretrained(cell / "model")
    summary = {"steps": 3, "seconds": 1.5, "tokens": 100} if summary is None else summary
    (cell / "train_summary.json").write_text(json.dumps(summary))
    return cell


def evaluate(study, cell: Path, fraction: float = 1.0) -> dict:
    return stages.evaluate_external(study["config"], task="reasoning", method="trl_gkd", fraction=fraction,
                                    data=study["data"], checkpoint=cell / "model", out=cell / "eval")


def test_a_cell_that_keeps_the_contract_is_evaluated_as_a_distill_cell(study, tmp_path, capsys):
    cell = finished_cell(study, tmp_path)
    code, out = run(["evaluate", "--config", str(study["config"]), "--task", "reasoning", "--method", "trl_gkd",
                     "--fraction", "1", "--data", str(study["data"]), "--checkpoint", str(cell / "model"),
                     "--out", str(cell / "eval")], capsys)
    assert code == 0, out
    metrics = json.loads((cell / "eval" / "metrics.json").read_text())
    assert metrics["num_inputs"] == 8 and metrics["sampling"]  # samples at evaluation.sampled_fractions
    assert evaluate(study, cell, fraction=0.5)["sampling"] == {}  # elsewhere greedy only, as a distill cell


@pytest.mark.parametrize("damage, message", [
    ("no model", r"model: missing \(no model directory\); rule 'trl_gkd' must write <cell>/model"),
    ("no weights", r"model: not a loadable model \(.*\); rule 'trl_gkd' must write"),
    ("bad config", r"model: not a loadable model \(.*\); rule 'trl_gkd' must write"),
    ("no summary", r"train_summary.json: missing; rule 'trl_gkd' must write"),
    ("summary without seconds", r"train_summary.json: 'seconds' is missing"),
    ("summary not json", r"train_summary.json: does not parse as JSON"),
    ("other budget", r"train_summary.json: steps: 5, but the study's distillation budget for this task is 3"),
    ("other vocabulary", r"model: vocabulary of 7 tokens, the student initialisation's has"),
])
def test_outputs_that_break_the_contract_are_refused_naming_the_file(study, tmp_path, damage, message):
    cell = finished_cell(study, tmp_path, summary={"steps": 5, "seconds": 1.0} if damage == "other budget" else None)
    if damage == "no model":
        shutil.rmtree(cell / "model")
    elif damage == "no weights":
        (cell / "model" / "model.safetensors").unlink()
    elif damage == "bad config":
        (cell / "model" / "config.json").write_text("{not json")
    elif damage == "no summary":
        (cell / "train_summary.json").unlink()
    elif damage == "summary without seconds":
        (cell / "train_summary.json").write_text(json.dumps({"steps": 3}))
    elif damage == "summary not json":
        (cell / "train_summary.json").write_text('{"steps": 3, "sec')
    elif damage == "other vocabulary":
        config = json.loads((cell / "model" / "config.json").read_text())
        (cell / "model" / "config.json").write_text(json.dumps({**config, "vocab_size": 7}))
        (cell / "model" / "model.safetensors").unlink()
        from transformers import AutoConfig, AutoModelForCausalLM

        AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(cell / "model")).save_pretrained(cell / "model")
    with pytest.raises(ContractError, match=message):
        evaluate(study, cell)
    assert not (cell / "eval" / "metrics.json").exists()


def test_evaluate_method_is_for_external_cells_only(study, tmp_path):
    with pytest.raises(ConfigError, match="--method: 'sft' is trained by the suite"):
        stages.evaluate_external(SMOKE, task="reasoning", method="sft", data=study["data"],
                                 checkpoint=tmp_path / "model", out=tmp_path / "eval")


# -- the workflow ---------------------------------------------------------------------------------
def test_a_declared_rule_that_is_not_defined_stops_the_workflow(tmp_path):
    from tests.workflow.test_workflow import OFFLINE, SNAKEMAKE, workflow_copy

    work = workflow_copy(tmp_path)
    rules = work / "workflows" / "rules" / "external"
    shutil.copy(rules / "trl_gkd.yaml", rules / "my_gkd.yaml")
    (rules / "my_gkd.yaml").write_text((rules / "my_gkd.yaml").read_text().replace("rule: trl_gkd", "rule: my_gkd"))
    config = yaml.safe_load((work / "workflows/config/smoke.yaml").read_text())
    config["methods"].append({**TRL_ENTRY, "name": "my_gkd", "rule": "my_gkd"})
    config["report"] = {}
    (work / "workflows/config/smoke.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    out = subprocess.run(SNAKEMAKE + ["-n", "--cores", "2", "--configfile", "workflows/config/smoke.yaml"], cwd=work,
                         env=OFFLINE, capture_output=True, text=True)
    assert out.returncode != 0
    assert "config.methods[8].rule: 'my_gkd' is declared but no rule of that name is defined" in out.stdout + out.stderr


# -- the worked example's matched loss normalisation -----------------------------------------------
def test_trl_gkd_divides_an_on_policy_batch_by_its_own_tokens(study, tmp_path):
    """TRL divides a batch's summed JSD by num_items_in_batch, the gold batch's token count even when the
    batch trained on is the student's samples; the worked example divides by the tokens summed over."""
    pytest.importorskip("trl")
    module = load_script("workflows/rules/external/trl_gkd.py")
    from datasets import Dataset

    from xkdbench.config import TrainingConfig
    from xkdbench.losses import generalized_jsd
    from xkdbench.models import load_model

    student, teacher = load_model(study["student"]), load_model(study["teacher"])
    args = module.GKDConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, beta=0.5, report_to="none",
                            max_steps=1, per_device_train_batch_size=2)
    trainer = module.SuiteMatchedGKDTrainer(model=student.model, teacher_model=teacher.model, args=args,
                                            train_dataset=Dataset.from_list([{"input_ids": [1]}]),
                                            processing_class=student.tokenizer)
    trainer.training, trainer.counts = TrainingConfig(), {"tokens": 0, "teacher_forward_sequences": 0}
    torch.manual_seed(0)
    ids = torch.randint(4, len(student.tokenizer), (2, 9))
    labels = ids.clone()
    labels[:, :4] = -100  # the prompt
    labels[1, 7:] = -100  # a sample that stopped early
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    loss = trainer.compute_loss(student.model, inputs, num_items_in_batch=torch.tensor(3))  # 3 gold tokens
    with torch.no_grad():
        s, t = student.model(input_ids=ids).logits[:, :-1], teacher.model(input_ids=ids).logits[:, :-1]
    mask = (labels[:, 1:] != -100).float()
    expected = (generalized_jsd(s, t, beta=0.5) * mask).sum() / mask.sum()
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)
    assert trainer.counts == {"tokens": 8, "teacher_forward_sequences": 2}
