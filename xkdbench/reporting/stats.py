"""Statistics of the report: t-intervals over seeds, paired bootstrap and win/tie/lose over test inputs.

- Over seeds: mean and the half-width of the two-sided 95% Student-t interval,
  t_{0.975, n-1} * s / sqrt(n) (scipy.stats.t, scipy.stats.sem); no interval for n = 1.
- Over test inputs: the mean paired difference A - B with a 95% paired bootstrap interval
  (scipy.stats.bootstrap, paired=True, BCa, seeded), as sacrebleu does for paired significance; a
  constant difference gets a point interval, and the percentile method is used where BCa is undefined.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95
TIE_TOLERANCE = 1e-9


def t_interval(values) -> tuple[float, float, int]:
    """(mean, half-width of the 95% t-interval, n) of the non-missing values; half-width NaN for n < 2."""
    x = np.asarray(pd.Series(values, dtype=float).dropna())
    n = len(x)
    if n == 0:
        return math.nan, math.nan, 0
    mean = float(x.mean())
    if n == 1:
        return mean, math.nan, 1
    half = stats.t.ppf((1 + CONFIDENCE) / 2, df=n - 1) * stats.sem(x)
    return mean, float(half), n


def win_tie_lose(a, b, tolerance: float = TIE_TOLERANCE) -> tuple[int, int, int]:
    """Counts of a > b, |a - b| <= tolerance and a < b over paired values."""
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    tie = np.abs(diff) <= tolerance
    return int(((diff > 0) & ~tie).sum()), int(tie.sum()), int(((diff < 0) & ~tie).sum())


def _mean_difference(a, b, axis=-1):
    return np.mean(a - b, axis=axis)


def paired_bootstrap(a, b, *, n_resamples: int = 9999, seed: int = 0) -> tuple[float, float, float]:
    """(mean of a - b, CI low, CI high): 95% BCa paired bootstrap over the paired items."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = a - b
    if len(diff) == 0:
        return math.nan, math.nan, math.nan
    mean = float(diff.mean())
    if len(diff) == 1 or np.ptp(diff) <= 1e-12 * max(1.0, abs(mean)):  # (nearly) constant: a point interval
        return mean, mean, mean
    for method in ("BCa", "percentile"):  # BCa is undefined on some degenerate samples; fall back then
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", stats.DegenerateDataWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            ci = stats.bootstrap((a, b), _mean_difference, paired=True, vectorized=True, n_resamples=n_resamples,
                                 confidence_level=CONFIDENCE, method=method,
                                 rng=np.random.default_rng(seed)).confidence_interval
        if not (math.isnan(ci.low) or math.isnan(ci.high)):
            break
    return mean, float(ci.low), float(ci.high)
