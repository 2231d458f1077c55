"""Statistics of the report: intervals that cover both sources of randomness.

Behind every compared number stand two random samples: the training runs (one per seed: the student
initialisation, the data order, the on-policy samples) and the test inputs. A paired difference
A - B of a per-example measure is a matrix x[s, i] over seeds s = 1..S and inputs i = 1..I, modelled
as crossed random effects (balanced: every seed is evaluated on the same inputs):

    x[s, i] = delta + a_s + b_i + e_si,   Var a = sigma_seed^2, Var b = sigma_input^2, Var e = sigma_res^2

(b is the method x input interaction: the inputs' common difficulty cancels in a paired difference).
The grand mean estimates delta with variance sigma_seed^2/S + sigma_input^2/I + sigma_res^2/(S I),
whose unbiased estimate from the two-way ANOVA mean squares is (MS_seed + MS_input - MS_res) / (S I)
(`crossed_interval`; kept at least MS_res / (S I), since no component is negative). The half-width
is the Student-t quantile with S - 1 degrees of freedom times its square root: the training runs are
the scarce sample, and as in inference with few clusters their count sets the quantile. Satterthwaite's
data-dependent degrees of freedom were tried first and measured liberal with 3 seeds (8-9% false
verdicts at a nominal 5%, because the df estimate rises exactly when MS_seed falls short); a
bootstrap over 3 seeds has only 10 distinct resamples and is worse. `benchmarks/verdict_calibration.py`
prints this procedure's false-verdict rate and power by simulation.

With one seed the training runs' variance cannot be estimated: the interval then covers the inputs
only (a t-interval over the per-input values), says so, and never decides a verdict.

- `t_interval`: the main table's mean and t half-width over seeds (the test set held fixed).
- `win_tie_lose`: counts over paired values.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95
TIE_TOLERANCE = 1e-9
COVERS_BOTH = "seeds and inputs"
COVERS_INPUTS = "inputs only (1 seed)"


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


@dataclass(frozen=True)
class Interval:
    """A mean over (seed, input) with its 95% interval; `df` is the t quantile's degrees of freedom."""

    mean: float
    low: float
    high: float
    n_seeds: int
    n_inputs: int
    df: float

    @property
    def covers(self) -> str:
        return COVERS_BOTH if self.n_seeds >= 2 else COVERS_INPUTS

    @property
    def verdict(self) -> str:
        """'A better' / 'B better' only when the interval excludes 0 and covers the training runs."""
        if self.n_seeds < 2:
            return "inconclusive"
        if self.low > 0:
            return "A better"
        if self.high < 0:
            return "B better"
        return "inconclusive"


def _mean_squares(x: np.ndarray) -> tuple[float, float, float]:
    """(MS_seed, MS_input, MS_residual) of the two-way layout x (S, I) without replication."""
    s, i = x.shape
    grand, seed_means, input_means = x.mean(), x.mean(axis=1), x.mean(axis=0)
    ms_seed = i * np.sum((seed_means - grand) ** 2) / (s - 1)
    ms_input = s * np.sum((input_means - grand) ** 2) / (i - 1)
    residual = x - seed_means[:, None] - input_means[None, :] + grand
    ms_res = np.sum(residual ** 2) / ((s - 1) * (i - 1))
    return float(ms_seed), float(ms_input), float(ms_res)


def crossed_interval(x) -> Interval:
    """The 95% interval of the mean of x (S seeds, I inputs) under crossed seed and input effects."""
    x = np.asarray(x, dtype=float)
    if x.ndim != 2 or x.size == 0 or np.isnan(x).any():
        raise ValueError(f"expected a complete (seeds, inputs) matrix, got shape {x.shape} with "
                         f"{int(np.isnan(x).sum()) if x.size else 0} missing values")
    s, i = x.shape
    mean = float(x.mean())
    if s == 1 or i == 1:  # one factor only: a t-interval over the other
        values = x.ravel()
        if len(values) < 2:
            return Interval(mean, math.nan, math.nan, s, i, math.nan)
        variance, df = float(np.var(values, ddof=1)) / len(values), len(values) - 1.0
    else:
        ms_seed, ms_input, ms_res = _mean_squares(x)
        # S I Var(mean) = MS_seed + MS_input - MS_res in expectation; never below MS_res (components >= 0)
        variance = max(ms_seed + ms_input - ms_res, ms_res) / (s * i)
        df = s - 1.0  # the training runs are the scarce sample: their count sets the t quantile
    if variance <= 0:  # a constant matrix: the mean is exact
        return Interval(mean, mean, mean, s, i, df)
    half = float(stats.t.ppf((1 + CONFIDENCE) / 2, df=df) * math.sqrt(variance))
    return Interval(mean, mean - half, mean + half, s, i, float(df))


def paired_matrix(per_seed: dict) -> np.ndarray:
    """The (seeds, inputs) matrix of A - B from {seed: two columns (A, B) indexed by input}, on the
    inputs every seed has (a balanced layout)."""
    columns = [pair.iloc[:, 0] - pair.iloc[:, 1] for pair in per_seed.values()]
    joined = pd.concat(columns, axis=1, join="inner").dropna()
    return joined.to_numpy().T


@dataclass(frozen=True)
class Components:
    """The variance components of a paired difference x[s, i] (module docstring), estimated from the
    ANOVA mean squares and kept non-negative: E[MS_res] = sigma_res^2, E[MS_seed] = sigma_res^2 +
    I sigma_seed^2, E[MS_input] = sigma_res^2 + S sigma_input^2."""

    seed: float
    input: float
    residual: float

    @classmethod
    def of(cls, x) -> Components:
        x = np.asarray(x, dtype=float)
        s, i = x.shape
        if s < 2 or i < 2:
            raise ValueError(f"variance components need at least 2 seeds and 2 inputs, got shape {x.shape}")
        ms_seed, ms_input, ms_res = _mean_squares(x)
        return cls(max(0.0, (ms_seed - ms_res) / i), max(0.0, (ms_input - ms_res) / s), ms_res)

    def standard_error(self, seeds: int, inputs: int) -> float:
        """The standard error of the mean difference of a study with `seeds` training runs and `inputs`
        test inputs per method."""
        return math.sqrt(self.seed / seeds + self.input / inputs + self.residual / (seeds * inputs))

    def half_width(self, seeds: int, inputs: int) -> float:
        """The expected 95% half-width of `crossed_interval` at that size (t quantile with seeds - 1 df)."""
        return float(stats.t.ppf((1 + CONFIDENCE) / 2, df=seeds - 1)) * self.standard_error(seeds, inputs)

    def detectable_effect(self, seeds: int, inputs: int, power: float = 0.8) -> float:
        """The smallest true difference the study decides with probability `power` (two-sided 5% test,
        the usual normal-theory approximation with the t quantiles of seeds - 1 df)."""
        df = seeds - 1
        quantiles = stats.t.ppf((1 + CONFIDENCE) / 2, df=df) + stats.t.ppf(power, df=df)
        return float(quantiles) * self.standard_error(seeds, inputs)
