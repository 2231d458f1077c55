"""Strict config loading: every mistake is named with its dotted path and the allowed values."""
from __future__ import annotations

import pytest
import yaml

from xkdbench.config import ConfigError, ExperimentConfig, TrainingConfig, from_dict, load_config


def test_defaults_and_int_to_float():
    cfg = from_dict(TrainingConfig, {"lr": 1, "steps": 3})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float) and cfg.steps == 3


@pytest.mark.parametrize("data,message", [
    ({"stepz": 3}, "config: unknown key(s) 'stepz'; allowed:"),
    ({"steps": 0}, "config.steps: 0 is out of range; allowed: [1, inf)"),
    ({"steps": 2.5}, "config.steps: expected int"),
    ({"steps": True}, "config.steps: expected int"),
    ({"lr": 0}, "config.lr: 0.0 is out of range; allowed: (0, inf)"),
    ({"schedule": "step"}, "config.schedule: 'step' is not allowed; allowed: constant, linear, cosine"),
])
def test_training_config_errors(data, message):
    with pytest.raises(ConfigError) as error:
        from_dict(TrainingConfig, data)
    assert message in str(error.value)


def experiment(**overrides):
    base = {"tasks": {"reasoning": {}}, "methods": [{"name": "sft", "method": "sft"}]}
    base.update(overrides)
    return base


@pytest.mark.parametrize("data,message", [
    (experiment(tasks={}), "config.tasks: at least one task is required"),
    (experiment(tasks={"summarisation": {}}), "config.tasks: 'summarisation' is not allowed; allowed: reasoning, summarization, translation"),
    (experiment(methods=[{"name": "x", "method": "gdk"}]), "config.methods[0].method: 'gdk' is not allowed; allowed:"),
    (experiment(methods=[{"method": "sft"}]), "config.methods[0].name: required"),
    (experiment(methods=[{"name": "a", "method": "sft"}, {"name": "a", "method": "sft"}]), "config.methods[1].name: 'a' is used twice"),
    (experiment(methods=[{"name": "g", "method": "gkd", "beta": 2}]), "config.methods[0].settings"),
    (experiment(fractions=[0.5, 0]), "config.fractions[1]: 0.0 is out of range; allowed: (0, 1]"),
    (experiment(device="tpu"), "config.device: 'tpu' is not allowed"),
    (experiment(tasks={"reasoning": {"teacher_training": {"steps": -1}}}), "config.tasks.reasoning.teacher_training.steps"),
    (experiment(models={"teacher": {"family": "gpt"}}), "config.models.teacher.family: unknown model family 'gpt'; allowed: llama, t5"),
    (experiment(models={"student": {"d_model": 30, "n_heads": 4}}), "config.models.student.d_model (30) must be divisible"),
    (experiment(evaluation={"samples_per_input": 1}), "config.evaluation.samples_per_input"),
    (experiment(methods=[{"name": "g", "method": "gkd", "tasks": ["translation"]}]),
     "config.methods[0].tasks: 'translation' is not allowed; allowed: reasoning"),
    (experiment(methods=[{"name": "g", "method": "gkd", "fractions": [0.5]}]),
     "config.methods[0].fractions: 0.5 is not allowed; allowed: 1.0"),
    (experiment(methods=[{"name": "g", "method": "gkd", "tasks": []}]), "config.methods[0].tasks: an empty list"),
    (experiment(tasks={"reasoning": {"fractions": [0.5]}}),
     "config.tasks.reasoning.fractions: 0.5 is not allowed; allowed: 1.0"),
    (experiment(tasks={"reasoning": {"fractions": []}}), "config.tasks.reasoning.fractions: an empty list"),
    (experiment(methods=[{"name": "g", "method": "gkd", "fractions": "1"}]), "config.methods[0].fractions: expected a list"),
    (experiment(methods=[{"name": "g", "method": "gkd", "stream": -1}]), "config.methods[0].stream: -1 is out of range"),
    (experiment(models={"teacher": {"family": "t5"}, "student": {"family": "llama"}}),
     "config.models.student.family: the student is 'llama' but the teacher is 't5'; distillation across model "
     "families is not supported"),
    (experiment(distill={"disable_dropout": "no"}), "config.distill.disable_dropout: expected bool"),
    (experiment(teacher_cache={"mode": "topk"}), "config.teacher_cache.mode: 'topk' is not allowed; allowed: live, "
                                                 "top_k, exact"),
    (experiment(teacher_cache={"mode": False}), "config.teacher_cache.mode: expected str"),  # YAML's bare `off`
    (experiment(teacher_cache={"mode": "top_k", "top_k": 0}), "config.teacher_cache.top_k: 0 is out of range"),
    (experiment(teacher_cache={"mode": "top_k", "top_k": 1000}),
     "config.teacher_cache.top_k: 1000 keeps the whole vocabulary (1000 tokens); allowed: 1..999, or mode: exact"),
    (experiment(teacher_cache={"batch_size": 0}), "config.teacher_cache.batch_size: 0 is out of range"),
])
def test_experiment_errors(data, message):
    with pytest.raises(ConfigError) as error:
        from_dict(ExperimentConfig, data)
    assert message in str(error.value)


def test_method_entry_settings_sit_beside_name(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(experiment(methods=[
        {"name": "gkd_rkl_on", "method": "gkd", "divergence": "reverse_kl", "student_data_fraction": 1}])))
    cfg = load_config(path)
    entry = cfg.method("gkd_rkl_on")
    assert entry.method == "gkd" and entry.settings == {"divergence": "reverse_kl", "student_data_fraction": 1}
    with pytest.raises(ConfigError, match="--method: 'gkd' is not a method variant"):
        cfg.method("gkd")


def test_per_task_training_override():
    cfg = from_dict(ExperimentConfig, experiment(teacher_training={"steps": 100, "lr": 0.01},
                                                 tasks={"reasoning": {"teacher_training": {"steps": 7}}}))
    t = cfg.training("teacher_training", "reasoning")
    assert t.steps == 7 and t.lr == 0.01


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_variants_limited_to_tasks_and_fractions_have_only_their_cells():
    cfg = from_dict(ExperimentConfig, experiment(
        tasks={"reasoning": {}, "translation": {}}, fractions=[0.5, 1], seeds=[0, 1],
        methods=[{"name": "sft", "method": "sft"},
                 {"name": "grid", "method": "gkd", "divergence": "reverse_kl", "tasks": ["reasoning"], "fractions": [1]}]))
    grid = cfg.method("grid")
    assert grid.settings == {"divergence": "reverse_kl"}  # the two limits are not method settings
    assert grid.runs_on("reasoning") and grid.runs_on("reasoning", 1.0) and not grid.runs_on("reasoning", 0.5)
    assert not grid.runs_on("translation") and cfg.method("sft").runs_on("translation", 0.5)
    cells = cfg.cells()
    assert [c for c in cells if c[1] == "grid"] == [("reasoning", "grid", 1.0, 0), ("reasoning", "grid", 1.0, 1)]
    assert len(cells) == 2 * 2 * 2 + 2  # sft everywhere, grid on one (task, fraction)


def test_a_task_limited_to_some_fractions_has_cells_only_there():
    cfg = from_dict(ExperimentConfig, experiment(
        tasks={"reasoning": {"fractions": [1]}, "translation": {}}, fractions=[0.1, 0.5, 1], seeds=[0, 1],
        methods=[{"name": "sft", "method": "sft"}, {"name": "low", "method": "sft", "fractions": [0.1, 1]}]))
    assert cfg.task_fractions("reasoning") == [1.0] and cfg.task_fractions("translation") == [0.1, 0.5, 1.0]
    cells = cfg.cells()
    assert {(t, f) for t, _, f, _ in cells} == {("reasoning", 1.0), ("translation", 0.1), ("translation", 0.5),
                                                ("translation", 1.0)}
    # sft: 1 + 3 fractions, low: 1 + 2 fractions (its own limit applies within the task's), 2 seeds each
    assert len(cells) == (4 + 3) * 2
    assert ("translation", "low", 0.5, 0) not in cells and ("reasoning", "low", 1.0, 1) in cells


# The paper study is the default study at the paper's scale: every method variant (with the settings
# tuned on validation) and every claim. A deliberate difference is listed here, with its reason.
PAPER_STUDY_EXCLUSIONS: dict[str, str] = {}  # variant or claim text -> why the paper study leaves it out


def test_the_paper_study_has_every_method_and_claim_of_the_default_study():
    from xkdbench.reporting.settings import report_settings

    default, paper = load_config("workflows/config/default.yaml"), load_config("workflows/config/paper.yaml")
    variants = {m.name: m for m in paper.methods}
    for entry in default.methods:
        if entry.name in PAPER_STUDY_EXCLUSIONS:
            continue
        assert entry.name in variants, f"method variant {entry.name!r} of the default study is missing from paper.yaml"
        twin = variants[entry.name]
        assert (twin.method, twin.settings, twin.stream) == (entry.method, entry.settings, entry.stream), (
            f"{entry.name!r} differs in paper.yaml")
        # the default study may run a variant on fewer tasks to fit its budget, never the paper study
        assert all(twin.runs_on(task) for task in paper.tasks if entry.runs_on(task)), (
            f"{entry.name!r} runs on fewer tasks in paper.yaml")
    paper_claims = {(c.text, c.a, c.b, c.measure, c.control) for c in report_settings(paper).claims}
    for claim in report_settings(default).claims:
        if claim.text in PAPER_STUDY_EXCLUSIONS:
            continue
        assert (claim.text, claim.a, claim.b, claim.measure, claim.control) in paper_claims, (
            f"claim {claim.text!r} ({claim.a} vs {claim.b}, {claim.measure}) is missing from paper.yaml")


def test_a_task_with_its_own_seeds_has_cells_only_for_them():
    cfg = from_dict(ExperimentConfig, experiment(
        tasks={"reasoning": {"seeds": [0, 1, 2, 3, 4]}, "translation": {}}, seeds=[0, 1, 2]))
    assert cfg.task_seeds("reasoning") == [0, 1, 2, 3, 4] and cfg.task_seeds("translation") == [0, 1, 2]
    assert [s for t, _, _, s in cfg.cells() if t == "reasoning"] == [0, 1, 2, 3, 4]
    assert [s for t, _, _, s in cfg.cells() if t == "translation"] == [0, 1, 2]


@pytest.mark.parametrize("seeds,message", [
    ([], "an empty list runs no cell; allowed: one or more distinct integers >= 0"),
    ([0, 1, 0], "seed 0 is listed twice; allowed: distinct integers >= 0"),
    ([0, -1], "[1]: -1 is out of range; allowed: [0, inf)"),
])
@pytest.mark.parametrize("where", ["study", "task"])
def test_bad_seed_lists_are_named(seeds, message, where):
    data = (experiment(seeds=seeds) if where == "study"
            else experiment(tasks={"reasoning": {"seeds": seeds}}))
    with pytest.raises(ConfigError) as error:
        from_dict(ExperimentConfig, data)
    prefix = "config.seeds" if where == "study" else "config.tasks.reasoning.seeds"
    assert f"{prefix}{message if message.startswith('[') else ': ' + message}" in str(error.value)


def test_a_task_without_its_own_seeds_keeps_the_report_fingerprint():
    """Tasks' `seeds` left out must not rerun a finished study's report; set, it reruns only the report."""
    from xkdbench.fingerprints import fingerprints

    plain = fingerprints(from_dict(ExperimentConfig, experiment(seeds=[0, 1])))
    same = fingerprints(from_dict(ExperimentConfig, experiment(seeds=[0, 1], tasks={"reasoning": {"seeds": None}})))
    own = fingerprints(from_dict(ExperimentConfig, experiment(seeds=[0, 1], tasks={"reasoning": {"seeds": [0, 1, 2]}})))
    assert plain == same
    assert own["report"] != plain["report"] and {k: v for k, v in own.items() if k != "report"} == {
        k: v for k, v in plain.items() if k != "report"}
