"""The evaluator: deterministic for a seed, the task's metrics, diversity and oracle on the samples."""
from __future__ import annotations

import pytest

from xkdbench.config import EvaluationConfig
from xkdbench.evaluation import evaluate
from xkdbench.models import ModelSpec, build_model, train_tokenizer
from xkdbench.tasks import get_task


@pytest.fixture(scope="module")
def setup():
    task = get_task("translation", difficulty=0, sizes={"train": 50, "warmup": 5, "validation": 5, "test": 6})
    tokenizer = train_tokenizer(task.training_texts(), 320)
    model = build_model(ModelSpec(family="llama", d_model=32, n_layers=1, n_heads=2, d_ff=64), tokenizer, seed=0)
    return task, model, list(task.load("test"))


def run(setup, seed, **cfg):
    task, model, examples = setup
    config = EvaluationConfig(**{"batch_size": 4, "samples_per_input": 3, "sampling_temperatures": [0.5, 1.0], **cfg})
    return evaluate(model, task, examples, config, max_prompt_tokens=48, max_new_tokens=12, seed=seed)


def test_same_seed_gives_identical_metrics_and_outputs(setup):
    (m1, r1), (m2, r2) = run(setup, 0), run(setup, 0)
    m1.pop("seconds"), m2.pop("seconds")
    assert m1 == m2 and r1 == r2
    m3, r3 = run(setup, 1)
    assert [r["samples"] for r in r3] != [r["samples"] for r in r1]  # another seed, other samples
    assert [r["greedy"] for r in r3] == [r["greedy"] for r in r1]  # greedy does not depend on it


def test_metrics_and_records(setup):
    task, model, examples = setup
    metrics, records = run(setup, 0)
    assert metrics["num_inputs"] == len(examples) == len(records)
    assert metrics["headline_metric"] == "bleu" and metrics["headline"] == metrics["greedy"]["bleu"]
    assert set(metrics["sampling"]) == {"0.5", "1"}
    for quality in metrics["sampling"].values():
        assert {"bleu", "chrf", "oracle", "self_bleu", "distinct_1", "distinct_2"} <= set(quality)
        assert 0 <= quality["oracle"] <= 1 and 0 <= quality["distinct_1"] <= 1
    record = records[0]
    assert len(record["samples"]["0.5"]) == 3
    assert record["greedy_oracle"] == task.oracle_score(examples[0], record["greedy"])
    assert record["greedy_score"] == task.example_scores([record["greedy"]], [examples[0]])[0]


def test_greedy_scores_equal_the_task_score_of_the_outputs(setup):
    task, model, examples = setup
    metrics, records = run(setup, 0, samples_per_input=0)
    assert metrics["sampling"] == {}
    assert metrics["greedy"] == task.score([r["greedy"] for r in records], examples)


def test_sampled_inputs_limits_only_the_diversity_study(setup):
    task, model, examples = setup
    full_metrics, full_records = run(setup, 0)
    metrics, records = run(setup, 0, sampled_inputs=4)
    assert metrics["greedy"] == full_metrics["greedy"] and len(records) == len(examples)  # greedy: every input
    assert metrics["sampled_inputs"] == 4 and full_metrics["sampled_inputs"] == len(examples)
    assert [("samples" in r) for r in records] == [True] * 4 + [False] * (len(examples) - 4)
    for temperature, quality in metrics["sampling"].items():  # the sample scores are those of the 4 inputs' samples
        flat = [s for r in records[:4] for s in r["samples"][temperature]]
        repeated = [ex for ex in examples[:4] for _ in range(3)]
        assert quality["bleu"] == pytest.approx(task.score(flat, repeated)["bleu"])
