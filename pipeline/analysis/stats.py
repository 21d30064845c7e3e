"""Statistics for comparing methods over seeds: tiny pure functions on one data shape.

Data shape, everywhere in this module: `x` and `y` are 1-D float arrays of per-seed values of one quantity
(shape [n_runs]), one array per arm (a variant of an experiment). Diverged or missing runs are NOT in these
arrays: callers drop them and count them (pipeline/analysis/claims.py shows the count in every table). The one
exception: the rank-based mann_whitney and prob_improvement accept +inf for a run censored above (it never reached
a target: slower than every run that did), so time-to-target tests need not drop the slowest runs.
`mode` says which direction is better: "max" (accuracy) or "min" (perplexity, seconds, FLOPs).

    describe(x)                      n, mean, sd (ddof 1), t-based CI of the mean
    bootstrap_interval(x, rng)       seeded percentile bootstrap CI of the mean
    ratio_interval(x, y, rng)        seeded percentile bootstrap CI of mean(x) / mean(y) (independent arms)
    welch(x, y)                      Welch's t-test (unequal variances) and the CI of mean(x) - mean(y)
    welch_vs_reported(x, m, sd, n)   Welch's t-test of our runs against a paper's reported mean, sd and run count
    sd_from_ci(lo, hi, n)            the sd behind a reported t-based CI of a mean over n runs
    mann_whitney(x, y)               Mann-Whitney U, two-sided, exact when there are no ties and n <= 8
    holm(p)                          Holm's step-down adjusted p-values (family-wise error control)
    hedges_g(x, y)                   standardized mean difference with the small-sample correction; sign = x - y
                                     (positive: x larger, whichever direction is better)
    prob_improvement(x, y, mode)     P(X better than Y) + 0.5 P(tie), over all pairs; direction-aware (mode)
    min_mannwhitney_p(n1, n2)        the smallest two-sided p a Mann-Whitney test can give at these sizes
    detectable_effect(n1, n2, ...)   the effect size (Hedges-g scale) a t-test detects with the given power

What five seeds can and cannot show: with 5 vs 5 runs the Mann-Whitney test cannot give p below 2/252 = 0.0079,
so after Holm over m comparisons (smallest threshold alpha/m) it can never reject when m >= 7 at alpha = 0.05;
Welch's test can, but it leans on approximate normality, which 5 values cannot check; and only large effects
(standardized difference of about 2) are detected with 80% power. The report prints these numbers.
"""
from __future__ import annotations

import gc
import math
import warnings
from typing import NamedTuple

import numpy as np
from scipy import stats


class Summary(NamedTuple):
    n: int
    mean: float
    sd: float  # sample standard deviation (ddof = 1); nan when n < 2
    lo: float  # t-based confidence interval of the mean; nan when n < 2
    hi: float


class TestResult(NamedTuple):
    statistic: float
    p: float
    df: float = math.nan  # Welch-Satterthwaite degrees of freedom (t-test only)
    diff_lo: float = math.nan  # CI of mean(x) - mean(y) (t-test only)
    diff_hi: float = math.nan


def _arr(x) -> np.ndarray:
    a = np.asarray(x, dtype=float).ravel()
    if not np.all(np.isfinite(a)):
        raise ValueError(f"non-finite value in {a.tolist()}: drop diverged/missing runs before the statistics")
    return a


def _ranked(x) -> np.ndarray:
    """Like _arr, but +inf (a run censored above) is allowed: rank-based statistics order it last."""
    a = np.asarray(x, dtype=float).ravel()
    if np.isnan(a).any() or np.isneginf(a).any():
        raise ValueError(f"nan or -inf in {a.tolist()}: only +inf (censored above) is allowed in a rank test")
    return a


# ---- one arm ----------------------------------------------------------------------------------------------------
def describe(x, confidence: float = 0.95) -> Summary:
    """x: [n_runs] values of one arm -> n, mean, sd and the t-based CI mean +- t_{n-1} sd / sqrt(n)."""
    x = _arr(x)
    n = len(x)
    if n == 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if n < 2:
        return Summary(1, mean, math.nan, math.nan, math.nan)
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, df=n - 1)) * sd / math.sqrt(n)
    return Summary(n, mean, sd, mean - half, mean + half)


def bootstrap_interval(x, rng: np.random.Generator, confidence: float = 0.95,
                       resamples: int = 10_000) -> tuple[float, float]:
    """x: [n_runs] -> percentile bootstrap CI of the mean, resampling runs with the seeded `rng`.

    Percentile, not BCa: BCa's jackknife acceleration is unstable at n = 5 and undefined for constant samples.
    """
    x = _arr(x)
    if len(x) < 2:
        return math.nan, math.nan
    res = stats.bootstrap((x,), np.mean, confidence_level=confidence, n_resamples=resamples,
                          method="percentile", rng=rng, vectorized=True)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def ratio_interval(x, y, rng: np.random.Generator, confidence: float = 0.95,
                   resamples: int = 10_000) -> tuple[float, float, float]:
    """x, y: [n_x], [n_y] independent arms -> (mean(x)/mean(y), bootstrap CI low, high).

    Used for FLOPs fractions and wall-clock speed-ups: each arm is resampled on its own (the seeds of two
    variants are not paired).
    """
    x, y = _arr(x), _arr(y)
    if len(x) == 0 or len(y) == 0 or y.mean() == 0:
        return math.nan, math.nan, math.nan
    ratio = float(x.mean() / y.mean())
    if len(x) < 2 or len(y) < 2:
        return ratio, math.nan, math.nan

    def stat(a, b, axis=-1):
        return np.mean(a, axis=axis) / np.mean(b, axis=axis)

    res = stats.bootstrap((x, y), stat, confidence_level=confidence, n_resamples=resamples,
                          method="percentile", rng=rng, vectorized=True, paired=False)
    return ratio, float(res.confidence_interval.low), float(res.confidence_interval.high)


# ---- two arms -----------------------------------------------------------------------------------------------------
def welch(x, y, confidence: float = 0.95) -> TestResult:
    """x: [n_x], y: [n_y] -> Welch's two-sided t-test of mean(x) = mean(y) and the CI of mean(x) - mean(y).

    nan when an arm has fewer than 2 runs or both arms have zero variance (e.g. analytic FLOPs).
    """
    x, y = _arr(x), _arr(y)
    if len(x) < 2 or len(y) < 2 or (x.var() == 0 and y.var() == 0):
        return TestResult(math.nan, math.nan)
    res = stats.ttest_ind(x, y, equal_var=False)
    ci = res.confidence_interval(confidence_level=confidence)
    return TestResult(float(res.statistic), float(res.pvalue), float(res.df), float(ci.low), float(ci.high))


def welch_vs_reported(x, mean: float, sd: float, n: int) -> TestResult:
    """x: [n_x] our runs; a paper's mean, sd (ddof 1) and run count n -> Welch's two-sided test of equal means.

    The paper's raw values are unknown; Welch's test needs only each arm's mean, sd and size (scipy's
    ttest_ind_from_stats). nan when an arm has fewer than 2 runs or both sds are zero.
    """
    x = _arr(x)
    if len(x) < 2 or n < 2 or (x.std(ddof=1) == 0 and sd == 0):
        return TestResult(math.nan, math.nan)
    res = stats.ttest_ind_from_stats(float(x.mean()), float(x.std(ddof=1)), len(x), mean, sd, n, equal_var=False)
    return TestResult(float(res.statistic), float(res.pvalue))


def sd_from_ci(lo: float, hi: float, n: int, confidence: float = 0.95) -> float:
    """A reported t-based CI [lo, hi] of a mean over n runs -> the sd it implies: half-width sqrt(n) / t_{n-1}."""
    if n < 2 or hi < lo:
        raise ValueError(f"need n >= 2 and lo <= hi, got n={n}, [{lo}, {hi}]")
    return (hi - lo) / 2 * math.sqrt(n) / float(stats.t.ppf(0.5 + confidence / 2, df=n - 1))


def mann_whitney(x, y) -> TestResult:
    """x: [n_x], y: [n_y] -> U statistic of x and the two-sided p. +inf entries (censored) rank last, tied.

    Exact null distribution (ties included; scipy >= 1.13) when both arms have at most 8 runs, as with five
    seeds: the normal approximation scipy's "auto" falls back to on ties understates p at these sizes (a 5 vs 5
    split with ties gave 0.004 < the exact minimum 2/252). Larger arms: "auto" (normal, tie-corrected).
    """
    x, y = _ranked(x), _ranked(y)
    if len(x) == 0 or len(y) == 0:
        return TestResult(math.nan, math.nan)
    method = "exact" if max(len(x), len(y)) <= 8 else "auto"
    res = stats.mannwhitneyu(x, y, alternative="two-sided", method=method)
    return TestResult(float(res.statistic), float(res.pvalue))


def holm(p) -> np.ndarray:
    """p: [m] raw p-values of one family (nan = no test) -> Holm step-down adjusted p-values, same order.

    Sorted ascending, p_(i) (i = 1..m) is adjusted to max_{j <= i} min(1, (m - j + 1) p_(j)); a hypothesis is
    rejected at family-wise level alpha iff its adjusted p <= alpha (Holm 1979). nan entries do not count in m.
    Computed by statsmodels' multipletests(method="holm").
    """
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p, dtype=float)
    out = np.full_like(p, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    if len(tested):
        gc.freeze()  # statsmodels' Holm branch runs gc.collect() on every call (0.1-0.5 s in a big heap): frozen
        try:         # objects are not scanned, so it only looks at what was made since
            out[tested] = multipletests(p[tested], method="holm")[1]
        finally:
            gc.unfreeze()
    return out


def hedges_g(x, y) -> float:
    """x: [n_x], y: [n_y] -> (mean(x) - mean(y)) / pooled sd * J, J = 1 - 3 / (4 (n_x + n_y) - 9).

    J is Hedges' small-sample correction (Hedges & Olkin 1985, eq. 5.10's approximation). Positive: x larger.
    nan when an arm has fewer than 2 runs or the pooled sd is zero.
    """
    x, y = _arr(x), _arr(y)
    nx, ny = len(x), len(y)
    if nx < 2 or ny < 2:
        return math.nan
    pooled = math.sqrt(((nx - 1) * x.var(ddof=1) + (ny - 1) * y.var(ddof=1)) / (nx + ny - 2))
    if pooled == 0:
        return math.nan
    return float((x.mean() - y.mean()) / pooled * (1 - 3 / (4 * (nx + ny) - 9)))


def prob_improvement(x, y, mode: str = "max") -> float:
    """x: [n_x] method, y: [n_y] baseline -> P(X better than Y) + 0.5 P(X = Y) over all n_x * n_y pairs.

    "Better" is larger for mode "max", smaller for "min" (perplexity, seconds). 0.5 means no difference.
    +inf entries (runs censored above: never reached a target) lose to every finite value and tie each other.
    Unlike hedges_g, whose sign is that of mean(x) - mean(y), this reads the same way for either mode.
    """
    x, y = _ranked(x), _ranked(y)
    if len(x) == 0 or len(y) == 0:
        return math.nan
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    with np.errstate(invalid="ignore"):
        d = np.where(np.isinf(x[:, None]) & np.isinf(y[None, :]), 0.0, x[:, None] - y[None, :])  # [n_x, n_y]
    wins = (d > 0) if mode == "max" else (d < 0)
    return float(wins.mean() + 0.5 * (d == 0).mean())


# ---- what the design can show ------------------------------------------------------------------------------------
def min_mannwhitney_p(n1: int, n2: int) -> float:
    """Smallest two-sided exact Mann-Whitney p for arms of n1 and n2 runs (no ties): 2 / C(n1 + n2, n1).

    Complete separation is 1 of the C(n1+n2, n1) equally likely rank arrangements, in each of two directions.
    """
    if n1 < 1 or n2 < 1:
        return math.nan
    return min(1.0, 2 / math.comb(n1 + n2, n1))


def detectable_effect(n1: int, n2: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Standardized difference a two-sided two-sample t-test at level `alpha` detects with probability `power`.

    The noncentral t with df = n1 + n2 - 2 and noncentrality d sqrt(n1 n2 / (n1 + n2)), solved for d by
    statsmodels' TTestIndPower; e.g. 64 runs per arm detect d = 0.5 with 80% power (Cohen 1988, Table 2.4.1),
    5 per arm only d of about 2.
    """
    from statsmodels.stats.power import TTestIndPower

    if n1 < 2 or n2 < 2:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the noncentral t's tail integrals warn about precision far from the root
        return float(TTestIndPower().solve_power(effect_size=None, nobs1=n1, ratio=n2 / n1, alpha=alpha,
                                                 power=power, alternative="two-sided"))
