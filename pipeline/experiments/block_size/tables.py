"""Experiment 1's table: the adaptive-block-size paper's Table 1 (test perplexity, mean and 95% CI), ours beside.

    tables(ctx: pipeline.analysis.lookup.TableContext) -> [table]   (pipeline.analysis.formatting.table)
"""
from __future__ import annotations

import polars as pl

from ...analysis.formatting import num, runs_cell, table
from ...analysis.lookup import TableContext, claim, label, rows


def tables(ctx: TableContext) -> list[dict]:
    """Table 1: Method, Mean Perplexity, 95% CI Lower, 95% CI Upper; the paper's row beside ours."""
    headers = ["Method", "Mean Perplexity", "95% CI Lower", "95% CI Upper", "Runs", "Paper mean", "Paper CI",
               "Verdict"]
    body, data = [], []
    order = list(ctx.ledger.labels.get(ctx.experiment, {}).get("method", {}))  # the paper's rows first, in its order
    for r in sorted(rows(ctx), key=lambda r: (order.index(r["variant"]) if r["variant"] in order else len(order),
                                              r["variant"])):
        c = claim(ctx, kind="value", variant=r["variant"]) or {}
        body.append([label(ctx, "method", r["variant"]), num(r["mean"], 1), num(r["ci_lo"], 1), num(r["ci_hi"], 1),
                     runs_cell(r), num(c.get("claimed"), 1),
                     f"[{num(c.get('claimed_lo'), 1)}, {num(c.get('claimed_hi'), 1)}]" if c else "—",
                     c.get("verdict", "—")])
        data.append({**{k: r[k] for k in ("variant", "method", "n", "n_runs", "n_diverged", "mean", "ci_lo", "ci_hi")},
                     "paper_mean": c.get("claimed"), "paper_ci_lo": c.get("claimed_lo"),
                     "paper_ci_hi": c.get("claimed_hi")})
    return [table("block_size_table1", "Adaptive block size, Table 1: test perplexity", headers, body,
                  pl.DataFrame(data, infer_schema_length=None),
                  "Test perplexity at the last epoch; t-based 95% CI over seeds.")]
