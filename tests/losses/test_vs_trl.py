"""The JSD of this suite and TRL's GKDTrainer agree (benchmarks/vs_trl.py compares their training loops).

Runs only where TRL is installed (`pip install -e ".[bench]"`)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("trl")

from xkdbench.losses import generalized_jsd  # noqa: E402
from xkdbench.models import ModelSpec, build_model, train_tokenizer  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "vs_trl.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("benchmarks_vs_trl", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def suite_mean(student_logits, teacher_logits, mask, beta):
    """The suite's loss: per-token JSD, masked, divided by the token count (core/trainer.backward_step)."""
    mask = mask.to(torch.float32)
    return (generalized_jsd(student_logits, teacher_logits, beta=beta) * mask).sum() / mask.sum()


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_same_logits_same_loss(bench, make_logits, beta):
    student = make_logits(3, 7, 11, seed=1, dtype=torch.float32)
    teacher = make_logits(3, 7, 11, seed=2, scale=2.0, dtype=torch.float32)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [0] * 2 + [1] * 3 + [0] * 2])
    labels = torch.where(mask.bool(), torch.ones_like(mask), torch.full_like(mask, -100))
    theirs = bench.GKDTrainer.generalized_jsd_loss(student, teacher, labels=labels, beta=bench.trl_beta(beta))
    torch.testing.assert_close(theirs, suite_mean(student, teacher, mask, beta), rtol=1e-5, atol=1e-7)
    # the Trainer's token count gives the same mean off-policy (it counts these very labels)
    counted = bench.GKDTrainer.generalized_jsd_loss(student, teacher, labels=labels, beta=bench.trl_beta(beta),
                                                    num_items_in_batch=mask.sum())
    torch.testing.assert_close(counted, theirs)


def test_same_batch_same_loss(bench):
    """One off-policy batch, laid out by each trainer's own collator, through TRL's compute_loss and the
    suite's divergence: the same number although the padding and the position ids differ."""
    texts = ["the cat sees the dog", "der Hund sieht die Katze", "a small house in the shop", "ein kleines Haus"] * 4
    tokenizer = train_tokenizer(texts, 300, min_frequency=1)
    spec = ModelSpec(family="llama", d_model=32, n_layers=2, n_heads=2, d_ff=64)
    student, teacher = build_model(spec, tokenizer, seed=0), build_model(spec, tokenizer, seed=1)
    for model, scale in ((student, 20.0), (teacher, 40.0)):  # (tied) embeddings: logits far from uniform
        with torch.no_grad():
            model.model.get_input_embeddings().weight.mul_(scale)
    prompts = ["the cat sees", "a small house in the shop the cat", "der"]
    targets = ["der Hund", "ein", "Haus in the shop sieht die Katze"]
    rows_p = student.encode_prompts(prompts, 48)
    rows_t = student.encode_targets(targets, 50)
    ours_batch = student.collate(rows_p, rows_t)
    data = SimpleNamespace(prompts=rows_p, targets=rows_t)
    inputs = bench.trl_collator(tokenizer)(bench.trl_rows(data, [0, 1, 2]))
    # the same tokens on both sides: the sequences TRL sees are the suite's prompt + target, left-padded
    for i, (p, t) in enumerate(zip(rows_p, rows_t, strict=True)):
        row = inputs["input_ids"][i][inputs["attention_mask"][i].bool()].tolist()
        assert row == p + t
        assert inputs["prompts"][i][inputs["prompt_attention_mask"][i].bool()].tolist() == p

    beta = 0.9
    with torch.no_grad():
        ours = suite_mean(student.target_logits(ours_batch), teacher.target_logits(ours_batch), ours_batch.target_mask,
                          beta)
        trainer = SimpleNamespace(teacher_model=teacher.model, beta=bench.trl_beta(beta),
                                  generalized_jsd_loss=bench.GKDTrainer.generalized_jsd_loss)
        theirs = bench.GKDTrainer.compute_loss(trainer, student.model, inputs)
    assert ours > 1e-3  # the models disagree, so the check has teeth
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=0)
