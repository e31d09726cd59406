"""Statistics for results tables: t intervals, bootstrap, paired tests, Welch, Holm.

Distributions come from :mod:`scipy.stats`, imported inside the functions that need it so
that loading the results package (and every ``vlbench`` command) does not pay for it.
Resampling (the bootstrap and the sign-flip test) is vectorised numpy driven by a seeded
generator, so every interval and p-value is reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vlbench.errors import ConfigError

# Above this many distinct values resampling draws one value per unit instead of counts.
_MAX_DISTINCT_LEVELS = 512
# Upper bound on resampled entries held in memory at once (int64 -> ~160 MB).
_CHUNK = 20_000_000


@dataclass(frozen=True)
class Interval:
    """A point estimate with its spread and a two-sided confidence interval."""

    mean: float
    std: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    method: str | None  # "t" (over seeds), "bootstrap" (over questions) or None


def check_options(confidence: float, n_resamples: int) -> None:
    """Refuse an interval level outside (0, 1) or a resample count below one (ConfigError)."""
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"--confidence {confidence:g}: an interval level lies strictly "
                          "between 0 and 1, e.g. 0.95")
    if n_resamples < 1:
        raise ConfigError(f"--resamples {n_resamples}: need at least one resample "
                          "(thousands give stable intervals and p-values)")


def t_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Mean, sample standard deviation (ddof=1) and the t interval over ``values`` (e.g. seeds).

    With a single value the spread and interval are undefined and returned as None.
    """
    from scipy import stats

    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("t_interval needs at least one value")
    mean = float(x.mean())
    if x.size == 1:
        return Interval(mean, None, None, None, 1, None)
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2.0, x.size - 1)) * std / math.sqrt(x.size)
    return Interval(mean, std, mean - half, mean + half, int(x.size), "t")


def bootstrap_means(
    values: Sequence[float] | np.ndarray, n_resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """Means of ``n_resamples`` resamples (with replacement, same size) of ``values``.

    When the values take few distinct levels (0/1 correctness, VQA's soft scores) the
    counts of each level in a resample are drawn from a multinomial, which gives the
    same distribution of means as resampling indices at a fraction of the cost.
    """
    x = np.asarray(values, dtype=float).ravel()
    n = x.size
    if n == 0:
        raise ValueError("cannot bootstrap an empty sample")
    levels, counts = np.unique(x, return_counts=True)
    if levels.size <= _MAX_DISTINCT_LEVELS:
        draws = rng.multinomial(n, counts / n, size=n_resamples)
        return draws @ levels / n
    means = np.empty(n_resamples)
    rows = max(1, _CHUNK // n)
    for start in range(0, n_resamples, rows):
        stop = min(n_resamples, start + rows)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = x[idx].mean(axis=1)
    return means


def bootstrap_interval(
    values: Sequence[float] | np.ndarray,
    *,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Mean of ``values`` and its percentile-bootstrap interval ``(mean, low, high)``.

    For a paired comparison pass the per-question differences ``b - a``.
    """
    x = np.asarray(values, dtype=float).ravel()
    means = bootstrap_means(x, n_resamples, np.random.default_rng(seed))
    alpha = 1.0 - confidence
    low, high = np.quantile(means, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(x.mean()), float(low), float(high)


def mcnemar_exact(b: int, c: int) -> float:
    """Exact (binomial) two-sided McNemar p-value from the two discordant counts.

    ``b``: pairs right under A only; ``c``: right under B only. Under the null each
    discordant pair is equally likely either way, so b ~ Binomial(b + c, 1/2).
    """
    from scipy import stats

    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be non-negative, got {b}, {c}")
    if b + c == 0:
        return 1.0
    return float(stats.binomtest(b, b + c, 0.5).pvalue)


def _sign_flip_sums(
    magnitudes: np.ndarray, n_resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """Sums of ``magnitudes`` under ``n_resamples`` independent random sign assignments."""
    levels, counts = np.unique(magnitudes, return_counts=True)
    if levels.size <= _MAX_DISTINCT_LEVELS:
        # Per level only the number of positive signs matters: Binomial(count, 1/2).
        positive = rng.binomial(counts, 0.5, size=(n_resamples, levels.size))
        return (2 * positive - counts) @ levels
    sums = np.empty(n_resamples)
    rows = max(1, _CHUNK // magnitudes.size)
    for start in range(0, n_resamples, rows):
        stop = min(n_resamples, start + rows)
        signs = 2 * rng.integers(0, 2, size=(stop - start, magnitudes.size)) - 1
        sums[start:stop] = signs @ magnitudes
    return sums


def sign_flip_test(
    differences: Sequence[float] | np.ndarray, *, n_resamples: int = 10_000, seed: int = 0
) -> float:
    """Two-sided p-value of a paired sign-flip permutation test of "mean difference = 0".

    Under the null hypothesis each paired difference is as likely positive as negative.
    The p-value is the share of random sign assignments whose sum is at least as far from
    zero as the observed one, the observed assignment included, so it is never 0.
    """
    d = np.asarray(differences, dtype=float).ravel()
    if d.size == 0:
        raise ValueError("the sign-flip test needs at least one difference")
    magnitudes = np.abs(d[d != 0.0])  # a zero difference is the same under either sign
    if magnitudes.size == 0:
        return 1.0
    observed = abs(float(d.sum()))
    sums = np.abs(_sign_flip_sums(magnitudes, n_resamples, np.random.default_rng(seed)))
    # Equal sums can differ in the last bits (different summation order): count them as ties.
    tolerance = 1e-10 * float(magnitudes.sum())
    hits = int(np.count_nonzero(sums >= observed - tolerance))
    return (1 + hits) / (1 + n_resamples)


def is_binary(values: np.ndarray) -> bool:
    """Whether every value is exactly 0 or 1 (right/wrong rather than a soft score)."""
    return bool(np.all((values == 0.0) | (values == 1.0)))


def paired_test(
    a: np.ndarray, b: np.ndarray, *, n_resamples: int = 10_000, seed: int = 0
) -> tuple[float, str]:
    """p-value for "A and B score the same on average" over paired units, and the test used.

    Right/wrong units get the exact McNemar test ("mcnemar"); soft scores (VQA, or a mean
    over seeds) get the sign-flip permutation test on the differences the metric averages
    ("sign-flip"), since thresholding them would test another quantity.
    """
    if is_binary(a) and is_binary(b):
        a_only = int(np.sum((a == 1.0) & (b == 0.0)))
        b_only = int(np.sum((a == 0.0) & (b == 1.0)))
        return mcnemar_exact(a_only, b_only), "mcnemar"
    return sign_flip_test(b - a, n_resamples=n_resamples, seed=seed), "sign-flip"


def welch_t_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """Welch's unequal-variance t test: ``(t, df, two-sided p)``; needs two values per side.

    When both samples have zero variance the test is undefined and NaNs are returned.
    """
    from scipy import stats

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.size < 2 or y.size < 2:
        raise ValueError("Welch's t test needs at least two values on each side")
    if x.var() == 0.0 and y.var() == 0.0:
        return math.nan, math.nan, math.nan
    result = stats.ttest_ind(x, y, equal_var=False)
    return float(result.statistic), float(result.df), float(result.pvalue)


def holm(p_values: Sequence[float], alpha: float = 0.05) -> tuple[list[float], list[bool]]:
    """Holm's step-down correction: adjusted p-values and which hypotheses are rejected.

    The i-th smallest of m p-values is multiplied by (m - i + 1), made monotone with a
    running maximum and capped at 1; a hypothesis is rejected when its adjusted p-value
    <= alpha. NaN p-values are left out of the family and come back as NaN / not rejected.
    """
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, math.nan)
    valid = np.flatnonzero(~np.isnan(p))
    order = valid[np.argsort(p[valid], kind="stable")]
    factors = np.arange(order.size, 0, -1)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(factors * p[order]))
    rejected = [bool(not math.isnan(v) and v <= alpha) for v in adjusted]
    return [float(v) for v in adjusted], rejected
