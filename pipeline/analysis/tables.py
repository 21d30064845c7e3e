"""The analyze stage: statistics, claim verdicts and the papers' table layouts, from the collected run tables.

    <tables>/runs_final.parquet --analyze()--> <out>/summary.{parquet,csv}      one row per variant x quantity
                                                <out>/comparisons.{parquet,csv}  one row per comparison x quantity
                                                <out>/claims.{parquet,csv}       one row per claim, with its verdict
                                                <out>/tables/<name>.{md,csv}     the papers' layouts, ours beside theirs
                                                <out>/analysis.json              profile, settings, limits, table data

Only runs of the active profile are analysed (others are counted and named in analysis.json), so leftovers of a
smoke run never mix into a paper-profile report. Units: accuracies are printed in % (harness fractions x 100);
perplexity, seconds and ratios as they are. Every table shows runs used / runs and the diverged count: a diverged
run's metric is excluded from the mean and the tests, never silently.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

import polars as pl

from ..seeding import rng
from . import stats
from .claims import arm_values, compare, comparable, direction, family_of, judge_claims
from .collect import read_tables
from .dvc_outputs import write_curves, write_metrics, write_summaries
from .formatting import markdown, num, pval, scale_of, table
from .ledger import QUANTITIES, Ledger, ledger_for
from .lookup import TableContext

# ---- per-variant summary -----------------------------------------------------------------------------------------------------
def summarize(final: pl.DataFrame, ledger: Ledger, settings) -> pl.DataFrame:
    """final [runs] -> one row per (experiment, variant, quantity): counts, mean, sd, t-CI, bootstrap CI.

    Values in harness units; n_runs = runs, n_diverged = of those diverged, n_missing = neither diverged nor
    carrying the quantity (e.g. never reached the target), n = the runs the statistics use."""
    rows = []
    keys = final.select("experiment", "variant", "method", "dataset", "subset", "metric", "mode").unique(
        subset=["experiment", "variant"], keep="first").sort("experiment", "variant")
    for k in keys.iter_rows(named=True):
        runs = final.filter((pl.col("experiment") == k["experiment"]) & (pl.col("variant") == k["variant"]))
        for q in QUANTITIES:
            x, n_runs, n_div, n_miss = arm_values(runs, k["variant"], q)
            s = stats.describe(x, settings.confidence)
            b = stats.bootstrap_interval(x, rng(settings.bootstrap_seed, f"{k['experiment']}/{k['variant']}/{q}"),
                                         settings.confidence, settings.bootstrap_resamples)
            rows.append({**k, "family": family_of(ledger, k["experiment"], k["variant"]), "quantity": q,
                         "direction": direction(q, runs), "n_runs": n_runs, "n_diverged": n_div, "n_missing": n_miss,
                         "n": s.n, "mean": s.mean, "sd": s.sd, "ci_lo": s.lo, "ci_hi": s.hi,
                         "boot_lo": b[0], "boot_hi": b[1]})
    return pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame()


def comparisons_table(comparisons: pl.DataFrame) -> dict:
    headers = ["Experiment", "Dataset/subset", "Quantity", "Method", "Baseline", "Runs (m/b)", "Mean m", "Mean b",
               "Diff [95% CI]", "Hedges g", "P(improve)", "Welch p (Holm)", "M-W p (Holm)", "M-W can reject"]
    rows = []
    for c in comparisons.to_dicts() if comparisons.height else []:
        sc = scale_of(c["metric"]) if c["quantity"] in ("final", "best") else 1.0
        rows.append([c["experiment"], f"{c['dataset']}/{c['subset'] or '-'}", c["quantity"], c["method"], c["baseline"],
                     f"{c['n_method']}/{c['runs_method']} vs {c['n_baseline']}/{c['runs_baseline']}"
                     + (f" ({c['diverged_method']}+{c['diverged_baseline']} div)"
                        if c["diverged_method"] + c["diverged_baseline"] else "")
                     + (f" ({c['missing_method']}+{c['missing_baseline']} never reached)" if c["censored"] else ""),
                     num(c["mean_method"] * sc), num(c["mean_baseline"] * sc),
                     f"{num(c['diff'] * sc)} [{num(c['diff_lo'] * sc)}, {num(c['diff_hi'] * sc)}]", num(c["hedges_g"]),
                     num(c["prob_improvement"]), f"{pval(c['welch_p'])} ({pval(c['welch_p_holm'])})",
                     f"{pval(c['mw_p'])} ({pval(c['mw_p_holm'])})", "yes" if c["mw_can_reject"] else "no"])
    return table("comparisons", "Every comparison: method against baseline, matched on dataset and subset", headers,
                 rows, comparisons, "Accuracies in %, diff = method − baseline; Hedges g has the sign of diff (positive: "
                 "method larger, better or not), P(improve) = P(method better) whatever the direction; Holm over an "
                 "experiment's comparisons of one quantity; 'M-W can reject' = the smallest possible Mann-Whitney p is "
                 "below Holm's first threshold. Time to target: runs that never reached it are counted ('never "
                 "reached') and ranked last in Mann-Whitney and P(improve); means, diff and Welch use the runs that "
                 "reached it, and a verdict on such a comparison uses Mann-Whitney.")


def claims_table(claims: pl.DataFrame) -> dict:
    headers = ["Claim", "Source", "Statement", "Claimed", "Ours [95% CI]", "Runs", "Verdict", "Why"]
    rows = []
    for c in claims.to_dicts():
        claimed = f"{c['claimed']:g}" if c["claimed"] is not None else "—"
        if c["claimed_sd"] is not None:
            claimed += f" ± {c['claimed_sd']:g}"
        elif c["claimed_lo"] is not None:
            claimed += f" [{c['claimed_lo']:g}, {c['claimed_hi']:g}]"
        ours = f"{num(c['value'], 3)} [{num(c['lo'], 3)}, {num(c['hi'], 3)}]" if c["value"] is not None else "—"
        if c["kind"] == "better" and c["value"] is not None:
            ours = f"diff {ours}, Holm p {pval(c['p_holm'])}"
        elif c["kind"] == "value" and c["p"] is not None and not math.isnan(c["p"]):
            ours += f", p {pval(c['p'])} vs paper"
        runs = "—" if not c["n_runs"] else f"{c['n']}/{c['n_runs']}" + (
            f", {c['n_diverged']} div" if c["n_diverged"] else "")
        rows.append([c["id"], c["source"], c["statement"], claimed, ours, runs, c["verdict"], c["reason"]])
    return table("claims", "Claims: what the papers say and what the harness measured", headers, rows, claims,
                 "Values in the papers' units (accuracy %); the verdict rules are printed with this table.")


# ---- the stage ----------------------------------------------------------------------------------------------------
def limits(final: pl.DataFrame, comparisons: pl.DataFrame, settings, experiments: list[str]) -> dict:
    """Per experiment: what its tests can and cannot show at the run counts it has."""
    out = {}
    for exp in experiments:
        if comparisons.height == 0:
            break
        cmp = comparisons.filter((pl.col("experiment") == exp) & (pl.col("quantity") == "final"))
        if cmp.height == 0:
            continue
        n1, n2 = int(cmp["n_method"].median()), int(cmp["n_baseline"].median())
        m = int(cmp["holm_m"][0])
        if m == 0:  # every comparison has an empty arm (e.g. all runs of a variant diverged): no test possible
            out[exp] = {"comparisons": 0, "n_method": n1, "n_baseline": n2}
            continue
        min_p = stats.min_mannwhitney_p(n1, n2)
        out[exp] = {"comparisons": m, "n_method": n1, "n_baseline": n2, "min_mannwhitney_p": min_p,
                    "holm_first_threshold": settings.alpha / m, "mannwhitney_can_reject": min_p <= settings.alpha / m,
                    "detectable_g": stats.detectable_effect(n1, n2, settings.alpha / m, settings.power)}
    return out


def experiment_tables(ctx: TableContext, experiment) -> list[dict]:
    """The tables an experiment adds (its package's tables.py: tables(ctx)); none when it has no such module."""
    return experiment.module("tables").tables(ctx) if experiment.has_module("tables") else []


def analyze(tables_dir: Path, params, out_dir: Path, ledger: Ledger | None = None,
            log: Callable[[str], None] = print) -> dict:
    """Stage entry. `params`: the validated Params (its experiments, .profile, .synthetic and .analysis); `ledger`
    (default: the experiments' claims files)."""
    tables_dir, out_dir = Path(tables_dir), Path(out_dir)
    final_all, history_all, incomplete = read_tables(tables_dir)
    ledger, settings, experiments = ledger or ledger_for(params), params.analysis, params.experiments
    mine = pl.col("profile").eq_missing(params.profile)
    final, other = final_all.filter(mine), final_all.filter(~mine)
    if other.height:
        log(f"ignoring {other.height} run(s) of other profiles: {sorted(set(other['profile'].to_list()))}")
    summary = summarize(final, ledger, settings)
    comparisons = compare(final, ledger, settings)
    claims = judge_claims(final, comparisons, ledger, settings, params.profile, params.synthetic)
    (out_dir / "tables").mkdir(parents=True, exist_ok=True)
    for name, frame in (("summary", summary), ("comparisons", comparisons), ("claims", claims)):
        frame.write_parquet(out_dir / f"{name}.parquet")
        frame.write_csv(out_dir / f"{name}.csv")
    write_metrics(summary, final, out_dir)  # dvc metrics show / diff
    write_summaries(claims, final, experiments, out_dir)  # dvc exp show
    write_curves(history_all.filter(pl.col("profile").eq_missing(params.profile)), final, out_dir)  # dvc plots
    built = [claims_table(claims)]
    for exp in experiments:
        ctx = TableContext(exp, summary, comparisons, claims, ledger, final, settings)
        built += experiment_tables(ctx, params.experiment(exp))
    built.append(comparisons_table(comparisons))
    for t in built:
        md = f"### {t['title']}\n\n{markdown(t['headers'], t['rows'])}\n{t['caption']}\n"
        (out_dir / "tables" / f"{t['name']}.md").write_text(md)
        t.pop("data").write_csv(out_dir / "tables" / f"{t['name']}.csv")
    present = set(final["experiment"].to_list())
    meta = {"profile": params.profile, "synthetic": params.synthetic,
            "comparable": comparable(params.profile, params.synthetic), "settings": settings.model_dump(),
            "runs": final.height, "other_profile_runs": other["run_dir"].to_list(), "incomplete_runs": incomplete,
            "experiments": {e: final.filter(pl.col("experiment") == e).height for e in experiments},
            "skipped": [f"{e}: no runs of profile {params.profile}; its tables and figures are empty"
                        for e in experiments if e not in present],
            "limits": limits(final, comparisons, settings, experiments),
            "devices": sorted({str(d) for d in final["device"].to_list()}),
            "git_commits": sorted({str(g) for g in final["git_commit"].to_list()}),
            "verdicts": claims.group_by("verdict").len().sort("verdict").to_dicts(), "tables": built}
    (out_dir / "analysis.json").write_text(json.dumps(meta, indent=2, default=str))
    log(f"analysed {final.height} runs: {comparisons.height} comparisons, {claims.height} claims -> {out_dir}")
    return meta
