"""Experiment 4's figures besides its learning curves: accuracy against seconds to target, CIs in both directions.

    CURVES   what optimizers_curves shows;  FIGURES   name -> pipeline.analysis.figures.Figure
"""
from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
import numpy as np
import polars as pl
from adjustText import adjust_text  # label placement without overlaps

from ...analysis import stats
from ...analysis.claims import family_of
from ...analysis.figures import Figure, FigureContext, Skip, style


def plot_speed_accuracy(ax, final: pl.DataFrame, families: dict[str, str], confidence: float):
    """final [runs] of optimizers -> per variant: accuracy (mean, t-CI) against seconds to target (mean, t-CI)."""
    order = sorted(set(families.values()))
    never, labels = [], []
    for v, g in sorted(final.group_by("variant"), key=lambda k: k[0][0]):
        (variant,) = v
        reached = g["seconds_to_target"].drop_nulls().to_numpy()
        if len(reached) == 0:
            never.append(variant)
            continue
        acc = g["final"].drop_nulls().to_numpy() * (100.0 if g["metric"][0].endswith("acc") else 1.0)
        x, y = stats.describe(reached, confidence), stats.describe(acc, confidence)
        ax.errorbar(x.mean, y.mean, xerr=np.nan_to_num(x.mean - x.lo), yerr=np.nan_to_num(y.mean - y.lo), fmt="o",
                    color=style(order.index(families[variant]))["color"], capsize=3)
        labels.append(ax.text(x.mean, y.mean, f"{variant} ({len(reached)}/{g.height})", fontsize=7))
    for i, fam in enumerate(order):
        ax.plot([], [], "o", color=style(i)["color"], label=fam)
    if never:
        text = textwrap.fill("never reached the target: " + ", ".join(never), width=110)
        ax.figure.supxlabel(text, fontsize=7, x=0.01, ha="left")  # laid out below the axes by the layout engine
    ax.set_xlim(left=0)  # a t-CI over 2-3 runs can reach below 0 s; time cannot
    ax.set_xlabel("training seconds to target (runs that reached it; mean ± t-CI, cut at 0)")
    ax.set_ylabel("test accuracy (%) at the last epoch")
    return labels


def speed_accuracy(ctx: FigureContext):
    runs = ctx.final.filter((pl.col("experiment") == "optimizers") & ~pl.col("diverged"))
    if runs.height == 0:
        raise Skip("no optimizers runs")
    families = {v: family_of(ctx.ledger, "optimizers", v) for v in runs["variant"].unique().to_list()}
    fig, ax = plt.subplots(figsize=(8, 6), layout="constrained")
    labels = plot_speed_accuracy(ax, runs, families, ctx.confidence)
    legend = ax.legend(fontsize=7, title="family")
    ax.set_title("Optimizers: speed against accuracy\n(label: variant (runs reaching the target / runs))", fontsize=9)
    fig.draw_without_rendering()  # settle the layout first: adjust_text works in display coordinates
    # variants of one family often land on top of each other: move the labels apart, a line back to each point
    adjust_text(labels, ax=ax, objects=[legend], iter_lim=500, arrowprops={"arrowstyle": "-", "color": "0.5",
                                                                        "lw": 0.5})
    return fig


CURVES = "test accuracy per epoch, per technique family"
FIGURES = {
    "optimizers_speed_accuracy": Figure("test accuracy against seconds to target, CIs in both directions",
                                        speed_accuracy),
}
