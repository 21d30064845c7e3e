"""tables(ctx): accuracy per variant and its difference from the baseline (the comparison of claims.yaml)."""
from __future__ import annotations

import polars as pl

from pipeline.analysis.formatting import mean_sd, num, pval, scale_of, table
from pipeline.analysis.lookup import TableContext, rows


def versus_baseline(ctx: TableContext, variant: str) -> dict:
    """The comparison of `variant` (as the method) against the baseline on the final metric, or {}."""
    c = ctx.comparisons
    if c.height == 0:
        return {}
    hit = c.filter((pl.col("experiment") == ctx.experiment) & (pl.col("quantity") == "final")
                   & (pl.col("method") == variant))
    return hit.row(0, named=True) if hit.height else {}


def tables(ctx: TableContext) -> list[dict]:
    headers = ["Variant", "Test accuracy % mean ± sd (runs)", "Δ vs baseline (pp) [95% CI]", "Holm p (Welch)"]
    body, data = [], []
    for r in rows(ctx):
        sc, c = scale_of(r["metric"]), versus_baseline(ctx, r["variant"])
        diff = f"{num(c['diff'] * sc)} [{num(c['diff_lo'] * sc)}, {num(c['diff_hi'] * sc)}]" if c else "—"
        body.append([r["variant"], mean_sd(r, sc, 2), diff, pval(c.get("welch_p_holm"))])
        data.append({"variant": r["variant"], "mean": r["mean"] * sc, "sd": r["sd"] * sc, "n": r["n"],
                     "diff": c.get("diff"), "welch_p_holm": c.get("welch_p_holm")})
    return [table("label_smoothing_table", "Label smoothing against hard labels: test accuracy", headers, body,
                  pl.DataFrame(data, infer_schema_length=None),
                  "Final-epoch test accuracy; Holm over the comparisons.")]
