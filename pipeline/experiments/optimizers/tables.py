"""Experiment 4's tables: one per technique family (optimizers, normalisation, lr schedules), best mean first,
with time to target and the tests against the family's method.

    tables(ctx: pipeline.analysis.lookup.TableContext) -> [table]   (pipeline.analysis.formatting.table)
"""
from __future__ import annotations

import math

import polars as pl

from ...analysis.formatting import mean_sd, num, pval, scale_of, table
from ...analysis.lookup import TableContext, against, rows


def tables(ctx: TableContext) -> list[dict]:
    acc = rows(ctx)
    out = []
    for family in sorted({r["family"] for r in acc}):
        rs = sorted((r for r in acc if r["family"] == family), key=lambda r: -(r["mean"] if r["n"] else -math.inf))
        headers = ["Variant", "Test accuracy % mean ± sd (runs)", "95% CI", "Seconds to target [CI] (reached)",
                   "Δ vs method (pp)", "Holm p (Welch)", "Holm p (M-W)"]
        body, data = [], []
        for r in rs:
            t = next(x for x in rows(ctx, "seconds_to_target") if x["variant"] == r["variant"])
            cm = against(ctx, r)  # this variant as the baseline of its family's method
            sc = scale_of(r["metric"])
            reached = f"{t['n']}/{t['n_runs'] - t['n_diverged']}"
            delta = f"{num(cm['diff'] * sc)} ({cm['method']})" if cm else "—"
            body.append([r["variant"], mean_sd(r, sc, 2), f"[{num(r['ci_lo'] * sc)}, {num(r['ci_hi'] * sc)}]",
                         f"{num(t['mean'], 1)} [{num(t['ci_lo'], 1)}, {num(t['ci_hi'], 1)}] ({reached})",
                         delta, pval(cm.get("welch_p_holm")), pval(cm.get("mw_p_holm"))])
            data.append({"family": family, "variant": r["variant"], "mean": r["mean"] * sc, "sd": r["sd"] * sc,
                         "ci_lo": r["ci_lo"] * sc, "ci_hi": r["ci_hi"] * sc, "n": r["n"], "n_runs": r["n_runs"],
                         "n_diverged": r["n_diverged"], "seconds_to_target": t["mean"], "reached": t["n"],
                         "welch_p_holm": cm.get("welch_p_holm"), "mw_p_holm": cm.get("mw_p_holm")})
        slug = family.replace(" ", "_")
        out.append(table(f"optimizers_{slug}", f"Optimizers, {family}: accuracy and time to target", headers, body,
                         pl.DataFrame(data, infer_schema_length=None),
                         "Best mean first; Δ = method − this variant in percentage points; time to target counts "
                         "only runs that reached it."))
    return out
