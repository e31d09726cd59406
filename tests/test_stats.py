"""Statistics of vlbench.results.stats against textbook values and published examples."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from vlbench.errors import ConfigError
from vlbench.results import stats

scipy_stats = pytest.importorskip("scipy.stats")


@pytest.mark.parametrize("q,df,expected", [
    # Two-sided 95% and 99% critical values as printed in t tables (e.g. NIST/SEMATECH
    # e-Handbook of Statistical Methods, table 1.3.6.7.2), to three decimals.
    (0.975, 1, 12.706), (0.975, 2, 4.303), (0.975, 4, 2.776), (0.975, 9, 2.262),
    (0.975, 30, 2.042), (0.995, 4, 4.604), (0.995, 10, 3.169),
])
def test_t_interval_uses_table_quantiles(q: float, df: int, expected: float) -> None:
    # Half-width of the t interval of df + 1 values with sd * sqrt(n) = 1 is the quantile.
    values = np.zeros(df + 1)
    values[0], values[1] = 1.0, -1.0
    got = stats.t_interval(values, confidence=2 * q - 1)
    half = (got.ci_high - got.ci_low) / 2
    quantile = half * math.sqrt(values.size) / got.std
    assert quantile == pytest.approx(expected, abs=5e-4)


def test_t_interval_matches_scipy() -> None:
    values = [61.2, 60.4, 62.0, 61.7, 60.9]
    got = stats.t_interval(values)
    low, high = scipy_stats.t.interval(0.95, len(values) - 1, loc=np.mean(values),
                                       scale=scipy_stats.sem(values))
    assert got.mean == pytest.approx(np.mean(values))
    assert got.std == pytest.approx(np.std(values, ddof=1))
    assert (got.ci_low, got.ci_high) == pytest.approx((low, high), rel=1e-9)
    assert got.n == 5 and got.method == "t"


def test_t_interval_by_hand_two_seeds() -> None:
    # mean 61, sd = sqrt(2) , half-width = 12.7062 * sqrt(2) / sqrt(2) = 12.7062
    got = stats.t_interval([60.0, 62.0])
    assert got.std == pytest.approx(math.sqrt(2))
    assert got.ci_low == pytest.approx(61 - 12.706204736, abs=1e-6)
    assert got.ci_high == pytest.approx(61 + 12.706204736, abs=1e-6)


def test_t_interval_single_value_has_no_spread() -> None:
    got = stats.t_interval([61.2])
    assert got.mean == 61.2 and got.std is None and got.ci_low is None and got.n == 1


def test_bootstrap_coverage_on_simulated_data() -> None:
    """A 95% interval around a Bernoulli accuracy covers the truth ~95% of the time."""
    rng = np.random.default_rng(1)
    truth, n, trials = 0.62, 300, 400
    hits = 0
    for trial in range(trials):
        sample = (rng.random(n) < truth).astype(float)
        _, low, high = stats.bootstrap_interval(sample, n_resamples=1000, seed=trial)
        hits += low <= truth <= high
    # Binomial(400, 0.95) lies in [0.92, 0.975] with probability > 0.99.
    assert 0.92 <= hits / trials <= 0.975


def test_bootstrap_matches_scipy_percentile_interval() -> None:
    rng = np.random.default_rng(0)
    # VQA-like soft scores: few distinct levels, so the multinomial path is taken.
    sample = rng.choice([0.0, 0.3, 0.6, 0.9, 1.0], size=500, p=[0.3, 0.1, 0.1, 0.1, 0.4])
    _, low, high = stats.bootstrap_interval(sample, n_resamples=20_000, seed=3)
    ref = scipy_stats.bootstrap((sample,), np.mean, n_resamples=20_000, method="percentile",
                                random_state=4).confidence_interval
    assert low == pytest.approx(ref.low, abs=0.004)
    assert high == pytest.approx(ref.high, abs=0.004)


def test_bootstrap_index_path_agrees_with_multinomial_path() -> None:
    rng = np.random.default_rng(5)
    sample = rng.normal(0.5, 0.2, size=800)  # all distinct -> index resampling
    means = stats.bootstrap_means(sample, 20_000, np.random.default_rng(0))
    assert means.std() == pytest.approx(sample.std() / math.sqrt(sample.size), rel=0.03)
    levels = np.round(sample, 1)  # few levels -> multinomial
    means_m = stats.bootstrap_means(levels, 20_000, np.random.default_rng(0))
    assert means_m.mean() == pytest.approx(levels.mean(), abs=1e-3)
    assert means_m.std() == pytest.approx(levels.std() / math.sqrt(levels.size), rel=0.03)


@pytest.mark.parametrize("b,c", [(0, 0), (1, 0), (5, 12), (12, 5), (10, 10), (0, 40), (7, 30),
                                  (3000, 3200), (620, 540)])
def test_mcnemar_exact_is_the_two_sided_sign_test(b: int, c: int) -> None:
    n = b + c
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n if n else 0.5
    assert stats.mcnemar_exact(b, c) == pytest.approx(min(1.0, 2 * tail), rel=1e-9)


def test_mcnemar_published_example() -> None:
    # Fagerland, Lydersen & Laake (2013), BMC Med Res Methodol 13:91, table 1 (Bentur et al.
    # 2009, airway hyper-responsiveness before/after): discordant pairs 1 and 7, exact
    # conditional McNemar p = 0.070 (= 2 * (1 + 8) / 2**8).
    assert stats.mcnemar_exact(1, 7) == pytest.approx(0.0703125)
    assert round(stats.mcnemar_exact(7, 1), 3) == 0.070


def test_mcnemar_on_constructed_table() -> None:
    # 2x2 table: both right 50, A only 2, B only 9, neither 39 -> p = 2 * P(X <= 2 | 11, 1/2)
    p = stats.mcnemar_exact(2, 9)
    assert p == pytest.approx(2 * (1 + 11 + 55) / 2**11)  # = 0.065430
    assert p == pytest.approx(0.0654296875)


def _exact_sign_flip(d: np.ndarray) -> float:
    """The sign-flip p-value over all 2**n sign assignments."""
    signs = np.array(list(itertools.product([-1.0, 1.0], repeat=d.size)))
    sums = np.abs(signs @ d)
    return float(np.mean(sums >= abs(d.sum()) - 1e-12))


@pytest.mark.parametrize("d", [
    [0.3, 0.6, 1.0, 0.7, -0.3, 0.3, 1.0, 0.4, 0.6, -0.1, 0.3],
    [1.0, -1.0, 1.0, 1.0, 0.0, 1.0, -1.0, 1.0, 1.0, 1.0],
    [0.25, 0.5, -0.75, 0.1, 0.2, -0.3, 0.05, 0.15, 0.4, 0.2, -0.1, 0.3],
])
def test_sign_flip_test_matches_full_enumeration(d: list[float]) -> None:
    x = np.array(d)
    exact = _exact_sign_flip(x[x != 0])
    # Monte Carlo error of 40 000 resamples: sd <= 0.0025.
    assert stats.sign_flip_test(x, n_resamples=40_000, seed=1) == pytest.approx(exact, abs=0.01)
    ref = scipy_stats.permutation_test((x,), np.mean, permutation_type="samples",
                                       n_resamples=np.inf).pvalue
    assert exact == pytest.approx(ref, abs=1e-9)


def test_sign_flip_test_many_levels_path_agrees() -> None:
    rng = np.random.default_rng(4)
    d = rng.normal(0.05, 0.5, size=700)  # all distinct -> one sign per value
    p_many = stats.sign_flip_test(d, n_resamples=20_000, seed=0)
    coarse = np.round(d, 1)  # few levels -> binomial counts per level
    p_few = stats.sign_flip_test(coarse, n_resamples=20_000, seed=0)
    # Both are close to the normal approximation of the permutation distribution.
    for x, p in ((d, p_many), (coarse, p_few)):
        z = abs(x.sum()) / math.sqrt(np.sum(x**2))
        assert p == pytest.approx(2 * scipy_stats.norm.sf(z), abs=0.015)


def test_sign_flip_test_edge_cases_and_seeding() -> None:
    assert stats.sign_flip_test(np.zeros(10)) == 1.0
    d = np.array([0.3, 0.6, 0.3, 0.0, 0.9] * 20)  # all non-negative: far beyond chance
    assert stats.sign_flip_test(d, n_resamples=999) == pytest.approx(1 / 1000)
    x = np.random.default_rng(0).choice([-0.3, 0.0, 0.3, 0.6], size=300)
    assert stats.sign_flip_test(x, seed=5) == stats.sign_flip_test(x, seed=5)
    with pytest.raises(ValueError):
        stats.sign_flip_test([])


def test_paired_test_picks_mcnemar_for_right_wrong_and_sign_flip_for_soft_scores() -> None:
    a = np.array([1.0] * 20 + [0.0] * 20)
    b = np.array([1.0] * 18 + [0.0] * 2 + [1.0] * 9 + [0.0] * 11)
    assert stats.paired_test(a, b) == (stats.mcnemar_exact(2, 9), "mcnemar")
    # Every soft score rises from 0 to 0.3: no question crosses one half, yet B is better.
    soft_a, soft_b = np.zeros(60), np.full(60, 0.3)
    p, test = stats.paired_test(soft_a, soft_b, n_resamples=2000, seed=0)
    assert test == "sign-flip" and p == pytest.approx(1 / 2001)


def test_welch_by_hand() -> None:
    # Welch (1947) statistic and Welch-Satterthwaite degrees of freedom, written out.
    a, b = [61.2, 60.4, 62.0, 61.7], [63.0, 62.1, 64.4]
    t, df, p = stats.welch_t_test(a, b)
    va, vb = np.var(a, ddof=1) / 4, np.var(b, ddof=1) / 3
    assert t == pytest.approx((np.mean(a) - np.mean(b)) / math.sqrt(va + vb), rel=1e-12)
    assert df == pytest.approx((va + vb) ** 2 / (va**2 / 3 + vb**2 / 2), rel=1e-12)
    assert p == pytest.approx(2 * scipy_stats.t.sf(abs(t), df), rel=1e-9)
    assert all(math.isnan(v) for v in stats.welch_t_test([1.0, 1.0], [2.0, 2.0]))


def test_holm_published_example() -> None:
    # Holm-Bonferroni example (Wikipedia, "Holm-Bonferroni method"): four hypotheses with
    # p = 0.01, 0.04, 0.03, 0.005 at alpha = 0.05 reject H1 and H4 only.
    adjusted, rejected = stats.holm([0.01, 0.04, 0.03, 0.005], alpha=0.05)
    assert rejected == [True, False, False, True]
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_matches_r_p_adjust() -> None:
    # R: p.adjust(c(0.01, 0.02, 0.03, 0.04, 0.05), "holm") -> 0.05 0.08 0.09 0.09 0.09
    adjusted, _ = stats.holm([0.01, 0.02, 0.03, 0.04, 0.05])
    assert adjusted == pytest.approx([0.05, 0.08, 0.09, 0.09, 0.09])


def test_holm_caps_at_one_and_skips_nan() -> None:
    adjusted, rejected = stats.holm([0.5, math.nan, 0.9, 0.001])
    assert adjusted[0] == pytest.approx(1.0) and adjusted[2] == pytest.approx(1.0)
    assert math.isnan(adjusted[1]) and not rejected[1]
    assert adjusted[3] == pytest.approx(0.003) and rejected[3]


def test_holm_rejections_match_step_down_procedure() -> None:
    """Adjusted p <= alpha exactly when the step-down procedure rejects (alpha / (m - k))."""
    rng = np.random.default_rng(2)
    for _ in range(200):
        p = rng.random(rng.integers(1, 12)) ** 3
        alpha = float(rng.choice([0.01, 0.05, 0.1]))
        _, rejected = stats.holm(p, alpha)
        expected = [False] * p.size
        for k, i in enumerate(np.argsort(p)):
            if p[i] > alpha / (p.size - k):
                break
            expected[i] = True
        assert rejected == expected


@pytest.mark.parametrize("confidence,n_resamples,match", [
    (1.5, 1000, "--confidence 1.5"), (0.0, 1000, "--confidence 0"), (1.0, 1000, "--confidence 1"),
    (0.95, 0, "--resamples 0"), (0.95, -3, "--resamples -3"),
])
def test_check_options_refuses_levels_and_resample_counts(
    confidence: float, n_resamples: int, match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        stats.check_options(confidence, n_resamples)
    stats.check_options(0.95, 1)
