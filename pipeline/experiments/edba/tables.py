"""Experiment 2's table: EDBA's Table 1 (test accuracy % by training-set size), a paper row and our row per method.

    tables(ctx: pipeline.analysis.lookup.TableContext) -> [table]   (pipeline.analysis.formatting.table)
"""
from __future__ import annotations

import polars as pl

from ...analysis.formatting import mean_sd, scale_of, table
from ...analysis.lookup import TableContext, claim, label, rows


def tables(ctx: TableContext) -> list[dict]:
    """Dataset, Method, Source, then one column per subset."""
    rs = rows(ctx)
    order = list(ctx.ledger.labels.get(ctx.experiment, {}).get("subset", {}))
    subsets = sorted({r["subset"] for r in rs}, key=lambda s: (order.index(s) if s in order else len(order), str(s)))
    headers = ["Dataset", "Method", "Source"] + [label(ctx, "subset", s) for s in subsets]
    body, data = [], []
    for dataset in sorted({r["dataset"] for r in rs}):
        for method in sorted({r["method"] for r in rs if r["dataset"] == dataset}):
            paper, ours = [], []
            for s in subsets:
                r = next((x for x in rs if (x["dataset"], x["method"], x["subset"]) == (dataset, method, s)), None)
                c = claim(ctx, kind="value", arm=method, dataset=dataset, subset=s)
                sc = scale_of(r["metric"]) if r else 100.0
                paper.append(f"{c['claimed']:.3f} ± {c['claimed_sd']:.3f}" if c else "—")
                ours.append(mean_sd(r, sc, 3) if r else "—")
                if r:
                    data.append({"dataset": dataset, "method": method, "subset": s, "variant": r["variant"],
                                 "paper_mean": c and c["claimed"], "paper_sd": c and c["claimed_sd"],
                                 **{k: r[k] * sc for k in ("mean", "sd", "ci_lo", "ci_hi")},
                                 **{k: r[k] for k in ("n", "n_runs", "n_diverged")}, "verdict": c and c["verdict"]})
            lab = [label(ctx, "dataset", dataset), label(ctx, "method", method)]
            body += [lab + ["paper"] + paper, lab + ["ours"] + ours]
    return [table("edba_table1", "EDBA, Table 1: test accuracy % by training-set size", headers, body,
                  pl.DataFrame(data, infer_schema_length=None),
                  "Mean ± sd over seeds (runs used/runs); final-epoch test accuracy.")]
