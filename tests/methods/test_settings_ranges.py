"""Every numeric setting's bounds, at the bound: each value is refused with a message that names the
field (as `method_config` reports it) and the allowed interval, or accepted at the edge it includes."""
from __future__ import annotations

import json
import math
import re

import pytest

from xkdbench.config import ConfigError
from xkdbench.methods import method_config

# (method, settings, field, allowed interval); the settings' value is out of range
REFUSED = [
    ("token_divergence", {"loss_temperature": 0.0}, "loss_temperature", "(0, inf)"),
    ("token_divergence", {"loss_temperature": -1.0}, "loss_temperature", "(0, inf)"),
    ("xkd_div", {"ava_alpha": 0.0}, "ava_alpha", "(0, inf)"),
    ("pbkd_offline", {"ml_fit_lr": 0.0}, "ml_fit_lr", "(0, inf)"),
    ("pbkd_offline", {"reward_lr": 0.0}, "reward_lr", "(0, inf)"),
    ("pbkd_offline", {"reward_weight_decay": -0.1}, "reward_weight_decay", "[0, inf)"),
    ("pbkd_offline", {"reward_l2": -0.1}, "reward_l2", "[0, inf)"),
    ("pbkd_offline", {"kl_weight": -0.1}, "kl_weight", "[0, inf)"),
    ("bellman_distill", {"temperature": 0.0}, "temperature", "(0, inf)"),
    ("distillm", {"schedule_steps": 0}, "schedule_steps", "[1, inf)"),
    ("amm", {"on_policy_weight": -0.1}, "on_policy_weight", "[0, 1]"),
    ("amm", {"on_policy_weight": 1.5}, "on_policy_weight", "[0, 1]"),
    ("amm", {"adversary_lr": 0.0}, "adversary_lr", "(0, inf)"),
    ("amm", {"num_samples": 0}, "num_samples", "[1, inf)"),
    ("distillm", {"initial_threshold": 1.5}, "initial_threshold", "[0, 1]"),
    ("distillm", {"threshold_increment": 1.5}, "threshold_increment", "[0, 1]"),
    ("pbkd_offline", {"pair_batch_size": 0}, "pair_batch_size", "[1, inf)"),
    # X-KD's AVRIL reward: both edges of the discount, and the two weights' lower edge
    ("xkd_div", {"discount": -0.1}, "discount", "[0, 1]"),
    ("xkd_div", {"discount": 1.5}, "discount", "[0, 1]"),
    ("xkd_div", {"reward_likelihood_weight": -0.1}, "reward_likelihood_weight", "[0, inf)"),
    ("xkd_div", {"kl_weight": -0.1}, "kl_weight", "[0, inf)"),
    ("supervised_kd", {"hard_label_weight": -0.1}, "hard_label_weight", "[0, inf)"),
    ("mm_pbkd", {"rounds": 0}, "rounds", "[1, inf)"),
    # MM-PbKD checks AMM's settings and the preference settings too, under the same entry
    ("mm_pbkd", {"adversary_lr": 0.0}, "adversary_lr", "(0, inf)"),
    ("mm_pbkd", {"pair_batch_size": 0}, "pair_batch_size", "[1, inf)"),
    ("minillm", {"teacher_mix_weight": -0.1}, "teacher_mix_weight", "[0, 1]"),
    ("minillm", {"teacher_mix_weight": 1.5}, "teacher_mix_weight", "[0, 1]"),
    ("minillm", {"clip_range": 0.0}, "clip_range", "(0, 1]"),
    ("minillm", {"clip_range": 1.5}, "clip_range", "(0, 1]"),
    ("minillm", {"ppo_epochs": 0}, "ppo_epochs", "[1, inf)"),
    ("minillm", {"discount": -0.1}, "discount", "[0, 1]"),
    ("minillm", {"discount": 1.5}, "discount", "[0, 1]"),
    ("distillm", {"loss_tolerance": -0.1}, "loss_tolerance", "[0, inf)"),
    ("distillm", {"replay_buffer_size": 0}, "replay_buffer_size", "[1, inf)"),
    ("distillm", {"loss_temperature": 0.0}, "loss_temperature", "(0, inf)"),  # the divergence's own settings
    ("bellman_distill", {"gamma": -0.1}, "gamma", "[0, 1]"),
    ("bellman_distill", {"gamma": 1.5}, "gamma", "[0, 1]"),
    ("bellman_distill", {"q_floor": 0.0}, "q_floor", "(-inf, 0)"),
    ("pbkd_offline", {"reward_steps": 0}, "reward_steps", "[1, inf)"),
    ("pbkd_online", {"reward_steps": 0}, "reward_steps", "[1, inf)"),  # the offline settings, checked online too
    ("amm", {"adversary_weight_decay": -0.1}, "adversary_weight_decay", "[0, inf)"),
    ("amm", {"adversary_rank": 0}, "adversary_rank", "[1, inf)"),
    ("xkd_div", {"student_data_fraction": 1.5}, "student_data_fraction", "[0, 1]"),  # GKD's settings, under X-KD
    ("gkd", {"student_data_fraction": -0.1}, "student_data_fraction", "[0, 1]"),
    ("pbkd_offline", {"preference_weight": -0.1}, "preference_weight", "[0, inf)"),
    ("pbkd_offline", {"confidence_slack": -0.1}, "confidence_slack", "[0, inf)"),
    ("mm_pbkd", {"confidence_slack": -0.1}, "confidence_slack", "[0, inf)"),
]


@pytest.mark.parametrize("method,settings,field,interval", REFUSED)
def test_an_out_of_range_setting_is_refused_naming_it(method, settings, field, interval):
    value = settings[field]
    message = f"methods[0].settings.{field}: {value!r} is out of range; allowed: {interval}"
    with pytest.raises(ConfigError, match="^" + re.escape(message) + "$"):
        method_config(method, settings, "methods[0].settings")


@pytest.mark.parametrize("method,settings", [
    ("pbkd_offline", {"reward_weight_decay": 0.0, "reward_l2": 0.0, "kl_weight": 0.0}),
    ("amm", {"on_policy_weight": 0.0}), ("amm", {"on_policy_weight": 1.0}),
    ("distillm", {"schedule_steps": 1}), ("supervised_kd", {"hard_label_weight": 0.0}),
    ("mm_pbkd", {"rounds": 1}), ("mm_pbkd", {"preference_weight": 0.0, "on_policy_weight": 0.0}),
    ("minillm", {"teacher_mix_weight": 0.0, "discount": 0.0, "ppo_epochs": 1}),
    ("minillm", {"teacher_mix_weight": 1.0, "clip_range": 1.0, "discount": 1.0}),
    ("distillm", {"loss_tolerance": 0.0, "replay_buffer_size": 1}),
    ("bellman_distill", {"gamma": 0.0, "q_floor": -1e-9}), ("bellman_distill", {"gamma": 1.0}),
    ("pbkd_offline", {"reward_steps": 1}), ("amm", {"adversary_weight_decay": 0.0, "adversary_rank": 1}),
    ("pbkd_offline", {"preference_weight": 0.0, "confidence_slack": 0.0}), ("gkd", {"student_data_fraction": 0.0}),
    ("xkd_div", {"discount": 0.0, "reward_likelihood_weight": 0.0, "kl_weight": 0.0}), ("xkd_div", {"discount": 1.0}),
])
def test_the_closed_edges_are_accepted(method, settings):
    config = method_config(method, settings, "methods[0].settings")
    assert all(getattr(config, k) == v for k, v in settings.items())


def test_an_unknown_method_names_the_entry_not_its_settings():
    with pytest.raises(Exception, match=r"^methods\[2\]\.method: unknown method 'nope'; known methods: "):
        method_config("nope", {}, "methods[2].settings")


# -- pieces the methods' own tests left at one setting ------------------------------------------------
def test_an_unknown_q_map_is_refused_naming_the_choices():
    import torch

    from xkdbench.methods.xkd_reward import Q_MAPS, q_values

    with pytest.raises(ConfigError, match="^" + re.escape(f"q_map: 'bad' is not allowed; allowed: {', '.join(Q_MAPS)}")):
        q_values(torch.zeros(1, 2, 5), torch.zeros(1, 2, dtype=torch.long), "bad")


def test_code_advantages_of_one_token_targets():
    """One token each: G = r (divided by 1), whitened over the batch: (r - mean) / sqrt(var + 1e-8)."""
    import torch

    from xkdbench.methods.minillm import code_advantages

    rewards = torch.tensor([[1.0], [3.0]])
    out = code_advantages(rewards, torch.ones(2, 1), discount=0.9)
    std = torch.tensor(2.0).sqrt()  # unbiased variance of (1, 3) is 2
    torch.testing.assert_close(out, torch.tensor([[-1.0], [1.0]]) / (std ** 2 + 1e-8).sqrt())


def test_soft_q_of_bf16_logits_is_computed_in_float32():
    import torch

    from xkdbench.methods.bellman_distill import soft_q

    logits = torch.randn(2, 3, 7, generator=torch.Generator().manual_seed(0)).bfloat16()
    q = soft_q(logits, temperature=0.7, q_floor=-5.0)
    assert q.dtype == torch.float32
    torch.testing.assert_close(q, soft_q(logits.float(), temperature=0.7, q_floor=-5.0), rtol=0, atol=0)


def test_amm_fully_on_policy_trains(tmp_path, tokenizer, toy_data):
    """on_policy_weight 1: every row is the student's sample, no gold token is counted."""
    from tests.core.test_trainer import run

    _, summary = run(tokenizer, "llama", toy_data, tmp_path, method="amm", settings={"on_policy_weight": 1.0},
                     steps=2)
    records = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert summary["generated_tokens"] > 0 and all(math.isfinite(r["loss"]) for r in records)


def test_loading_a_pbkd_reward_leaves_the_student_unchanged(tmp_path, tokenizer):
    import torch

    from tests.conftest import tiny_model
    from xkdbench.methods.pbkd import REWARD_NAME, RewardModel, load_learned_reward

    student = tiny_model(tokenizer, "llama", seed=1)
    other = RewardModel(tiny_model(tokenizer, "llama", seed=7).model, student.tokenizer)
    torch.save(other.state_dict(), tmp_path / f"{REWARD_NAME}.pt")
    before = {k: v.clone() for k, v in student.model.state_dict().items()}
    load_learned_reward(tmp_path, student)
    assert all(torch.equal(before[k], v) for k, v in student.model.state_dict().items())


@pytest.mark.parametrize("method,settings,training,message", [
    ("pbkd_online", {"rounds": 5}, {"steps": 4},
     "distill.steps: 4 steps cannot hold 5 preference rounds (rounds must be at most the steps)"),
    ("mm_pbkd", {"rounds": 5}, {"steps": 4},
     "distill.steps: 4 steps cannot hold 5 preference rounds (rounds must be at most the steps)"),
    ("distillm", {}, {"validate_every": 0},
     "distill.validate_every: 0 is not allowed for distillm; allowed: >= 1 (its adaptive schedule moves only on "
     "validation losses)"),
])
def test_training_settings_a_method_cannot_run_with_are_refused(method, settings, training, message):
    from xkdbench.config import TrainingConfig
    from xkdbench.methods import METHODS

    with pytest.raises(ConfigError, match="^" + re.escape(message) + "$"):
        METHODS.get(method).check_training(method_config(method, settings), TrainingConfig(**training), "distill")


@pytest.mark.parametrize("method", ["pbkd_online", "mm_pbkd"])
def test_one_preference_round_per_step_is_allowed(method):
    from xkdbench.config import TrainingConfig
    from xkdbench.methods import METHODS

    METHODS.get(method).check_training(method_config(method, {"rounds": 5}), TrainingConfig(steps=5), "distill")


@pytest.mark.parametrize("settings,message", [
    ({"adversary": "closed_form"}, "m.adversary: 'closed_form' is not allowed; allowed: 'learned' (the preference term trains "
                              "the adversary)"),
    ({"on_policy_weight": 0.0}, "m.on_policy_weight: 0 is not allowed with preference_weight > 0; allowed: (0, 1] "
                                "(the pairs' rejected outputs are the on-policy samples)"),
])
def test_mm_pbkd_refuses_settings_its_preference_term_cannot_use(settings, message):
    with pytest.raises(ConfigError, match="^" + re.escape(message) + "$"):
        method_config("mm_pbkd", settings, "m")


def test_unknown_preference_labels_are_refused_naming_the_choices():
    with pytest.raises(ConfigError, match=re.escape("m.preference_labels: 'human' is not allowed; allowed: teacher, oracle")):
        method_config("pbkd_offline", {"preference_labels": "human"}, "m")


def test_mm_pbkd_asks_for_the_oracle_only_when_its_preference_term_is_on():
    from xkdbench.methods import METHODS

    needs = METHODS.get("mm_pbkd").needs_oracle
    assert needs(method_config("mm_pbkd", {"preference_labels": "oracle"}))
    assert not needs(method_config("mm_pbkd", {"preference_labels": "oracle", "preference_weight": 0.0}))
    assert not needs(method_config("mm_pbkd", {"preference_labels": "teacher"}))


def test_minillm_refuses_the_pretraining_term_naming_why():
    message = ("m.lm_loss_weight: 0.5 is not allowed; allowed: 0 (the pre-training-corpus language-model term needs "
               "a corpus the embedded tasks do not have)")
    with pytest.raises(ConfigError, match="^" + re.escape(message) + "$"):
        method_config("minillm", {"lm_loss_weight": 0.5}, "m")


@pytest.mark.parametrize("module,name,what", [
    ("xkdbench.methods.xkd_reward", "HEAD_NAME", "an X-KD checkpoint must hold its reward head; was it trained with X-KD?"),
    ("xkdbench.methods.pbkd", "REWARD_NAME", "a PbKD checkpoint must hold its reward model; was it trained with PbKD?"),
    ("xkdbench.methods.mm_pbkd", "ADVERSARY_NAME",
     "an MM-PbKD checkpoint must hold its adversary; was it trained with MM-PbKD?"),
])
def test_a_learned_reward_without_its_file_is_refused_naming_the_method(tmp_path, tokenizer, module, name, what):
    import importlib

    from tests.conftest import tiny_model

    loaded = importlib.import_module(module)
    path = tmp_path / f"{getattr(loaded, name)}.pt"
    student = tiny_model(tokenizer, "llama")
    args = (tmp_path, method_config("mm_pbkd", {}), student) if module.endswith("mm_pbkd") else (tmp_path, student)
    with pytest.raises(FileNotFoundError, match="^" + re.escape(f"{path}: {what}") + "$"):
        loaded.load_learned_reward(*args)


def test_an_mm_pbkd_reward_needs_the_teacher_it_was_trained_with(tmp_path, tokenizer):
    import torch

    from tests.conftest import tiny_model
    from xkdbench.methods.amm import MomentAdversary
    from xkdbench.methods.mm_pbkd import ADVERSARY_NAME, load_learned_reward

    path = tmp_path / f"{ADVERSARY_NAME}.pt"
    torch.save(MomentAdversary(8, 2, "").state_dict(), path)  # a run whose teacher came from no directory
    message = (f"{path}: the learned reward needs the teacher the run was trained with, and the run's teacher was "
               "not loaded from a checkpoint directory")
    with pytest.raises(FileNotFoundError, match="^" + re.escape(message) + "$"):
        load_learned_reward(tmp_path, method_config("mm_pbkd", {}), tiny_model(tokenizer, "llama"))


@pytest.mark.parametrize("method,settings,outputs,teacher", [
    ("sft", {}, False, False),                       # the base class's answer: no SeqKD outputs
    ("pbkd_offline", {}, True, False),               # black-box: SeqKD's outputs are all it sees of the teacher
    ("pbkd_online", {}, True, False),
    ("mm_pbkd", {}, True, True),
    ("bellman_distill", {}, True, True),
    ("amm", {"on_policy_weight": 0.5}, True, True),   # its off-policy rows are the teacher's outputs
    ("amm", {"on_policy_weight": 1.0}, False, True),  # on-policy only
])
def test_which_methods_train_on_seqkd_outputs_and_load_a_teacher(method, settings, outputs, teacher):
    """What the workflow provides a cell: the teacher's SeqKD outputs, and a live teacher model."""
    from xkdbench.methods import METHODS

    cls, config = METHODS.get(method), method_config(method, settings)
    assert (cls.uses_teacher_outputs(config), cls.needs_teacher(config)) == (outputs, teacher)


def test_register_files_a_method_under_its_key(monkeypatch):
    from xkdbench.methods import METHODS
    from xkdbench.methods.base import register

    assert all(METHODS.get(name).key == name for name in METHODS.names())
    monkeypatch.setattr(METHODS, "_items", dict(METHODS._items))  # the registration below is undone after

    class Plain(METHODS.get("sft")):
        pass

    assert register("plain_for_a_test")(Plain) is Plain
    assert Plain.key == "plain_for_a_test" and METHODS.get("plain_for_a_test") is Plain


@pytest.mark.parametrize("method,settings,where,message", [
    ("amm", {"cost_to_go": "x"}, "m", "m.cost_to_go: 'x' is not allowed; allowed: mean, sum"),
    ("token_divergence", {"divergence": "x"}, "m", "m.divergence: unknown divergence 'x'; allowed: forward_kl, jsd, "
                                                   "reverse_kl, skew_forward_kl, skew_reverse_kl, total_variation"),
    ("sft", {"bogus": 1}, None, "settings: unknown key(s) 'bogus'; allowed: "),  # the default place named
])
def test_a_bad_choice_names_the_field_and_every_choice(method, settings, where, message):
    with pytest.raises(ConfigError, match="^" + re.escape(message) + "$"):
        method_config(method, settings) if where is None else method_config(method, settings, where)
