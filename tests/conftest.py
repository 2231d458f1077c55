"""Shared fixtures: a tiny tokenizer and tiny models of both families, built in seconds."""
from __future__ import annotations

import random

import pytest
import torch

from xkdbench.core.data import TrainData
from xkdbench.models import ModelSpec, build_model, train_tokenizer

# One thread per test process: tiny models gain nothing from more, and on a loaded 2-core machine
# two threads per process fight each other (a 10x slowdown seen in practice).
torch.set_num_threads(1)

WORDS = "cat dog bird fish cow horse sheep goat".split()


def toy_pairs(n: int = 64, seed: int = 0) -> tuple[list[str], list[str]]:
    """A reversal task: 'reverse: a b c' -> 'c b a'; enough to see losses fall in a few steps."""
    rng = random.Random(seed)
    prompts, targets = [], []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(2, 5))]
        prompts.append("reverse: " + " ".join(words))
        targets.append(" ".join(reversed(words)) + f" {rng.randint(0, 99)}")
    return prompts, targets


@pytest.fixture(scope="session")
def tokenizer():
    prompts, targets = toy_pairs(400)
    return train_tokenizer(prompts + targets, vocab_size=320)


@pytest.fixture(params=["llama", "t5"])
def family(request) -> str:
    return request.param


def tiny_model(tokenizer, family: str, seed: int = 0, width: int = 32):
    torch.manual_seed(seed)
    return build_model(ModelSpec(family=family, d_model=width, n_layers=1, n_heads=2, d_ff=2 * width), tokenizer, seed=seed)


@pytest.fixture
def toy_data(tokenizer, family):
    model = tiny_model(tokenizer, family)
    prompts, targets = toy_pairs(64)
    return TrainData.from_texts(model, prompts, targets, max_prompt_tokens=24, max_target_tokens=12,
                                teacher_outputs=targets[::-1][: len(prompts)])
