"""Statistics for results tables: t intervals, bootstrap, exact McNemar, Welch, Holm.

numpy and the standard library only (scipy is a test-time reference, not a dependency).
Distribution functions go through the regularized incomplete beta function, evaluated
with a continued fraction (modified Lentz), which is accurate to ~1e-13 here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_TINY = 1e-300
_EPS = 1e-15
# Above this many distinct values the bootstrap resamples indices instead of counts.
_MAX_DISTINCT_FOR_MULTINOMIAL = 512
# Upper bound on resampled indices held in memory at once (int64 -> ~160 MB).
_INDEX_CHUNK = 20_000_000


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """Continued fraction of I_x(a, b) (converges fast for x < (a + 1) / (a + b + 2))."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    # Iterations grow like sqrt(max(a, b)); 10 000 covers any df or count we meet.
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            return h
    raise ArithmeticError(f"incomplete beta did not converge for a={a}, b={b}, x={x}")


def _betainc(a: float, b: float, x: float, y: float) -> float:
    """I_x(a, b) given both x and y = 1 - x, so callers can keep precision near x = 1."""
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(y)
    )
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_continued_fraction(a, b, x) / a
    # Symmetry I_x(a, b) = 1 - I_{1-x}(b, a) keeps the fraction in its fast region.
    return 1.0 - front * _beta_continued_fraction(b, a, y) / b


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta function I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if a <= 0 or b <= 0:
        raise ValueError(f"betainc needs a, b > 0, got a={a}, b={b}")
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    return _betainc(a, b, x, 1.0 - x)


def t_cdf(t: float, df: float) -> float:
    """Cumulative distribution function of Student's t with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    if t == 0.0:
        return 0.5
    # P(|T| > |t|) = I_x(df/2, 1/2) with x = df / (df + t^2); y = 1 - x is formed directly
    # because x rounds to 1 for small t and large df.
    x = df / (df + t * t)
    y = t * t / (df + t * t)
    tail = 0.5 * _betainc(df / 2.0, 0.5, x, y)
    return 1.0 - tail if t > 0 else tail


def t_sf(t: float, df: float) -> float:
    """Survival function 1 - t_cdf(t, df), computed without cancellation for large t."""
    return t_cdf(-t, df)


def t_ppf(q: float, df: float) -> float:
    """Quantile of Student's t: the x with t_cdf(x, df) = q (bisection to machine precision)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile level must lie in (0, 1), got {q}")
    if q == 0.5:
        return 0.0
    if q < 0.5:
        return -t_ppf(1.0 - q, df)
    tail = 1.0 - q
    lo, hi = 0.0, 1.0
    while t_sf(hi, df) > tail:
        lo, hi = hi, hi * 2.0
    # Bisect on the upper tail, which keeps relative precision for extreme levels.
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_sf(mid, df) > tail:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-14 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class Interval:
    """A point estimate with its spread and a two-sided confidence interval."""

    mean: float
    std: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    method: str | None  # "t" (over seeds), "bootstrap" (over questions) or None


def t_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Mean, sample standard deviation (ddof=1) and the t interval over ``values`` (e.g. seeds).

    With a single value the spread and interval are undefined and returned as None.
    """
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("t_interval needs at least one value")
    mean = float(x.mean())
    if x.size == 1:
        return Interval(mean, None, None, None, 1, None)
    std = float(x.std(ddof=1))
    half = t_ppf(0.5 + confidence / 2.0, x.size - 1) * std / math.sqrt(x.size)
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
    if levels.size <= _MAX_DISTINCT_FOR_MULTINOMIAL:
        draws = rng.multinomial(n, counts / n, size=n_resamples)
        return draws @ levels / n
    means = np.empty(n_resamples)
    rows = max(1, _INDEX_CHUNK // n)
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


def binom_cdf_half(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if n <= 1000:
        # Exact integer arithmetic where it is cheap.
        return sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
    return betainc(n - k, k + 1, 0.5)


def mcnemar_exact(b: int, c: int) -> float:
    """Exact (binomial) two-sided McNemar p-value from the two discordant counts.

    ``b``: pairs right under A only; ``c``: right under B only. Under the null each
    discordant pair is equally likely either way, so min(b, c) ~ Binomial(b + c, 1/2).
    """
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be non-negative, got {b}, {c}")
    n = b + c
    if n == 0:
        return 1.0
    return min(1.0, 2.0 * binom_cdf_half(min(b, c), n))


def welch_t_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """Welch's unequal-variance t test: ``(t, df, two-sided p)``; needs two values per side.

    When both samples have zero variance the test is undefined and NaNs are returned.
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.size < 2 or y.size < 2:
        raise ValueError("Welch's t test needs at least two values on each side")
    vx, vy = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    se2 = vx + vy
    if se2 == 0.0:
        return math.nan, math.nan, math.nan
    t = float((x.mean() - y.mean()) / math.sqrt(se2))
    df = float(se2**2 / (vx**2 / (x.size - 1) + vy**2 / (y.size - 1)))
    return t, df, min(1.0, 2.0 * t_sf(abs(t), df))


def holm(p_values: Sequence[float], alpha: float = 0.05) -> tuple[list[float], list[bool]]:
    """Holm's step-down correction: adjusted p-values and which hypotheses are rejected.

    The i-th smallest p-value is multiplied by (m - i + 1), made monotone with a running
    maximum and capped at 1; a hypothesis is rejected when its adjusted p-value <= alpha.
    NaN p-values are left out of the family and come back as NaN / not rejected.
    """
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, math.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = valid.size
    order = valid[np.argsort(p[valid], kind="stable")]
    running = 0.0
    for rank, idx in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[idx]))
        adjusted[idx] = running
    rejected = [bool(not math.isnan(v) and v <= alpha) for v in adjusted]
    return [float(v) for v in adjusted], rejected
