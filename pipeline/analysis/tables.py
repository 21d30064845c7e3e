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

from ..config import EXPERIMENTS
from ..seeding import rng
from . import stats
from .claims import arm_values, compare, comparable, direction, family_of, judge_claims, resolve
from .collect import read_tables
from .formatting import markdown, mean_sd, num, pval, runs_cell, scale_of, table
from .ledger import LEDGER, QUANTITIES, Ledger, load_ledger

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


# ---- lookups -------------------------------------------------------------------------------------------------------
def _rows(summary: pl.DataFrame, experiment: str, quantity: str = "final") -> list[dict]:
    if summary.height == 0:
        return []
    return summary.filter((pl.col("experiment") == experiment) & (pl.col("quantity") == quantity)).to_dicts()


def _claims(claims: pl.DataFrame, **match) -> list[dict]:
    hit = claims
    for k, v in match.items():
        hit = hit.filter(pl.col(k).is_null() if v is None else pl.col(k) == v)
    return hit.to_dicts()


def _claim(claims: pl.DataFrame, **match) -> dict | None:
    """The one claim matching; an error if several do (a table cell shows one claim)."""
    hit = _claims(claims, **match)
    if len(hit) > 1:
        raise ValueError(f"several claims match {match}: {[c['id'] for c in hit]}")
    return hit[0] if hit else None


def _label(ledger: Ledger, kind: str, name) -> str:
    return ledger.labels.get(kind, {}).get(name, str(name))


# ---- the papers' layouts -----------------------------------------------------------------------------------------
def block_size_table(summary, claims, ledger, final) -> dict:
    """Adaptive-block-size Table 1: Method, Mean Perplexity, 95% CI Lower, 95% CI Upper; the paper's row beside."""
    headers = ["Method", "Mean Perplexity", "95% CI Lower", "95% CI Upper", "Runs", "Paper mean", "Paper CI",
               "Verdict"]
    rows, data = [], []
    order = list(ledger.labels.get("method", {}))  # the paper's rows first, in its order
    for r in sorted(_rows(summary, "block_size"), key=lambda r: (order.index(r["variant"]) if r["variant"] in order
                                                                   else len(order), r["variant"])):
        c = _claim(claims, experiment="block_size", kind="value", variant=r["variant"]) or {}
        rows.append([_label(ledger, "method", r["variant"]), num(r["mean"], 1), num(r["ci_lo"], 1), num(r["ci_hi"], 1),
                     runs_cell(r), num(c.get("claimed"), 1),
                     f"[{num(c.get('claimed_lo'), 1)}, {num(c.get('claimed_hi'), 1)}]" if c else "—",
                     c.get("verdict", "—")])
        data.append({**{k: r[k] for k in ("variant", "method", "n", "n_runs", "n_diverged", "mean", "ci_lo", "ci_hi")},
                     "paper_mean": c.get("claimed"), "paper_ci_lo": c.get("claimed_lo"), "paper_ci_hi": c.get("claimed_hi")})
    return table("block_size_table1", "Adaptive block size, Table 1: test perplexity", headers, rows,
                 pl.DataFrame(data, infer_schema_length=None), "Test perplexity at the last epoch; t-based 95% CI over seeds.")


def edba_table(summary, claims, ledger, final) -> dict:
    """EDBA Table 1: Dataset, Method, then one column per subset; a paper row and our row per method."""
    rs = _rows(summary, "edba")
    order = list(ledger.labels.get("subset", {}))
    subsets = sorted({r["subset"] for r in rs}, key=lambda s: (order.index(s) if s in order else len(order), str(s)))
    headers = ["Dataset", "Method", "Source"] + [_label(ledger, "subset", s) for s in subsets]
    rows, data = [], []
    for dataset in sorted({r["dataset"] for r in rs}):
        for method in sorted({r["method"] for r in rs if r["dataset"] == dataset}):
            paper, ours = [], []
            for s in subsets:
                r = next((x for x in rs if (x["dataset"], x["method"], x["subset"]) == (dataset, method, s)), None)
                c = _claim(claims, experiment="edba", kind="value", arm=method, dataset=dataset, subset=s)
                sc = scale_of(r["metric"]) if r else 100.0
                paper.append(f"{c['claimed']:.3f} ± {c['claimed_sd']:.3f}" if c else "—")
                ours.append(mean_sd(r, sc, 3) if r else "—")
                if r:
                    data.append({"dataset": dataset, "method": method, "subset": s, "variant": r["variant"],
                                 "paper_mean": c and c["claimed"], "paper_sd": c and c["claimed_sd"],
                                 **{k: r[k] * sc for k in ("mean", "sd", "ci_lo", "ci_hi")},
                                 **{k: r[k] for k in ("n", "n_runs", "n_diverged")}, "verdict": c and c["verdict"]})
            lab = [_label(ledger, "dataset", dataset), _label(ledger, "method", method)]
            rows += [lab + ["paper"] + paper, lab + ["ours"] + ours]
    return table("edba_table1", "EDBA, Table 1: test accuracy % by training-set size", headers, rows,
                 pl.DataFrame(data, infer_schema_length=None), "Mean ± sd over seeds (runs used/runs); final-epoch test accuracy.")


def _ratio(final, exp, dataset, variant, ref, quantity, invert, settings):
    runs = final.filter((pl.col("experiment") == exp) & (pl.col("dataset") == dataset) & ~pl.col("diverged"))
    x = runs.filter(pl.col("variant") == variant)[quantity].drop_nulls().to_numpy()
    y = runs.filter(pl.col("variant") == ref)[quantity].drop_nulls().to_numpy()
    num_, den = (y, x) if invert else (x, y)
    return stats.ratio_interval(num_, den, rng(settings.bootstrap_seed, f"table/{exp}/{variant}/{ref}/{quantity}"),
                                settings.confidence, settings.bootstrap_resamples)


def growth_table(summary, claims, ledger, final, settings) -> dict:
    """Growth: variant, accuracy, FLOPs fraction and wall-clock speed-up against the reference (fixed full size)."""
    headers = ["Dataset", "Variant", "Test accuracy % (ours)", "Paper", "FLOPs fraction [CI]", "Speed-up [CI]", "Verdict"]
    rows, data = [], []
    for r in _rows(summary, "growth"):
        scope = final.filter((pl.col("experiment") == "growth") & (pl.col("dataset") == r["dataset"]))
        refs = resolve(scope, ledger.reference.get("growth", ""))
        ref = refs[0] if len(refs) == 1 else None
        none = (math.nan,) * 3
        fl = _ratio(final, "growth", r["dataset"], r["variant"], ref, "train_flops", False, settings) if ref else none
        sp = _ratio(final, "growth", r["dataset"], r["variant"], ref, "train_seconds", True, settings) if ref else none
        cs = _claims(claims, experiment="growth", kind="value", variant=r["variant"])  # headline and ablation
        sc = scale_of(r["metric"])
        paper = "; ".join(f"{c['claimed']:.2f}" + (f" ± {c['claimed_sd']:.2f}" if c.get("claimed_sd") else "")
                          + f" ({c['id']})" for c in cs)
        rows.append([_label(ledger, "dataset", r["dataset"]), r["variant"], mean_sd(r, sc, 2), paper or "—",
                     f"{num(fl[0], 3)} [{num(fl[1], 3)}, {num(fl[2], 3)}]",
                     f"{num(sp[0], 2)}x [{num(sp[1], 2)}, {num(sp[2], 2)}]",
                     "; ".join(f"{c['verdict']} ({c['id']})" for c in cs) or "—"])
        data.append({"dataset": r["dataset"], "variant": r["variant"], "mean": r["mean"] * sc, "sd": r["sd"] * sc,
                     "n": r["n"], "n_runs": r["n_runs"], "n_diverged": r["n_diverged"],
                     "paper": "; ".join(f"{c['claimed']:g}" for c in cs) or None,
                     "flops_fraction": fl[0], "flops_lo": fl[1], "flops_hi": fl[2], "speedup": sp[0],
                     "speedup_lo": sp[1], "speedup_hi": sp[2], "reference": ref})
    return table("growth_table", "Growing networks: accuracy, FLOPs and wall-clock against the fixed network", headers,
                 rows, pl.DataFrame(data, infer_schema_length=None),
                 "FLOPs fraction = mean FLOPs / reference's; speed-up = reference's training seconds / variant's; "
                 "seeded bootstrap 95% CIs.")


def _against(comparisons: pl.DataFrame, r: dict) -> dict:
    """The comparison with summary row r's variant as the baseline, in r's own dataset and subset."""
    if comparisons.height == 0:
        return {}
    hit = comparisons.filter((pl.col("experiment") == "optimizers") & (pl.col("quantity") == "final") &
                             (pl.col("baseline") == r["variant"]) & pl.col("dataset").eq_missing(r["dataset"]) &
                             pl.col("subset").eq_missing(r["subset"]))
    return hit.row(0, named=True) if hit.height else {}


def optimizer_tables(summary, comparisons, ledger) -> list[dict]:
    """One table per technique family: accuracy and time-to-target per variant, best first, with the tests."""
    acc = _rows(summary, "optimizers")
    out = []
    for family in sorted({r["family"] for r in acc}):
        rs = sorted((r for r in acc if r["family"] == family), key=lambda r: -(r["mean"] if r["n"] else -math.inf))
        headers = ["Variant", "Test accuracy % mean ± sd (runs)", "95% CI", "Seconds to target [CI] (reached)",
                   "Δ vs method (pp)", "Holm p (Welch)", "Holm p (M-W)"]
        rows, data = [], []
        for r in rs:
            t = next(x for x in _rows(summary, "optimizers", "seconds_to_target") if x["variant"] == r["variant"])
            cm = _against(comparisons, r)  # this variant as the baseline of its family's method
            sc = scale_of(r["metric"])
            reached = f"{t['n']}/{t['n_runs'] - t['n_diverged']}"
            delta = f"{num(cm['diff'] * sc)} ({cm['method']})" if cm else "—"
            rows.append([r["variant"], mean_sd(r, sc, 2), f"[{num(r['ci_lo'] * sc)}, {num(r['ci_hi'] * sc)}]",
                         f"{num(t['mean'], 1)} [{num(t['ci_lo'], 1)}, {num(t['ci_hi'], 1)}] ({reached})",
                         delta, pval(cm.get("welch_p_holm")), pval(cm.get("mw_p_holm"))])
            data.append({"family": family, "variant": r["variant"], "mean": r["mean"] * sc, "sd": r["sd"] * sc,
                         "ci_lo": r["ci_lo"] * sc, "ci_hi": r["ci_hi"] * sc, "n": r["n"], "n_runs": r["n_runs"],
                         "n_diverged": r["n_diverged"], "seconds_to_target": t["mean"], "reached": t["n"],
                         "welch_p_holm": cm.get("welch_p_holm"), "mw_p_holm": cm.get("mw_p_holm")})
        slug = family.replace(" ", "_")
        out.append(table(f"optimizers_{slug}", f"Optimizers, {family}: accuracy and time to target", headers, rows,
                         pl.DataFrame(data, infer_schema_length=None),
                         "Best mean first; Δ = method − this variant in percentage points; time to target counts "
                         "only runs that reached it."))
    return out


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
def limits(final: pl.DataFrame, comparisons: pl.DataFrame, settings) -> dict:
    """Per experiment: what its tests can and cannot show at the run counts it has."""
    out = {}
    for exp in EXPERIMENTS:
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


def analyze(tables_dir: Path, params, out_dir: Path, ledger_path: Path = LEDGER,
            log: Callable[[str], None] = print) -> dict:
    """Stage entry. `params`: the validated Params (uses .profile, .synthetic and .analysis)."""
    tables_dir, out_dir = Path(tables_dir), Path(out_dir)
    final_all, _, incomplete = read_tables(tables_dir)
    ledger, settings = load_ledger(ledger_path), params.analysis
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
    built = [claims_table(claims), block_size_table(summary, claims, ledger, final),
             edba_table(summary, claims, ledger, final), growth_table(summary, claims, ledger, final, settings),
             *optimizer_tables(summary, comparisons, ledger), comparisons_table(comparisons)]
    for t in built:
        md = f"### {t['title']}\n\n{markdown(t['headers'], t['rows'])}\n{t['caption']}\n"
        (out_dir / "tables" / f"{t['name']}.md").write_text(md)
        t.pop("data").write_csv(out_dir / "tables" / f"{t['name']}.csv")
    present = set(final["experiment"].to_list())
    meta = {"profile": params.profile, "synthetic": params.synthetic,
            "comparable": comparable(params.profile, params.synthetic), "settings": settings.model_dump(),
            "runs": final.height, "other_profile_runs": other["run_dir"].to_list(), "incomplete_runs": incomplete,
            "experiments": {e: final.filter(pl.col("experiment") == e).height for e in EXPERIMENTS},
            "skipped": [f"{e}: no runs of profile {params.profile}; its tables and figures are empty"
                        for e in EXPERIMENTS if e not in present],
            "limits": limits(final, comparisons, settings),
            "devices": sorted({str(d) for d in final["device"].to_list()}),
            "git_commits": sorted({str(g) for g in final["git_commit"].to_list()}),
            "verdicts": claims.group_by("verdict").len().sort("verdict").to_dicts(), "tables": built}
    (out_dir / "analysis.json").write_text(json.dumps(meta, indent=2, default=str))
    log(f"analysed {final.height} runs: {comparisons.height} comparisons, {claims.height} claims -> {out_dir}")
    return meta
