"""Experiment 2's figures besides its learning curves: accuracy against training-set size, the batch-size trace.

    CURVES   what edba_curves shows;  FIGURES   name -> pipeline.analysis.figures.Figure
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from ...analysis.figures import Figure, FigureContext, Skip, style, t_band, trace

SUBSET_SIZE = "extra_subset_size"  # metrics.json extra: the run's training (sub)set size


def plot_train_size(ax, final: pl.DataFrame, confidence: float):
    """final [runs] of EDBA -> test accuracy (mean, t-CI) against the training-set size, one line per method.

    x is the subset size the run trained on (metrics.json extra subset_size); runs without it fall back to the
    distinct samples they saw (<= the subset size), and the axis label says which."""
    known = SUBSET_SIZE in final.columns and final[SUBSET_SIZE].null_count() == 0
    x_col = SUBSET_SIZE if known else "distinct_samples"
    for i, ((dataset, method), g) in enumerate(sorted(final.group_by("dataset", "method"), key=lambda k: str(k[0]))):
        pts = (g.group_by("variant").agg(pl.col(x_col).median().alias("x"), pl.col("final").mean().alias("m"),
                                         pl.col("final").std().alias("s"), pl.col("final").count().alias("n")).sort("x"))
        scale = 100.0 if g["metric"][0].endswith("acc") else 1.0
        m = pts["m"].to_numpy() * scale
        half = t_band(m, pts["s"].fill_null(np.nan).to_numpy() * scale, pts["n"].to_numpy(), confidence)
        ax.errorbar(pts["x"].to_numpy(), m, yerr=np.nan_to_num(half), marker="o", capsize=3,
                    label=f"{method} ({dataset})", **style(i))
    ax.set_xscale("log")
    ax.set_xlabel("training-set size (images in the subset; log scale)" if x_col == SUBSET_SIZE
                  else "distinct training samples seen (subset size unknown; log scale)")
    return ax.figure


def train_size(ctx: FigureContext):
    runs = ctx.final.filter((pl.col("experiment") == "edba") & ~pl.col("diverged"))
    if runs.height == 0 or runs["distinct_samples"].drop_nulls().len() == 0:
        raise Skip("no EDBA runs with distinct_samples")
    fig, ax = plt.subplots(figsize=(6, 4))
    plot_train_size(ax, runs.filter(pl.col("distinct_samples").is_not_null()), ctx.confidence)
    ax.set_ylabel("test accuracy (%) at the last epoch")
    ax.legend(fontsize=7)
    ax.set_title(f"EDBA: accuracy against training-set size\n({ctx.band()})", fontsize=9)
    return fig


CURVES = "test accuracy per epoch, per dataset and subset"
FIGURES = {
    "edba_train_size": Figure("test accuracy against the training-set size (the subset's number of images)",
                              train_size),
    "edba_batch_trace": Figure("batch size per epoch chosen by EDBA",
                               trace("edba", "batch_size", "batch size (samples)")),
}
