"""Trend claims: "the gain of A over B grows as the training set shrinks" (EDBA's reading of its Table 1).

    final [runs of one experiment and dataset] --measure()--> slope of (mean A - mean B) against log10(size),
                                                              its CI, the per-size gains
                                                  --verdict()--> reproduced / not reproduced / inconclusive

Per training-set size s (the runs' `size` column, e.g. metrics.json extra subset_size): the gain
d_s = mean(A_s) - mean(B_s) with its standard error se_s = sqrt(var(A_s)/n_A + var(B_s)/n_B) (different runs at
every size, so the d_s are independent). The trend is the weighted least-squares slope of d_s on x_s = log10(s),
weights 1/se_s^2: beta = sum w (x - xw)(d - dw) / sum w (x - xw)^2, se(beta) = 1 / sqrt(sum w (x - xw)^2), and a
normal interval beta +- z se(beta). "Grows as the data shrinks" is beta < 0 (in the claim's unit per decade of
training-set size). The test is weak with few sizes and five seeds; an interval that crosses 0 is inconclusive.
"""
from __future__ import annotations

import math

import numpy as np
import polars as pl
from scipy import stats as sps



def _values(runs: pl.DataFrame, name: str, quantity: str) -> tuple[np.ndarray, int]:
    """(finite values of the usable runs, diverged count) of the arm `name` (a variant or a method name)."""
    arm = runs.filter((pl.col("variant") == name) | (pl.col("method") == name))
    ok = arm.filter(~pl.col("diverged"))[quantity].drop_nulls().cast(pl.Float64).to_numpy()
    return ok[np.isfinite(ok)], int(arm["diverged"].sum())


def measure(runs: pl.DataFrame, arm: str, versus: str, quantity: str, size: str, scale: float,
            confidence: float, min_runs: int) -> dict:
    """runs [one experiment, one dataset] -> {"value": slope, "lo", "hi", "sizes", "gains", ...} or {"missing"}."""
    if size not in runs.columns:
        return {"missing": f"the runs have no '{size}' column (the training-set size)"}
    points, n_div, fewest = [], 0, math.inf
    for (subset,), group in sorted(runs.group_by(["subset"]), key=lambda g: str(g[0][0])):
        (xa, da), (xb, db) = _values(group, arm, quantity), _values(group, versus, quantity)
        if not (len(xa) or da) or not (len(xb) or db):
            continue  # an arm without runs at this size
        n_div += da + db
        fewest = min(fewest, len(xa), len(xb))
        if len(xa) < 2 or len(xb) < 2:
            continue
        se = math.sqrt(np.var(xa, ddof=1) / len(xa) + np.var(xb, ddof=1) / len(xb)) * scale
        points.append((float(group[size].drop_nulls().median()), (xa.mean() - xb.mean()) * scale, se, subset))
    out = {"n_diverged": n_div, "fewest": 0 if math.isinf(fewest) else fewest, "n": len(points),
           "sizes": [p[0] for p in points], "gains": [p[1] for p in points]}
    if len(points) < 3:
        return {**out, "missing": f"{len(points)} training-set sizes with runs of both arms; a trend needs 3"}
    x, d, se = (np.array([p[i] for p in points], dtype=float) for i in range(3))
    if np.any(se <= 0) or np.any(x <= 0):
        return {**out, "missing": "a size without spread in its runs, or a size of zero"}
    x, w = np.log10(x), 1 / se ** 2
    xw, dw = np.sum(w * x) / w.sum(), np.sum(w * d) / w.sum()
    sxx = np.sum(w * (x - xw) ** 2)
    if sxx == 0:
        return {**out, "missing": "every size is the same"}
    beta, half = np.sum(w * (x - xw) * (d - dw)) / sxx, sps.norm.ppf(0.5 + confidence / 2) / math.sqrt(sxx)
    return {**out, "value": float(beta), "lo": float(beta - half), "hi": float(beta + half),
            "p": float(2 * sps.norm.sf(abs(beta) * math.sqrt(sxx))), "mean": float(beta), "sd": math.nan,
            "min_runs": min_runs}


def verdict(m: dict, alpha: float) -> tuple[str, str]:
    """Rule 7: the gain grows as the data shrinks when the slope's interval lies below 0."""
    if "missing" in m:
        return "inconclusive", m["missing"]
    if m["n_diverged"]:
        return "inconclusive", f"{m['n_diverged']} run(s) diverged"
    if m["fewest"] < m["min_runs"]:
        return "inconclusive", f"fewer than {m['min_runs']} usable runs at some size"
    gains = ", ".join(f"{g:+.2f} at {s:g}" for s, g in sorted(zip(m["sizes"], m["gains"])))
    if m["hi"] < 0:
        return "reproduced", f"the gain shrinks as the set grows, slope CI below 0 (gains: {gains})"
    if m["lo"] > 0:
        return "not reproduced", f"the gain grows with the set, slope CI above 0 (gains: {gains})"
    return "inconclusive", f"slope CI contains 0, p = {m['p']:.2g} (gains: {gains})"
