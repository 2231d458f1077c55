"""Shared fixtures for the divergence tests: reproducible random logits."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture
def make_logits():
    """make_logits(*shape, scale=1.0, seed=0, dtype=torch.float64) -> random logits (..., V)."""

    def make(*shape: int, scale: float = 1.0, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return (scale * torch.randn(*shape, generator=generator, dtype=torch.float64)).to(dtype)

    return make
