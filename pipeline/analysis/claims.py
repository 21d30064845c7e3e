"""Per-comparison tests and per-claim verdicts, from the final run table and the ledger (ledger.py: every
experiment's claims.yaml).

    final (collect.py) + the ledger  --compare()-------> comparisons  [comparison x quantity], Holm per family
                                     --judge_claims()--> claims       [claim]: claimed vs reproduced, verdict

Diverged runs are excluded from every mean and test and counted in n_diverged. Runs that never reached the target
have no seconds_to_target / epochs_to_target: they are counted in n_missing and, being censored (slower than any
run that reached it), enter the rank-based Mann-Whitney test and P(improve) as +inf; means, Welch and Hedges' g
use the runs that reached it. A comparison with such runs is `censored`, and its direction (`better`) and the
p the verdicts use are then P(improve) and Mann-Whitney's. Both counts travel into every table.

Verdict rules (the `verdict` column; `reason` says which rule fired). Applied in this order:
 1. not comparable (profile P): the runs were trained under smoke or quick (or on synthetic data). Numbers are
    shown, but a reduced-scale run never reproduces or refutes a paper's setting.
 2. not tested: a `note` claim: the harness has no quantity that tests it (the reason is printed).
 3. inconclusive: no runs match (or they are judged on another metric than the claim's); a name matches several
    variants or several (dataset, subset) comparisons; any run of an arm involved diverged; an arm has fewer than
    `analysis.min_runs` usable runs; a mean time-to-target with runs that never reached the target; or no
    interval can be formed (a ratio over a zero mean).
 4. value and ratio claims (a mean, or a ratio of means, in the paper's unit; 95% t-CI of the mean over seeds,
    or the seeded percentile-bootstrap CI of the ratio). A value the paper gives with its spread (claimed_sd, or
    claimed_ci, over claimed_n runs) is tested against it with Welch's test from the paper's summary statistics:
      not reproduced  Welch p < alpha (with a spread); else the claimed value (or the claimed range for "about"
                      claims) lies outside our CI;
      inconclusive    not rejected, but our CI's half-width exceeds the unit's max_halfwidth (units.yaml);
      reproduced      not rejected, with a CI no wider than that.
 5. better claims ("A beats B" on a quantity, direction from the metric's mode):
      not reproduced  the difference points the other way and that reversal is significant (Holm-adjusted p < alpha);
      inconclusive    either direction without a significant difference (the reason says which way it points);
      reproduced      same direction and Holm-adjusted p < alpha.
 6. best claims ("A is the best of its family"):
      not reproduced  another variant has a better mean and is significantly better than A;
      inconclusive    A has the best mean but is not significantly better than every other, or another variant
                      has a better mean without a significant difference;
      reproduced      A has the best mean and every comparison with it is significant.
 7. trend claims ("A's gain over B grows as the training set shrinks", per dataset): the weighted slope of the
    per-size gains against log10(training-set size), with a normal interval (pipeline/analysis/trend.py):
      reproduced      the interval lies below 0;  not reproduced  above 0;  inconclusive  it contains 0.
The p of rules 5-6 is Welch's (Mann-Whitney's for a censored comparison), Holm-adjusted over every comparison of
the experiment and quantity; a claimed pair outside the configured comparisons is tested alone (unadjusted) and
the reason says so. Value-claim p-values (rule 4) are per claim, not adjusted.
"""
from __future__ import annotations

import fnmatch
import math

import numpy as np
import polars as pl

from ..seeding import rng
from . import stats, trend
from .ledger import CENSORED, QUANTITIES, Claim, Ledger, Rule


# ---- arms ----------------------------------------------------------------------------------------------------------
def family_of(ledger: Ledger, experiment: str, variant: str) -> str:
    """The first rule of the experiment whose variant patterns match; the experiment's name when none does."""
    for r in ledger.comparisons.get(experiment, []):
        if r.variants is None or any(fnmatch.fnmatchcase(variant, p) for p in r.variants):
            return r.family
    return experiment


def resolve(runs: pl.DataFrame, name: str) -> list[str]:
    """Variants of `runs` that `name` means: those named so, else those whose metrics.json method is `name`."""
    exact = runs.filter(pl.col("variant") == name)["variant"].unique().to_list()
    return sorted(exact or runs.filter(pl.col("method") == name)["variant"].unique().to_list())


def arm_values(runs: pl.DataFrame, variant: str, quantity: str) -> tuple[np.ndarray, int, int, int]:
    """-> (values of usable runs [n], n_runs, n_diverged, n_missing): diverged runs are counted, not used."""
    arm = runs.filter(pl.col("variant") == variant)
    ok = arm.filter(~pl.col("diverged"))
    values = ok[quantity].drop_nulls().cast(pl.Float64).to_numpy()
    values = values[np.isfinite(values)]
    n_div = int(arm["diverged"].sum())
    return values, arm.height, n_div, ok.height - len(values)


def direction(quantity: str, runs: pl.DataFrame) -> str:
    return QUANTITIES[quantity] or (runs["mode"][0] if runs.height else "max")


# ---- comparisons ---------------------------------------------------------------------------------------------------
def pairs(runs: pl.DataFrame, rule: Rule) -> list[tuple[str, str]]:
    """Runs of one experiment and one (dataset, subset) -> (method variant, baseline variant) pairs of the rule."""
    names = sorted(runs["variant"].unique().to_list())
    if rule.variants is not None:
        names = [v for v in names if any(fnmatch.fnmatchcase(v, p) for p in rule.variants)]
    runs = runs.filter(pl.col("variant").is_in(names))

    def side(spec):
        return names if spec == "all" else sorted({v for n in spec for v in resolve(runs, n)})

    out = []
    for m in side(rule.methods):
        out += [(m, b) for b in side(rule.baselines) if b != m and (m, b) not in out and (b, m) not in out]
    return out


def ranked(values: np.ndarray, n_missing: int, quantity: str) -> np.ndarray:
    """Time-to-target quantities: the runs that never reached the target join as +inf (censored, ranked last)."""
    return np.concatenate([values, np.full(n_missing, np.inf)]) if quantity in CENSORED else values


def compare_pair(runs: pl.DataFrame, method: str, baseline: str, quantity: str, settings, tag: str) -> dict:
    """All statistics of one comparison (method vs baseline on one quantity); the p-values are not yet adjusted.

    hedges_g and diff are signed method - baseline; prob_improvement and `better` follow the quantity's direction."""
    x, nx, dx, mx = arm_values(runs, method, quantity)
    y, ny, dy, my = arm_values(runs, baseline, quantity)
    xr, yr = ranked(x, mx, quantity), ranked(y, my, quantity)
    censored = quantity in CENSORED and mx + my > 0
    mode = direction(quantity, runs)
    w, u = stats.welch(x, y, settings.confidence), stats.mann_whitney(xr, yr)
    ratio = stats.ratio_interval(x, y, rng(settings.bootstrap_seed, f"ratio/{tag}"), settings.confidence,
                                 settings.bootstrap_resamples)
    diff = float(x.mean() - y.mean()) if len(x) and len(y) else math.nan
    p_imp = stats.prob_improvement(xr, yr, mode)
    lead = (p_imp - 0.5) if censored else (diff if mode == "max" else -diff)  # > 0: the method is better
    better = "tie" if lead == 0 or math.isnan(lead) else ("method" if lead > 0 else "baseline")
    return {"quantity": quantity, "direction": mode, "method": method, "baseline": baseline,
            "n_method": len(x), "n_baseline": len(y), "runs_method": nx, "runs_baseline": ny,
            "diverged_method": dx, "diverged_baseline": dy, "missing_method": mx, "missing_baseline": my,
            "censored": censored,
            "mean_method": float(x.mean()) if len(x) else math.nan, "mean_baseline": float(y.mean()) if len(y) else math.nan,
            "diff": diff, "diff_lo": w.diff_lo, "diff_hi": w.diff_hi, "ratio": ratio[0], "ratio_lo": ratio[1],
            "ratio_hi": ratio[2], "hedges_g": stats.hedges_g(x, y), "prob_improvement": p_imp,
            "welch_t": w.statistic, "welch_df": w.df, "welch_p": w.p, "mw_u": u.statistic, "mw_p": u.p,
            "mw_min_p": stats.min_mannwhitney_p(len(xr), len(yr)), "better": better}


def compare(final: pl.DataFrame, ledger: Ledger, settings) -> pl.DataFrame:
    """final [runs] -> one row per (experiment, family, dataset, subset, method, baseline, quantity), Holm-adjusted
    over all rows of the same experiment and quantity."""
    rows = []
    for exp, rules in ledger.comparisons.items():
        exp_runs = final.filter(pl.col("experiment") == exp)
        for (dataset, subset), runs in sorted(exp_runs.group_by(["dataset", "subset"]),
                                              key=lambda g: (str(g[0][0]), str(g[0][1]))):
            for rule in rules:
                for m, b in pairs(runs, rule):
                    for q in rule.quantities:
                        tag = f"{exp}/{m}/{b}/{q}"
                        rows.append({"experiment": exp, "family": rule.family, "dataset": dataset, "subset": subset,
                                     "metric": runs["metric"][0], **compare_pair(runs, m, b, q, settings, tag)})
    if not rows:
        return pl.DataFrame()
    table = pl.DataFrame(rows, infer_schema_length=None).with_row_index("_i")
    parts = []
    for _, part in table.group_by(["experiment", "quantity"], maintain_order=True):
        m = int(part["mw_p"].is_not_nan().sum())  # tests actually made: the Holm family size
        parts.append(part.with_columns(
            welch_p_holm=pl.Series(stats.holm(part["welch_p"].to_numpy())),
            mw_p_holm=pl.Series(stats.holm(part["mw_p"].to_numpy())),
            holm_m=pl.lit(m), mw_can_reject=pl.col("mw_min_p") <= settings.alpha / max(m, 1)))
    out = pl.concat(parts).sort("_i").drop("_i")
    p = pl.when(pl.col("censored")).then(pl.col("mw_p_holm")).otherwise(pl.col("welch_p_holm"))
    return out.with_columns(p_holm=p, significant=p < settings.alpha)  # p_holm: the p the verdicts use


# ---- claims --------------------------------------------------------------------------------------------------------
def comparable(profile: str, synthetic: bool) -> bool:
    """Only the paper profile on real data can reproduce (or refute) a paper's number."""
    return profile == "paper" and not synthetic


# the columns a claim's measurement contributes to the claims table (null where a claim has none)
MEASURED = {"variant": pl.String, "versus_variant": pl.String, "n": pl.Int64, "n_runs": pl.Int64,
            "n_diverged": pl.Int64, "n_missing": pl.Int64, "mean": pl.Float64, "sd": pl.Float64, "value": pl.Float64,
            "lo": pl.Float64, "hi": pl.Float64, "p": pl.Float64, "p_holm": pl.Float64}


def _scope(final: pl.DataFrame, c: Claim) -> pl.DataFrame:
    runs = final.filter(pl.col("experiment") == c.experiment)
    if c.dataset is not None:
        runs = runs.filter(pl.col("dataset") == c.dataset)
    if c.subset is not None:
        runs = runs.filter(pl.col("subset") == c.subset)
    return runs


def _measure(c: Claim, ledger: Ledger, final: pl.DataFrame, comparisons: pl.DataFrame, settings) -> dict:
    """One claim -> what the runs say, in the paper's unit: value with its CI (and p for better/best claims).

    Returns {"missing": reason} when the claim's variants (or its comparison) cannot be found."""
    scale = ledger.units[c.unit].scale
    runs = _scope(final, c)
    if c.kind == "trend":  # over every subset of the dataset: analysis/trend.py
        return trend.measure(runs, c.arm, c.versus, c.quantity, c.size, scale, settings.confidence, settings.min_runs)
    arms = {"arm": resolve(runs, c.arm)}
    if c.kind == "best":
        members = [v for v in runs["variant"].unique().to_list() if family_of(ledger, c.experiment, v) == c.family]
        runs = runs.filter(pl.col("variant").is_in(members))
    elif c.versus:
        arms["versus"] = resolve(runs, c.versus)
    if runs.height == 0 or any(not v for v in arms.values()):
        return {"missing": "no runs match"}
    wanted = ledger.metrics.get(c.experiment)
    if wanted and c.quantity in ("final", "best") and set(runs["metric"].to_list()) != {wanted}:
        return {"missing": f"runs are judged on {sorted(set(runs['metric'].to_list()))}, the claim is about {wanted}"}
    if ambiguous := {k: v for k, v in arms.items() if len(v) > 1}:
        return {"missing": f"ambiguous names: {ambiguous}"}
    arm, versus = arms["arm"][0], (arms.get("versus") or [None])[0]
    values = {v: arm_values(runs, v, c.quantity) for v in ([arm, versus] if versus else [arm])}
    s = stats.describe(values[arm][0] * scale, settings.confidence)
    out = {"variant": arm, "versus_variant": versus, "n": s.n, "n_runs": values[arm][1], "mean": s.mean, "sd": s.sd,
           "n_diverged": sum(v[2] for v in values.values()), "n_missing": sum(v[3] for v in values.values()),
           "fewest": min(len(ranked(v[0], v[3], c.quantity)) for v in values.values()),  # censored runs count
           "value": s.mean, "lo": s.lo, "hi": s.hi}
    if c.kind == "value" and c.claimed_n:
        sd = c.claimed_sd if c.claimed_sd is not None else stats.sd_from_ci(*c.claimed_ci, c.claimed_n,
                                                                              settings.confidence)
        out["p"] = stats.welch_vs_reported(values[arm][0] * scale, c.claimed, sd, c.claimed_n).p
    elif c.kind == "ratio":
        num, den = (values[versus][0], values[arm][0]) if c.invert else (values[arm][0], values[versus][0])
        r = stats.ratio_interval(num, den, rng(settings.bootstrap_seed, f"claim/{c.id}"), settings.confidence,
                                 settings.bootstrap_resamples)
        out.update(value=r[0] * scale, lo=r[1] * scale, hi=r[2] * scale)
    elif c.kind == "better":
        row = _comparison(comparisons, c, arm, versus)
        if isinstance(row, str):
            return {"missing": row}
        out["unadjusted"] = row is None  # outside the configured comparisons: tested alone
        if row is None:
            row = compare_pair(runs, arm, versus, c.quantity, settings, f"claim/{c.id}")
            row["p_holm"] = row["mw_p"] if row["censored"] else row["welch_p"]
        out.update(value=row["diff"] * scale, lo=row["diff_lo"] * scale, hi=row["diff_hi"] * scale,
                   p_holm=row["p_holm"], better=row["better"], censored=row["censored"])
    elif c.kind == "best":
        means = {v: float(a.mean()) for v in runs["variant"].unique().to_list()
                 if len(a := arm_values(runs, v, c.quantity)[0])}
        top = (max if direction(c.quantity, runs) == "max" else min)(means, key=means.get) if means else None
        rows = {v: _comparison(comparisons, c, arm, v) for v in means if v != arm}
        if bad := [r for r in rows.values() if isinstance(r, str)]:
            return {"missing": bad[0]}
        ps = {v: (r or {}).get("p_holm", math.nan) for v, r in rows.items()}
        out.update(top=top, p_holm=float(np.max(list(ps.values()))) if ps else math.nan,
                   all_significant=bool(ps) and all(p < settings.alpha for p in ps.values()),
                   top_p=ps.get(top, math.nan))
    return out


def _verdict(c: Claim, m: dict, ledger: Ledger, settings) -> tuple[str, str]:
    """Rules 3-6 of the module docstring, on the numbers of _measure."""
    alpha = settings.alpha
    if c.kind == "trend":
        return trend.verdict(m, alpha)
    if "missing" in m:
        return "inconclusive", m["missing"]
    if m["n_diverged"]:
        return "inconclusive", f"{m['n_diverged']} run(s) diverged"
    if m["fewest"] < settings.min_runs:
        return "inconclusive", f"fewer than {settings.min_runs} usable runs"
    if c.kind in ("value", "ratio"):
        if c.quantity in CENSORED and m["n_missing"]:
            return "inconclusive", f"{m['n_missing']} run(s) never reached the target: no mean time to it"
        width = ledger.units[c.unit].max_halfwidth
        if math.isnan(m["lo"]) or math.isnan(m["hi"]):
            return "inconclusive", "no interval (zero baseline or too few runs)"
        if not math.isnan(p := m.get("p", math.nan)):
            test = f"Welch against the paper's mean and spread (n={c.claimed_n}): p = {p:.2g}"
            if p < alpha:
                return "not reproduced", test
        else:
            test = "claimed value inside our CI"
            t_lo, t_hi = tuple(c.claimed_range) if c.claimed_range else (c.claimed, c.claimed)
            if t_hi < m["lo"] or t_lo > m["hi"]:
                return "not reproduced", "claimed value outside our CI"
        if width is not None and (m["hi"] - m["lo"]) / 2 > width:
            return "inconclusive", f"{test}, but our CI's half-width exceeds {width:g}"
        return "reproduced", test
    if c.kind == "better":
        test = "Mann-Whitney, runs that never reached the target ranked last" if m["censored"] else "Welch"
        note = f"; {test}" + (", unadjusted: not in the experiment's comparisons" if m["unadjusted"] else "")
        significant = m["p_holm"] < alpha
        if m["better"] == "method":
            return ("reproduced", f"same direction, Holm-adjusted p < {alpha:g}{note}") if significant else \
                ("inconclusive", f"same direction, Holm-adjusted p >= {alpha:g}{note}")
        if m["better"] == "baseline" and significant:
            return "not reproduced", f"the difference points the other way, Holm-adjusted p < {alpha:g}{note}"
        return "inconclusive", f"no difference or the other way, not significantly (p >= {alpha:g}){note}"
    if m["top"] != m["variant"]:
        if m["top_p"] < alpha:
            return "not reproduced", f"{m['top']} has the better mean, significantly (Holm-adjusted p < {alpha:g})"
        return "inconclusive", f"{m['top']} has the better mean, but not significantly"
    if not m["all_significant"]:
        return "inconclusive", "best mean, but not significantly better than every other"
    return "reproduced", "best mean, significantly better than every other"


def _comparison(comparisons: pl.DataFrame, c: Claim, method: str, baseline: str) -> dict | str | None:
    """The configured comparison of method against baseline within the claim's (dataset, subset), oriented so;
    None when there is none, a reason (str) when several (dataset, subset) match."""
    if comparisons.height == 0:
        return None
    hit = comparisons.filter((pl.col("experiment") == c.experiment) & (pl.col("quantity") == c.quantity) &
                             (((pl.col("method") == method) & (pl.col("baseline") == baseline)) |
                              ((pl.col("method") == baseline) & (pl.col("baseline") == method))))
    for key in ("dataset", "subset"):
        if getattr(c, key) is not None:
            hit = hit.filter(pl.col(key) == getattr(c, key))
    if hit.height > 1:
        return f"{method} vs {baseline} is compared in {hit.height} (dataset, subset) groups: the claim must name one"
    if hit.height == 0:
        return None
    row = hit.row(0, named=True)
    if row["method"] == method:
        return row
    flip = {"method": "baseline", "baseline": "method", "tie": "tie"}  # the pair was stored the other way round
    return {**row, "method": method, "baseline": baseline, "diff": -row["diff"], "diff_lo": -row["diff_hi"],
            "diff_hi": -row["diff_lo"], "hedges_g": -row["hedges_g"], "prob_improvement": 1 - row["prob_improvement"],
            "better": flip[row["better"]]}


def judge_claims(final: pl.DataFrame, comparisons: pl.DataFrame, ledger: Ledger, settings,
                 profile: str, synthetic: bool) -> pl.DataFrame:
    """final [runs] (this profile's) + comparisons -> one row per claim: claimed, reproduced (paper units), verdict."""
    rows = []
    for c in ledger.claims:
        row = {"id": c.id, "source": c.source, "statement": c.statement, "kind": c.kind, "experiment": c.experiment,
               "arm": c.arm, "versus": c.versus, "dataset": c.dataset, "subset": c.subset, "quantity": c.quantity,
               "unit": c.unit, "unit_label": ledger.units[c.unit].label if c.unit else None, "claimed": c.claimed,
               "claimed_sd": c.claimed_sd,
               "claimed_lo": (c.claimed_ci or c.claimed_range or (None, None))[0],
               "claimed_hi": (c.claimed_ci or c.claimed_range or (None, None))[1]}
        if c.kind == "note":
            row.update(verdict="not tested", reason=c.reason)
        else:
            measured = _measure(c, ledger, final, comparisons, settings)
            verdict, reason = _verdict(c, measured, ledger, settings)
            row.update({k: v for k, v in measured.items() if k in MEASURED}, verdict=verdict, reason=reason)
            if not comparable(profile, synthetic):
                data = "synthetic data" if synthetic else "real data at reduced scale"
                row.update(verdict=f"not comparable (profile {profile})",
                           reason=f"{data}: the numbers check the pipeline, not the paper's setting")
            row["reason"] += f" ({c.caveat})" if c.caveat else ""  # what the verdict can show, whatever it is
        rows.append(row)
    frame = pl.DataFrame(rows, infer_schema_length=None)
    return frame.with_columns([pl.lit(None, dtype=t).alias(k) for k, t in MEASURED.items() if k not in frame.columns])
