"""The claims ledger (claims.yaml), per-comparison tests and per-claim verdicts, from the final run table.

    final (collect.py) + claims.yaml --compare()-------> comparisons  [comparison x quantity], Holm per family
                                     --judge_claims()--> claims       [claim]: claimed vs reproduced, verdict

Diverged runs are excluded from every mean and test and counted in n_diverged; runs that never reached the
target have no seconds_to_target and are counted in n_missing. Both counts travel into every table.

Verdict rules (the `verdict` column; `reason` says which rule fired). Applied in this order:
 1. not comparable (profile P): the runs were trained under smoke or quick (or on synthetic data). Numbers are
    shown, but a reduced-scale run never reproduces or refutes a paper's setting.
 2. not tested: a `note` claim: the harness has no quantity that tests it (the reason is printed).
 3. inconclusive: no runs match (or they are judged on another metric than the claim's); a name matches several
    variants; any run of an arm involved diverged; an arm has fewer than `analysis.min_runs` usable runs; or no
    interval can be formed (a ratio over a zero mean).
 4. value and ratio claims (a mean, or a ratio of means, in the paper's unit; 95% t-CI of the mean over seeds,
    or the seeded percentile-bootstrap CI of the ratio):
      not reproduced  the claimed value (or the claimed range for "about" claims) lies outside our CI;
      inconclusive    it lies inside, but our CI's half-width exceeds the unit's max_halfwidth (claims.yaml);
      reproduced      it lies inside a CI no wider than that.
 5. better claims ("A beats B" on a quantity, direction from the metric's mode):
      not reproduced  our mean difference points the other way (the p-value is shown so a reader sees whether
                      the reversal is itself significant);
      inconclusive    same direction, but the Holm-adjusted Welch p >= alpha;
      reproduced      same direction and Holm-adjusted Welch p < alpha.
 6. best claims ("A is the best of its family"):
      not reproduced  another variant of the family has a better mean;
      inconclusive    A has the best mean but is not significantly better (Holm-adjusted Welch) than every other;
      reproduced      A has the best mean and every comparison with it is significant.
The Welch p comes from the experiment's comparisons (Holm over every comparison of that experiment and quantity);
a claimed pair outside the configured comparisons is tested alone (unadjusted) and the reason says so.
"""
from __future__ import annotations

import fnmatch
import math
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
import yaml
from pydantic import ValidationError, model_validator

from ..schemas.base import Strict
from ..seeding import rng
from . import stats

LEDGER = Path(__file__).with_name("claims.yaml")
# quantity -> direction; None: the run's own mode (max for accuracy, min for perplexity)
QUANTITIES = {"final": None, "best": None, "seconds_to_target": "min", "epochs_to_target": "min",
              "train_seconds": "min", "train_flops": "min"}


# ---- the ledger ---------------------------------------------------------------------------------------------------
class Unit(Strict):
    scale: float  # harness value x scale = the paper's unit (fractions -> %)
    label: str
    max_halfwidth: float | None = None  # widest CI half-width (paper units) that may "reproduce" a value


class Rule(Strict):
    family: str
    methods: list[str] | Literal["all"]
    baselines: list[str] | Literal["all"]
    variants: list[str] | None = None  # glob patterns on variant names; None: every variant of the experiment
    quantities: list[str] = ["final"]


class Claim(Strict):
    id: str
    source: str
    statement: str
    kind: Literal["value", "ratio", "better", "best", "note"]
    experiment: str | None = None
    arm: str | None = None
    versus: str | None = None  # the baseline of ratio and better claims
    family: str | None = None  # the family a best claim ranks within
    dataset: str | None = None
    subset: str | None = None  # None: any subset
    quantity: str = "final"
    unit: str | None = None
    claimed: float | None = None
    claimed_sd: float | None = None
    claimed_ci: tuple[float, float] | None = None
    claimed_range: tuple[float, float] | None = None  # "about X": the interval our CI must meet
    invert: bool = False  # ratio claims: versus / arm instead of arm / versus (speed-ups)
    reason: str | None = None  # note claims: why the harness cannot test it

    @model_validator(mode="after")
    def _complete(self):
        needs = {"value": ["experiment", "arm", "unit", "claimed"], "ratio": ["experiment", "arm", "versus", "unit", "claimed"],
                 "better": ["experiment", "arm", "versus", "unit"], "best": ["experiment", "arm", "family", "unit"],
                 "note": ["reason"]}[self.kind]
        missing = [k for k in needs if getattr(self, k) is None]
        if missing:
            raise ValueError(f"{self.kind} claim needs {', '.join(missing)}")
        return self


class Ledger(Strict):
    units: dict[str, Unit]
    comparisons: dict[str, list[Rule]]
    labels: dict[str, dict[str, str]] = {}
    reference: dict[str, str] = {}  # experiment -> the variant name ratios in its table are taken against
    metrics: dict[str, str] = {}  # experiment -> the eval metric its claims are about
    claims: list[Claim]

    @model_validator(mode="after")
    def _consistent(self):
        ids = [c.id for c in self.claims]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate claim ids: {sorted({i for i in ids if ids.count(i) > 1})}")
        for c in self.claims:
            if c.unit is not None and c.unit not in self.units:
                raise ValueError(f"claim {c.id}: unknown unit {c.unit!r}")
            if c.quantity not in QUANTITIES:
                raise ValueError(f"claim {c.id}: unknown quantity {c.quantity!r}")
        for exp, rules in self.comparisons.items():
            for r in rules:
                if unknown := [q for q in r.quantities if q not in QUANTITIES]:
                    raise ValueError(f"comparisons.{exp}.{r.family}: unknown quantities {unknown}")
        return self


def load_ledger(path: Path = LEDGER) -> Ledger:
    try:
        return Ledger.model_validate(yaml.safe_load(Path(path).read_text()))
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"{path}: {where}: {first['msg']}") from None


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


def compare_pair(runs: pl.DataFrame, method: str, baseline: str, quantity: str, settings, tag: str) -> dict:
    """All statistics of one comparison (method vs baseline on one quantity); the p-values are not yet adjusted."""
    x, nx, dx, _ = arm_values(runs, method, quantity)
    y, ny, dy, _ = arm_values(runs, baseline, quantity)
    mode = direction(quantity, runs)
    w, u = stats.welch(x, y, settings.confidence), stats.mann_whitney(x, y)
    ratio = stats.ratio_interval(x, y, rng(settings.bootstrap_seed, f"ratio/{tag}"), settings.confidence,
                                 settings.bootstrap_resamples)
    diff = float(x.mean() - y.mean()) if len(x) and len(y) else math.nan
    better = "tie" if diff == 0 or math.isnan(diff) else ("method" if (diff > 0) == (mode == "max") else "baseline")
    return {"quantity": quantity, "direction": mode, "method": method, "baseline": baseline,
            "n_method": len(x), "n_baseline": len(y), "runs_method": nx, "runs_baseline": ny,
            "diverged_method": dx, "diverged_baseline": dy,
            "mean_method": float(x.mean()) if len(x) else math.nan, "mean_baseline": float(y.mean()) if len(y) else math.nan,
            "diff": diff, "diff_lo": w.diff_lo, "diff_hi": w.diff_hi, "ratio": ratio[0], "ratio_lo": ratio[1],
            "ratio_hi": ratio[2], "hedges_g": stats.hedges_g(x, y), "prob_improvement": stats.prob_improvement(x, y, mode),
            "welch_t": w.statistic, "welch_df": w.df, "welch_p": w.p, "mw_u": u.statistic, "mw_p": u.p,
            "mw_min_p": stats.min_mannwhitney_p(len(x), len(y)), "better": better}


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
    return out.with_columns(significant=pl.col("welch_p_holm") < settings.alpha)


# ---- claims --------------------------------------------------------------------------------------------------------
def comparable(profile: str, synthetic: bool) -> bool:
    """Only the paper profile on real data can reproduce (or refute) a paper's number."""
    return profile == "paper" and not synthetic


# the columns a claim's measurement contributes to the claims table (null where a claim has none)
MEASURED = {"variant": pl.String, "versus_variant": pl.String, "n": pl.Int64, "n_runs": pl.Int64,
            "n_diverged": pl.Int64, "mean": pl.Float64, "sd": pl.Float64, "value": pl.Float64, "lo": pl.Float64,
            "hi": pl.Float64, "p_holm": pl.Float64}


def _scope(final: pl.DataFrame, c: Claim) -> pl.DataFrame:
    runs = final.filter(pl.col("experiment") == c.experiment)
    if c.dataset is not None:
        runs = runs.filter(pl.col("dataset") == c.dataset)
    if c.subset is not None:
        runs = runs.filter(pl.col("subset") == c.subset)
    return runs


def _measure(c: Claim, ledger: Ledger, final: pl.DataFrame, comparisons: pl.DataFrame, settings) -> dict:
    """One claim -> what the runs say, in the paper's unit: value with its CI (and p for better/best claims).

    Returns {"missing": reason} when the claim's variants cannot be found."""
    scale = ledger.units[c.unit].scale
    runs = _scope(final, c)
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
           "n_diverged": sum(v[2] for v in values.values()), "fewest": min(len(v[0]) for v in values.values()),
           "value": s.mean, "lo": s.lo, "hi": s.hi}
    if c.kind == "ratio":
        num, den = (values[versus][0], values[arm][0]) if c.invert else (values[arm][0], values[versus][0])
        r = stats.ratio_interval(num, den, rng(settings.bootstrap_seed, f"claim/{c.id}"), settings.confidence,
                                 settings.bootstrap_resamples)
        out.update(value=r[0] * scale, lo=r[1] * scale, hi=r[2] * scale)
    elif c.kind == "better":
        row = _comparison(comparisons, c, arm, versus)
        out["unadjusted"] = row is None  # outside the configured comparisons: tested alone
        if row is None:
            row = compare_pair(runs, arm, versus, c.quantity, settings, f"claim/{c.id}")
            row["welch_p_holm"] = row["welch_p"]
        out.update(value=row["diff"] * scale, lo=row["diff_lo"] * scale, hi=row["diff_hi"] * scale,
                   p_holm=row["welch_p_holm"], better=row["better"])
    elif c.kind == "best":
        means = {v: float(a.mean()) for v in runs["variant"].unique().to_list()
                 if len(a := arm_values(runs, v, c.quantity)[0])}
        top = (max if direction(c.quantity, runs) == "max" else min)(means, key=means.get) if means else None
        ps = [(_comparison(comparisons, c, arm, v) or {}).get("welch_p_holm", math.nan) for v in means if v != arm]
        out.update(top=top, p_holm=float(np.max(ps)) if ps else math.nan,
                   all_significant=bool(ps) and all(p < settings.alpha for p in ps))
    return out


def _verdict(c: Claim, m: dict, ledger: Ledger, settings) -> tuple[str, str]:
    """Rules 3-6 of the module docstring, on the numbers of _measure."""
    if "missing" in m:
        return "inconclusive", m["missing"]
    if m["n_diverged"]:
        return "inconclusive", f"{m['n_diverged']} run(s) diverged"
    if m["fewest"] < settings.min_runs:
        return "inconclusive", f"fewer than {settings.min_runs} usable runs"
    if c.kind in ("value", "ratio"):
        t_lo, t_hi = tuple(c.claimed_range) if c.claimed_range else (c.claimed, c.claimed)
        width = ledger.units[c.unit].max_halfwidth
        if math.isnan(m["lo"]) or math.isnan(m["hi"]):
            return "inconclusive", "no interval (zero baseline or too few runs)"
        if t_hi < m["lo"] or t_lo > m["hi"]:
            return "not reproduced", "claimed value outside our CI"
        if width is not None and (m["hi"] - m["lo"]) / 2 > width:
            return "inconclusive", f"claimed value inside our CI, but its half-width exceeds {width:g}"
        return "reproduced", "claimed value inside our CI"
    if c.kind == "better":
        note = " (unadjusted: not in the experiment's comparisons)" if m["unadjusted"] else ""
        if m["better"] != "method":
            return "not reproduced", f"the difference points the other way{note}"
        if not m["p_holm"] < settings.alpha:
            return "inconclusive", f"same direction, Holm-adjusted p >= {settings.alpha:g}{note}"
        return "reproduced", f"same direction, Holm-adjusted p < {settings.alpha:g}{note}"
    if m["top"] != m["variant"]:
        return "not reproduced", f"{m['top']} has the better mean"
    if not m["all_significant"]:
        return "inconclusive", "best mean, but not significantly better than every other"
    return "reproduced", "best mean, significantly better than every other"


def _comparison(comparisons: pl.DataFrame, c: Claim, method: str, baseline: str) -> dict | None:
    if comparisons.height == 0:
        return None
    hit = comparisons.filter((pl.col("experiment") == c.experiment) & (pl.col("quantity") == c.quantity) &
                             (pl.col("method") == method) & (pl.col("baseline") == baseline))
    return hit.row(0, named=True) if hit.height else None


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
        rows.append(row)
    frame = pl.DataFrame(rows, infer_schema_length=None)
    return frame.with_columns([pl.lit(None, dtype=t).alias(k) for k, t in MEASURED.items() if k not in frame.columns])
