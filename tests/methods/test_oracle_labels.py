"""Oracle-labelled preference pairs (PbKD, MM-PbKD on embedded tasks): the higher oracle score is preferred,
whichever model wrote it, ties add no pair; the oracle sees each row's own training example; a variant
that needs the oracle is refused on a task without one, and a run without an oracle stops before work."""
from __future__ import annotations

import re

import pytest
import torch

from tests.conftest import tiny_model
from xkdbench.config import ConfigError, ExperimentConfig, SamplingConfig, TrainingConfig, from_dict
from xkdbench.core.context import TrainContext
from xkdbench.core.trainer import TrainSetup, train
from xkdbench.methods import METHODS, method_config
from xkdbench.methods.preference import PreferenceRounds
from xkdbench.models.batch import Batch

CPU = torch.device("cpu")


def batch(prompts: list[list[int]], targets: list[list[int]]) -> Batch:
    width_p, width_t = max(map(len, prompts)), max(map(len, targets))
    ids = lambda rows, width, left: torch.tensor([[0] * (width - len(r)) + r if left else r + [0] * (width - len(r))  # noqa: E731
                                                  for r in rows])
    mask = lambda rows, width, left: torch.tensor([[0] * (width - len(r)) + [1] * len(r) if left  # noqa: E731
                                                   else [1] * len(r) + [0] * (width - len(r)) for r in rows])
    return Batch(ids(prompts, width_p, True), mask(prompts, width_p, True), ids(targets, width_t, False),
                 mask(targets, width_t, False))


def test_the_higher_oracle_score_is_preferred_and_ties_add_no_pair():
    teacher = batch([[5, 6], [7]], [[10, 11], [12]])
    # two samples per input, in ctx.sample_student's order: input 0's two, then input 1's two
    samples = batch([[5, 6], [5, 6], [7], [7]], [[20], [21, 22], [23], [24, 25, 26]])
    rounds = PreferenceRounds(1, 4)
    rounds.add(teacher, samples, ([1.0, 0.0], [0.5, 1.0, 0.3, 0.0]))
    assert rounds.pairs == [([5, 6], [10, 11], [20]),  # teacher 1.0 over sample 0.5
                            ([7], [23], [12])]  # sample 0.3 over teacher 0.0: the student's output is preferred
    assert rounds.ties == 2  # 1.0 = 1.0 and 0.0 = 0.0
    teacher_labelled = PreferenceRounds(1, 4)
    teacher_labelled.add(teacher, samples)
    assert [(w, r) for _, w, r in teacher_labelled.pairs] == [([10, 11], [20]), ([10, 11], [21, 22]), ([12], [23]),
                                                              ([12], [24, 25, 26])]
    rounds.record(0, 3, loglik=-0.5, ml_loglik=-0.25, slack=0.5)
    state = rounds.state_dict()
    restored = PreferenceRounds(1, 4)
    restored.load_state_dict(state)
    assert restored.pairs == rounds.pairs and restored.ties == 2
    assert restored.records == [{"round": 0, "step": 4, "pairs": 2, "ties": 2, "loglik": -0.5, "ml_loglik": -0.25,
                                 "gap": 0.25, "slack": 0.5, "inside": True}]
    restored.records.append({})  # the restored run's own list: appending does not reach the saved state
    assert len(state["records"]) == 1
    # a checkpoint from before ties were counted restores with none counted
    older = PreferenceRounds(1, 4)
    older.load_state_dict({"pairs": state["pairs"], "records": []})
    assert older.ties == 0 and older.pairs == rounds.pairs and older.records == []


def test_the_context_scores_each_row_against_its_own_example(tokenizer):
    student = tiny_model(tokenizer, "llama")
    calls = []

    def oracle(indices, texts):
        calls.append((indices, texts))
        return [float(i) for i in indices]

    ctx = TrainContext(student, None, SamplingConfig(), max_new_tokens=8, device=CPU, use_bf16=False, seed=0,
                       oracle=oracle)
    rows = student.collate([[3, 4]] * 4, [[5, student.eos_id], [6, 7, student.eos_id], [8, student.eos_id], [9, student.eos_id]])
    assert ctx.oracle_scores((11, 42), rows, group=2) == [11.0, 11.0, 42.0, 42.0]
    assert calls[0][1] == student.decode(rows.target_ids, rows.target_mask)
    with pytest.raises(ValueError, match="4 rows cannot be 3 per each of 2 examples"):
        ctx.oracle_scores((11, 42), rows, group=3)
    no_oracle = TrainContext(student, None, SamplingConfig(), max_new_tokens=8, device=CPU, use_bf16=False, seed=0)
    with pytest.raises(RuntimeError, match=r"^this run has no oracle: the method must declare needs_oracle, and the "
                                           r"training data come from an embedded task$"):
        no_oracle.oracle_scores((11, 42), rows, group=2)


@pytest.mark.parametrize("method,settings", [
    ("pbkd_online", {"rounds": 2, "ml_fit_steps": 2, "pair_batch_size": 8}),
    ("mm_pbkd", {"rounds": 2, "ml_fit_steps": 2, "pair_batch_size": 8}),
])
def test_a_run_with_oracle_labels_stores_exactly_the_oracle_preferences(tmp_path, tokenizer, toy_data, method, settings,
                                                                         monkeypatch):
    """Oracle: the output's length in characters (so ties are rare and the check is independent of the
    method). Every stored pair prefers the longer text, its prompt is the example the oracle was asked
    about, and pairs + ties = every comparison made."""
    data = toy_data
    asked = []

    def oracle(indices, texts):
        asked.append(list(indices))
        return [float(len(t)) for t in texts]

    settings = {**settings, "preference_labels": "oracle"}
    cls, config = METHODS.get(method), method_config(method, settings)
    assert cls.needs_oracle(config)
    training = TrainingConfig(steps=4, batch_size=4, lr=1e-2, warmup_steps=1, log_every=1, checkpoint_every=100)
    student = tiny_model(tokenizer, "llama", seed=1)
    teacher = tiny_model(tokenizer, "llama", seed=2)
    with pytest.raises(ConfigError, match=re.escape(  # refused before any work
            f"{cls.__name__} with these settings scores its training texts with the task's oracle, and this run "
            "has none (embedded tasks have one; TrainSetup.oracle)")):
        train(TrainSetup(cls, config, student, data, training, 0, CPU, teacher=teacher, sampling=SamplingConfig(),
                         max_new_tokens=8), tmp_path / "none")
    assert not (tmp_path / "none" / "model").exists()

    captured = {}
    original_add = PreferenceRounds.add

    def spy(self, teacher_rows, samples, scores=None):
        captured.setdefault("calls", []).append((teacher_rows, samples, scores))
        original_add(self, teacher_rows, samples, scores)
        captured["rounds"] = self

    monkeypatch.setattr(PreferenceRounds, "add", spy)
    train(TrainSetup(cls, config, student, data, training, 0, CPU, teacher=teacher, sampling=SamplingConfig(),
                     max_new_tokens=8, oracle=oracle), tmp_path / "run")
    rounds = captured["rounds"]
    calls = captured["calls"]
    assert len(calls) == 2  # one per round start
    compared = sum(samples.size for _, samples, _ in calls)
    assert len(rounds.pairs) + rounds.ties == compared and len(rounds.pairs) > 0
    decode = lambda ids: student.decode(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))[0]  # noqa: E731
    for _, preferred, rejected in rounds.pairs:
        assert len(decode(preferred)) > len(decode(rejected))
    # the oracle was asked about the loader's own examples: each teacher row's prompt is data row `index`'s
    for (teacher_rows, _, _), indices in zip(calls, asked[::2], strict=True):
        for row, index in enumerate(indices):
            prompt = teacher_rows.prompt_ids[row][teacher_rows.prompt_mask[row].bool()].tolist()
            assert prompt == data.prompts[index]
            target = teacher_rows.target_ids[row][teacher_rows.target_mask[row].bool()].tolist()
            assert target == data.teacher_outputs[index]


def test_oracle_labels_are_refused_on_a_task_without_an_oracle():
    entry = {"name": "pb", "method": "pbkd_offline", "preference_labels": "oracle"}
    hf = {"source": "hf", "options": {"dataset_path": "gsm8k"}}
    with pytest.raises(ConfigError, match=re.escape(
            "config.methods[0] (pb) scores its training texts with the task's oracle, which only embedded tasks have; "
            "config.tasks.reasoning.source is 'hf'")):
        from_dict(ExperimentConfig, {"tasks": {"reasoning": hf}, "methods": [entry]})
    # restricted to the embedded task, the same variant is accepted
    both = {"tasks": {"reasoning": hf, "translation": {}}, "methods": [{**entry, "tasks": ["translation"]}]}
    assert from_dict(ExperimentConfig, both).methods[0].settings["preference_labels"] == "oracle"
    teacher_labelled = {"tasks": {"reasoning": hf}, "methods": [{**entry, "preference_labels": "teacher"}]}
    from_dict(ExperimentConfig, teacher_labelled)
