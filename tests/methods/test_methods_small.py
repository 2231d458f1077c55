"""Small contracts of the methods' shared pieces, each against a hand computation or F: the RLOO
rewards' z-score, the base class's teacher-sequence declaration, and SFT's loss."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import tiny_model
from xkdbench.config import SamplingConfig
from xkdbench.core.context import TrainContext
from xkdbench.core.data import StepLoader
from xkdbench.methods import FIXED, METHODS, SAMPLED, Method, method_config
from xkdbench.methods.preference import zscore


def test_zscore_by_hand():
    """(x - mean) / (population std + 1e-8), to 1e-12: the epsilon's sign and size show at this tolerance."""
    got = zscore(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    std = math.sqrt(2.0 / 3.0)
    assert got.tolist() == pytest.approx([-1 / (std + 1e-8), 0.0, 1 / (std + 1e-8)], rel=1e-12, abs=1e-15)
    assert torch.equal(zscore(torch.full((4,), 2.5, dtype=torch.float64)), torch.zeros(4, dtype=torch.float64))


def test_a_method_that_needs_the_teacher_may_ask_it_about_any_sequence_by_default():
    class Asks(Method):
        key = "asks"

    class Silent(Method):
        key = "silent"

        @classmethod
        def needs_teacher(cls, config):
            return False

    assert Asks.teacher_sequences(None) == frozenset({FIXED, SAMPLED})
    assert Silent.teacher_sequences(None) == frozenset()


@pytest.mark.parametrize("family", ["llama", "t5"])
def test_sft_loss_is_the_token_cross_entropy(tokenizer, family, toy_data):
    student = tiny_model(tokenizer, family, seed=1)
    ctx = TrainContext(student, None, SamplingConfig(), max_new_tokens=8, device=torch.device("cpu"),
                       use_bf16=False, seed=0)
    sft = METHODS.get("sft")(method_config("sft", {}), ctx)
    batch = sft.sequences(StepLoader(toy_data, student, batch_size=4, grad_accum=1, seed=0).step_examples(0)[0], 0)
    nll = sft.loss(batch)["nll"]  # (B, T)
    logits = student.target_logits(batch)
    expected = F.cross_entropy(logits.flatten(0, 1).float(), batch.target_ids.flatten(), reduction="none")
    torch.testing.assert_close(nll, expected.view_as(nll), rtol=1e-6, atol=1e-6)
