"""stats: exact values on arrays small enough to compute by hand, and properties of the seeded bootstrap."""
from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.analysis import stats


def test_t_interval_by_hand():
    # mean 3, sd sqrt(2.5), t_{0.975, 4} = 2.776445: 3 +- 2.776445 * sqrt(2.5) / sqrt(5)
    s = stats.describe([1, 2, 3, 4, 5])
    assert s.n == 5 and s.mean == 3.0 and s.sd == pytest.approx(math.sqrt(2.5))
    assert s.lo == pytest.approx(1.0367, abs=1e-4) and s.hi == pytest.approx(4.9633, abs=1e-4)


def test_describe_small_samples():
    assert stats.describe([]).n == 0 and math.isnan(stats.describe([]).mean)
    one = stats.describe([7.0])
    assert one.mean == 7.0 and math.isnan(one.sd) and math.isnan(one.lo)
    with pytest.raises(ValueError, match="non-finite"):
        stats.describe([1.0, float("nan")])


def test_welch_equal_variances_by_hand():
    # var 2.5 each: se = sqrt(2.5/5 + 2.5/5) = 1, t = (3 - 5) / 1 = -2, df = 1 / (2 * 0.25 / 4) = 8;
    # two-sided p for |t| = 2 at 8 df is 0.0805 (t tables)
    w = stats.welch([1, 2, 3, 4, 5], [3, 4, 5, 6, 7])
    assert w.statistic == pytest.approx(-2.0) and w.df == pytest.approx(8.0)
    assert w.p == pytest.approx(0.0805, abs=1e-4)
    assert w.diff_lo == pytest.approx(-2 - 2.306004, abs=1e-5) and w.diff_hi == pytest.approx(-2 + 2.306004, abs=1e-5)


def test_welch_unequal_variances_by_hand():
    # var 2.5 and 10: se = sqrt(0.5 + 2) = 1.5811, t = -3 / 1.5811 = -1.8974,
    # Welch-Satterthwaite df = 2.5^2 / (0.5^2/4 + 2^2/4) = 6.25 / 1.0625 = 5.8824
    w = stats.welch([1, 2, 3, 4, 5], [2, 4, 6, 8, 10])
    assert w.statistic == pytest.approx(-3 / math.sqrt(2.5), abs=1e-6)
    assert w.df == pytest.approx(6.25 / 1.0625, abs=1e-6)
    assert math.isnan(stats.welch([1, 1, 1], [2, 2, 2]).p)  # no variance at all: no test


def test_mann_whitney_exact_by_hand():
    # complete separation: U = 0, 1 of C(10, 5) = 252 arrangements per tail -> p = 2/252
    u = stats.mann_whitney([1, 2, 3, 4, 5], [6, 7, 8, 9, 10])
    assert u.statistic == 0 and u.p == pytest.approx(2 / 252)
    # one swapped pair: U = 1; P(U <= 1) = 2/252 per tail -> p = 4/252
    u = stats.mann_whitney([1, 2, 3, 4, 6], [5, 7, 8, 9, 10])
    assert u.statistic == 1 and u.p == pytest.approx(4 / 252)


def test_min_mannwhitney_p():
    assert stats.min_mannwhitney_p(5, 5) == pytest.approx(2 / 252) == pytest.approx(0.0079365, abs=1e-7)
    assert stats.min_mannwhitney_p(3, 3) == pytest.approx(0.1)  # 2 / C(6, 3) = 2/20
    assert stats.min_mannwhitney_p(1, 1) == 1.0
    # after Holm over 7 comparisons at alpha 0.05 the first threshold 0.05/7 = 0.00714 is below 2/252: unreachable
    assert stats.min_mannwhitney_p(5, 5) > 0.05 / 7


def test_holm_known_list():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.02, 0.03, 0.06, 0.06
    adj = stats.holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adj, [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(stats.holm([0.5, 0.9]), [1.0, 1.0])  # capped at 1
    adj = stats.holm([0.01, float("nan"), 0.02])  # nan is no test and does not count in m
    assert math.isnan(adj[1]) and adj[0] == pytest.approx(0.02) and adj[2] == pytest.approx(0.02)


def test_hedges_g_by_hand():
    # d = (3 - 5) / sqrt(2.5) = -1.26491; J = 1 - 3 / (4 * 10 - 9) = 28/31; g = -1.14250
    assert stats.hedges_g([1, 2, 3, 4, 5], [3, 4, 5, 6, 7]) == pytest.approx(-2 / math.sqrt(2.5) * 28 / 31)
    assert stats.hedges_g([1, 2, 3, 4, 5], [3, 4, 5, 6, 7]) == pytest.approx(-1.14250, abs=1e-5)
    assert math.isnan(stats.hedges_g([1, 1], [1, 1]))


def test_prob_improvement_by_hand():
    # pairs (x, y) of [1,2,3] x [2,2,4]: x wins (3,2),(3,2); ties (2,2),(2,2) -> (2 + 0.5 * 2) / 9 = 1/3
    assert stats.prob_improvement([1, 2, 3], [2, 2, 4], "max") == pytest.approx(1 / 3)
    # smaller is better: x wins (1,2),(1,2),(1,4),(2,4),(3,4) = 5, ties 2 -> (5 + 1) / 9 = 2/3
    assert stats.prob_improvement([1, 2, 3], [2, 2, 4], "min") == pytest.approx(2 / 3)
    assert stats.prob_improvement([5, 5], [5, 5]) == 0.5
    with pytest.raises(ValueError):
        stats.prob_improvement([1], [2], "up")


def test_detectable_effect_matches_cohen():
    # Cohen (1988): 64 per group detect d = 0.5 at alpha .05 two-sided with 80% power
    assert stats.detectable_effect(64, 64) == pytest.approx(0.5, abs=0.01)
    assert stats.detectable_effect(5, 5) == pytest.approx(2.02, abs=0.02)
    assert stats.detectable_effect(5, 5, alpha=0.01) > stats.detectable_effect(5, 5)


def test_bootstrap_same_seed_same_interval():
    x = np.random.default_rng(7).normal(0.7, 0.02, 8)  # 8 distinct values: seeds land on different percentiles
    a = stats.bootstrap_interval(x, np.random.default_rng(42), resamples=2000)
    b = stats.bootstrap_interval(x, np.random.default_rng(42), resamples=2000)
    c = stats.bootstrap_interval(x, np.random.default_rng(43), resamples=2000)
    assert a == b and a != c


def test_bootstrap_brackets_the_estimate():
    gen = np.random.default_rng(0)
    for trial in range(40):
        n = int(gen.integers(2, 9))
        x = gen.exponential(1.0, n) if trial % 2 else gen.normal(0.0, 1.0, n)
        lo, hi = stats.bootstrap_interval(x, np.random.default_rng(trial), resamples=1000)
        assert lo <= x.mean() <= hi
        r, rlo, rhi = stats.ratio_interval(x + 10, gen.normal(5, 1, n) + 10, np.random.default_rng(trial), resamples=1000)
        assert rlo <= r <= rhi


def test_ratio_interval_is_deterministic_for_constant_arms():
    r, lo, hi = stats.ratio_interval([2.0, 2.0, 2.0], [4.0, 4.0, 4.0], np.random.default_rng(0), resamples=500)
    assert (r, lo, hi) == (0.5, 0.5, 0.5)


def test_mann_whitney_is_exact_with_ties_at_five_seeds():
    # complete separation with ties: the exact two-sided p is the 5 vs 5 minimum 2 / C(10, 5) = 2 / 252
    assert stats.mann_whitney([1.0] * 5, [2.0] * 5).p == pytest.approx(2 / 252)


def _holm_by_hand(p):
    """Holm 1979 step-down, written out: the reference the statsmodels call must equal."""
    p = np.asarray(p, dtype=float)
    out, tested = np.full_like(p, np.nan), np.flatnonzero(~np.isnan(p))
    running = 0.0
    for rank, i in enumerate(tested[np.argsort(p[tested], kind="stable")]):
        running = max(running, min(1.0, (len(tested) - rank) * p[i]))
        out[i] = running
    return out


def _detectable_by_hand(n1, n2, alpha=0.05, power=0.8):
    """The noncentral-t power equation solved with brentq: the reference for statsmodels' TTestIndPower."""
    import warnings

    from scipy import optimize, stats as sps

    df, scale = n1 + n2 - 2, (n1 * n2 / (n1 + n2)) ** 0.5
    crit = sps.t.ppf(1 - alpha / 2, df)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return optimize.brentq(lambda d: sps.nct.sf(crit, df, d * scale)
                               + np.nan_to_num(sps.nct.cdf(-crit, df, d * scale)) - power, 1e-6, 64, xtol=1e-12)


def test_statsmodels_gives_the_numbers_of_the_hand_formulas():
    rng = np.random.default_rng(0)
    for _ in range(20):  # (statsmodels' multipletests runs gc.collect() on every call: ~60 ms here)
        p = rng.random(rng.integers(1, 12)) ** 3
        p[rng.random(len(p)) < 0.2] = np.nan
        np.testing.assert_array_equal(stats.holm(p), _holm_by_hand(p))  # identical, nan included
    for n1, n2 in [(2, 2), (3, 5), (5, 5), (10, 3), (64, 64)]:
        # the same equation, two root finders: equal to 1e-5 (the report prints three significant digits)
        assert stats.detectable_effect(n1, n2) == pytest.approx(_detectable_by_hand(n1, n2), rel=1e-5)
