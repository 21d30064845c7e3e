"""Experiment 3's table: accuracy, FLOPs fraction and wall-clock speed-up of every variant against the reference
(the fixed full-size network), with the claims of the headline and the ablation beside.

    tables(ctx: pipeline.analysis.lookup.TableContext) -> [table]   (pipeline.analysis.formatting.table)
"""
from __future__ import annotations

import math

import polars as pl

from ...analysis.claims import resolve
from ...analysis.formatting import mean_sd, num, scale_of, table
from ...analysis.lookup import TableContext, claims, label, ratio, rows


def tables(ctx: TableContext) -> list[dict]:
    headers = ["Dataset", "Variant", "Test accuracy % (ours)", "Paper", "FLOPs fraction [CI]", "Speed-up [CI]",
               "Verdict"]
    body, data = [], []
    for r in rows(ctx):
        scope = ctx.final.filter((pl.col("experiment") == ctx.experiment) & (pl.col("dataset") == r["dataset"]))
        refs = resolve(scope, ctx.ledger.reference.get(ctx.experiment, ""))
        ref = refs[0] if len(refs) == 1 else None
        none = (math.nan,) * 3
        fl = ratio(ctx, r["dataset"], r["variant"], ref, "train_flops", False) if ref else none
        sp = ratio(ctx, r["dataset"], r["variant"], ref, "train_seconds", True) if ref else none
        cs = claims(ctx, kind="value", variant=r["variant"])  # headline and ablation
        sc = scale_of(r["metric"])
        paper = "; ".join(f"{c['claimed']:.2f}" + (f" ± {c['claimed_sd']:.2f}" if c.get("claimed_sd") else "")
                          + f" ({c['id']})" for c in cs)
        body.append([label(ctx, "dataset", r["dataset"]), r["variant"], mean_sd(r, sc, 2), paper or "—",
                     f"{num(fl[0], 3)} [{num(fl[1], 3)}, {num(fl[2], 3)}]",
                     f"{num(sp[0], 2)}x [{num(sp[1], 2)}, {num(sp[2], 2)}]",
                     "; ".join(f"{c['verdict']} ({c['id']})" for c in cs) or "—"])
        data.append({"dataset": r["dataset"], "variant": r["variant"], "mean": r["mean"] * sc, "sd": r["sd"] * sc,
                     "n": r["n"], "n_runs": r["n_runs"], "n_diverged": r["n_diverged"],
                     "paper": "; ".join(f"{c['claimed']:g}" for c in cs) or None,
                     "flops_fraction": fl[0], "flops_lo": fl[1], "flops_hi": fl[2], "speedup": sp[0],
                     "speedup_lo": sp[1], "speedup_hi": sp[2], "reference": ref})
    return [table("growth_table", "Growing networks: accuracy, FLOPs and wall-clock against the fixed network",
                  headers, body, pl.DataFrame(data, infer_schema_length=None),
                  "FLOPs fraction = mean FLOPs / reference's; speed-up = reference's training seconds / variant's; "
                  "seeded bootstrap 95% CIs.")]
