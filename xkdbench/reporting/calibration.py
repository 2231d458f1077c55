"""Simulated studies that check the report's intervals hold their nominal error rate.

A simulated study draws per-example scores of a paired difference A - B (see `stats`):

    x[s, i] = effect + a_s + b_i + e_si,   a ~ N(0, seed_sd^2), b ~ N(0, input_sd^2), e ~ N(0, noise_sd^2)

and decides its verdict with `stats.crossed_interval`, as a claim of the report does. With effect 0
every "reproduced" or "not reproduced" is false; with effect > 0 the share of "reproduced" is the power.
`naive` decides instead with a t-interval over all S x I values treated as independent, which is what
a bootstrap over (seed, input) pairs approximates: the procedure the report used before.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from xkdbench.reporting.stats import CONFIDENCE, crossed_interval


@dataclass(frozen=True)
class Scenario:
    seed_sd: float  # sd of a training run's effect on the paired difference
    input_sd: float  # sd of the method x input interaction
    noise_sd: float  # residual sd of one (seed, input) score difference
    n_inputs: int = 200


def _naive_decides(x: np.ndarray) -> bool:
    values = x.ravel()
    half = stats.t.ppf((1 + CONFIDENCE) / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return abs(values.mean()) > half


def verdict_rates(scenario: Scenario, n_seeds: int, *, effect: float = 0.0, studies: int = 500,
                  seed: int = 0) -> dict[str, float]:
    """Share of simulated studies whose verdict picks a side: {'crossed': ..., 'naive': ...}."""
    rng = np.random.default_rng(seed)
    decided = {"crossed": 0, "naive": 0}
    shape = (n_seeds, scenario.n_inputs)
    for _ in range(studies):
        x = (effect + rng.normal(0, scenario.seed_sd, (n_seeds, 1)) + rng.normal(0, scenario.input_sd, (1, shape[1]))
             + rng.normal(0, scenario.noise_sd, shape))
        decided["crossed"] += crossed_interval(x).verdict != "inconclusive"
        decided["naive"] += _naive_decides(x)
    return {k: v / studies for k, v in decided.items()}
