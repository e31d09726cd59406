"""Statistics of vlbench.results.stats against scipy and hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vlbench.results import stats

scipy_stats = pytest.importorskip("scipy.stats")
scipy_special = pytest.importorskip("scipy.special")


@pytest.mark.parametrize("df", [1, 1.5, 2, 3, 4, 7, 19, 30, 120, 1e4])
@pytest.mark.parametrize("q", [1e-6, 0.01, 0.025, 0.3, 0.5, 0.7, 0.95, 0.975, 0.995, 0.999999])
def test_t_quantile_matches_scipy(df: float, q: float) -> None:
    expected = scipy_stats.t.ppf(q, df)
    assert stats.t_ppf(q, df) == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_t_quantile_known_table_values() -> None:
    # Values printed in every t table.
    assert stats.t_ppf(0.975, 1) == pytest.approx(12.706204736, abs=1e-6)
    assert stats.t_ppf(0.975, 2) == pytest.approx(4.302652730, abs=1e-6)
    assert stats.t_ppf(0.975, 9) == pytest.approx(2.262157163, abs=1e-6)
    assert stats.t_ppf(0.995, 4) == pytest.approx(4.604094871, abs=1e-6)


@pytest.mark.parametrize("df", [1, 2.5, 10, 500])
@pytest.mark.parametrize("t", [-50.0, -2.0, -0.3, 0.0, 0.4, 1.96, 8.0])
def test_t_cdf_matches_scipy(df: float, t: float) -> None:
    assert stats.t_cdf(t, df) == pytest.approx(scipy_stats.t.cdf(t, df), abs=1e-12)


@pytest.mark.parametrize("a,b,x", [(0.5, 0.5, 0.2), (2, 3, 0.9), (40, 0.5, 0.97), (3000, 3001, 0.5),
                                   (1, 1, 0.33), (0.1, 7, 1e-4)])
def test_incomplete_beta_matches_scipy(a: float, b: float, x: float) -> None:
    assert stats.betainc(a, b, x) == pytest.approx(scipy_special.betainc(a, b, x), rel=1e-9)


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
def test_mcnemar_exact_matches_binomial_test(b: int, c: int) -> None:
    expected = 1.0 if b + c == 0 else scipy_stats.binomtest(min(b, c), b + c, 0.5).pvalue
    assert stats.mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9)


def test_mcnemar_on_constructed_table() -> None:
    # 2x2 table: both right 50, A only 2, B only 9, neither 39 -> p = 2 * P(X <= 2 | 11, 1/2)
    p = stats.mcnemar_exact(2, 9)
    assert p == pytest.approx(2 * (1 + 11 + 55) / 2**11)  # = 0.065430
    assert p == pytest.approx(0.0654296875)


def test_welch_matches_scipy() -> None:
    a, b = [61.2, 60.4, 62.0, 61.7], [63.0, 62.1, 64.4]
    t, df, p = stats.welch_t_test(a, b)
    ref = scipy_stats.ttest_ind(a, b, equal_var=False)
    assert t == pytest.approx(ref.statistic, rel=1e-9)
    assert p == pytest.approx(ref.pvalue, rel=1e-7)
    assert df > 2


def test_holm_on_known_list() -> None:
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> monotone 0.06
    adjusted, rejected = stats.holm([0.01, 0.04, 0.03, 0.005], alpha=0.05)
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert rejected == [True, False, False, True]


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
