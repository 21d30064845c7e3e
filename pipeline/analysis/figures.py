"""Figures (PNG + PDF) from the collected run tables, and the claims chart from the analyze stage's claims.

    <tables>/runs_{final,history}.parquet [+ <analysis>/claims.parquet] --figures()--> <out>/<name>.{png,pdf}
                                                                                       <out>/figures.json (manifest)

Every name in FIGURES is always written, so both orchestrators can declare the files (Snakemake's report()
included): when an experiment has no runs or a column is missing, the file shows why, and the manifest marks it
"skipped" with that reason; nothing crashes. Curves and bands are the mean and t-based CI across seeds per epoch;
diverged runs are left out of every plot and their count is given in the legend. Accuracies are drawn in %.
Plot functions take an `ax` and return its figure; colours are the Okabe-Ito colour-blind-safe palette, with line
styles cycling once the eight colours are used up.
"""
from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # files only, never a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
from adjustText import adjust_text  # noqa: E402  (label placement without overlaps)
from scipy import stats as sps  # noqa: E402

from . import stats  # noqa: E402
from .claims import family_of  # noqa: E402
from .collect import read_tables  # noqa: E402
from .ledger import LEDGER, load_ledger  # noqa: E402

OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442"]
STYLES = ["-", "--", ":", "-."]
FIGURES = {  # name -> what it shows (stable names: figures/<experiment>_<kind>)
    "block_size_curves": "test perplexity per epoch, fixed vs growing block size",
    "block_size_block_trace": "block size (BPTT length) per epoch",
    "edba_curves": "test accuracy per epoch, per dataset and subset",
    "edba_train_size": "test accuracy against the training-set size (the subset's number of images)",
    "edba_batch_trace": "batch size per epoch chosen by EDBA",
    "growth_curves": "test accuracy per epoch, growing vs fixed networks",
    "growth_width_trace": "network width per epoch",
    "optimizers_curves": "test accuracy per epoch, per technique family",
    "optimizers_speed_accuracy": "test accuracy against seconds to target, CIs in both directions",
    "claims_chart": "claimed vs reproduced values with their intervals",
}


class Skip(Exception):
    """A figure that cannot be drawn from the data at hand; the message says why."""


def style(i: int) -> dict:
    return {"color": OKABE_ITO[i % len(OKABE_ITO)], "linestyle": STYLES[(i // len(OKABE_ITO)) % len(STYLES)]}


def scale_label(metric: str) -> tuple[float, str]:
    if metric.endswith("acc"):
        return 100.0, metric.replace("_", " ").replace("acc", "accuracy") + " (%)"
    return 1.0, metric.replace("_", " ").replace("ppl", "perplexity")


def t_band(mean: np.ndarray, sd: np.ndarray, n: np.ndarray, confidence: float) -> np.ndarray:
    """Half-width of the t-CI of a mean per point; nan where fewer than 2 seeds."""
    with np.errstate(invalid="ignore", divide="ignore"):
        half = sps.t.ppf(0.5 + confidence / 2, np.maximum(n - 1, 1)) * sd / np.sqrt(n)
    return np.where(n >= 2, half, np.nan)


# ---- plot functions: one axes each ------------------------------------------------------------------------------
def plot_per_epoch(ax, history: pl.DataFrame, column: str, labels: dict[str, str], confidence: float,
                   scale: float = 1.0):
    """history [runs*epochs] of non-diverged runs -> mean of `column` per epoch per variant with a t-CI band."""
    agg = (history.filter(pl.col(column).is_not_null() & pl.col(column).is_finite())
           .group_by("variant", "epoch").agg(pl.col(column).mean().alias("m"), pl.col(column).std().alias("s"),
                                            pl.len().alias("n")).sort("variant", "epoch"))
    for i, (variant, label) in enumerate(labels.items()):
        g = agg.filter(pl.col("variant") == variant)
        if g.height == 0:
            continue
        e, m = g["epoch"].to_numpy(), g["m"].to_numpy() * scale
        half = t_band(m, g["s"].fill_null(np.nan).to_numpy() * scale, g["n"].to_numpy(), confidence)
        ax.plot(e, m, label=label, **style(i))
        ax.fill_between(e, m - half, m + half, color=style(i)["color"], alpha=0.18, linewidth=0)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    return ax.figure


SUBSET_SIZE = "extra_subset_size"  # EDBA's metrics.json extra: the run's training (sub)set size


def plot_train_size(ax, final: pl.DataFrame, confidence: float):
    """final [runs] of EDBA -> test accuracy (mean, t-CI) against the training-set size, one line per method.

    x is the subset size the run trained on (metrics.json extra subset_size); runs without it fall back to the
    distinct samples they saw (<= the subset size), and the axis label says which."""
    x_col = SUBSET_SIZE if SUBSET_SIZE in final.columns and final[SUBSET_SIZE].null_count() == 0 else "distinct_samples"
    for i, ((dataset, method), g) in enumerate(sorted(final.group_by("dataset", "method"), key=lambda k: str(k[0]))):
        pts = (g.group_by("variant").agg(pl.col(x_col).median().alias("x"), pl.col("final").mean().alias("m"),
                                         pl.col("final").std().alias("s"), pl.col("final").count().alias("n")).sort("x"))
        scale = 100.0 if g["metric"][0].endswith("acc") else 1.0
        m = pts["m"].to_numpy() * scale
        half = t_band(m, pts["s"].fill_null(np.nan).to_numpy() * scale, pts["n"].to_numpy(), confidence)
        ax.errorbar(pts["x"].to_numpy(), m, yerr=np.nan_to_num(half), marker="o", capsize=3, label=f"{method} ({dataset})",
                    **style(i))
    ax.set_xscale("log")
    ax.set_xlabel("training-set size (images in the subset; log scale)" if x_col == SUBSET_SIZE
                  else "distinct training samples seen (subset size unknown; log scale)")
    return ax.figure


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


PER_EPOCH_PROXY = {"test_ppl": "valid_ppl"}  # a metric measured once at the end -> its per-epoch counterpart
VERDICT_COLOURS = {"reproduced": "#009E73", "not reproduced": "#D55E00", "inconclusive": "#999999"}


def plot_claims(ax, claims: pl.DataFrame, unit_label: str):
    """claims [claims of one unit] -> claimed (black, with its CI / range / sd) and ours (coloured by verdict, CI)."""
    rows = claims.to_dicts()
    for y, c in enumerate(rows):
        lo = c["claimed_lo"] if c["claimed_lo"] is not None else c["claimed"] - (c["claimed_sd"] or 0)
        hi = c["claimed_hi"] if c["claimed_hi"] is not None else c["claimed"] + (c["claimed_sd"] or 0)
        ax.errorbar(c["claimed"], y + 0.15, xerr=[[c["claimed"] - lo], [hi - c["claimed"]]], fmt="D", color="black",
                    ms=4, capsize=2)
        if c["value"] is not None and not math.isnan(c["value"]):
            colour = VERDICT_COLOURS.get(c["verdict"], "#E69F00")  # orange: not comparable
            err = [[max(c["value"] - c["lo"], 0)], [max(c["hi"] - c["value"], 0)]] if c["lo"] is not None else None
            ax.errorbar(c["value"], y - 0.15, xerr=err, fmt="o", color=colour, ms=4, capsize=2)
    ax.set_yticks(range(len(rows)), [c["id"] for c in rows], fontsize=7)
    ax.set_ylim(len(rows) - 0.5, -0.5)  # first claim on top
    ax.set_xlabel(unit_label)
    return ax.figure


# ---- figure builders: data -> figure, or Skip -----------------------------------------------------------------
def _grid(n: int):
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(6.0, 4.6 * cols), 0.6 + 3.4 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat)


def _panels(final: pl.DataFrame, ledger, experiment: str) -> dict[str, list[str]]:
    """Variants grouped by (family, dataset, subset); a title names the parts that vary between panels."""
    keys = {}
    for r in final.select("variant", "dataset", "subset").unique().sort("variant").iter_rows(named=True):
        keys[r["variant"]] = (family_of(ledger, experiment, r["variant"]), r["dataset"], r["subset"])
    varying = [i for i in range(3) if len({k[i] for k in keys.values()}) > 1] or [1]
    panels: dict[str, list[str]] = {}
    for variant, k in keys.items():
        panels.setdefault(" · ".join(str(k[i]) for i in varying if k[i] is not None), []).append(variant)
    return dict(sorted(panels.items()))


def per_epoch_figure(final, history, ledger, experiment, column, ylabel, confidence, title):
    runs = final.filter(pl.col("experiment") == experiment)
    if runs.height == 0:
        raise Skip(f"no {experiment} runs")
    hist = history.filter(pl.col("experiment") == experiment)
    if column not in hist.columns or hist[column].drop_nulls().len() == 0:
        raise Skip(f"the {experiment} histories have no '{column}' column")
    hist = hist.filter(~pl.col("diverged"))
    panels = _panels(runs, ledger, experiment)
    fig, axes = _grid(len(panels))
    scale, label = scale_label(column) if ylabel is None else (1.0, ylabel)
    for ax, (name, variants) in zip(axes, panels.items()):
        methods = {v: runs.filter(pl.col("variant") == v)["method"][0] for v in variants}
        short = len(set(methods.values())) == len(variants)
        labels = {}
        for v in variants:
            div = int(runs.filter(pl.col("variant") == v)["diverged"].sum())
            labels[v] = (methods[v] if short else v) + (f" ({div} diverged, not shown)" if div else "")
        plot_per_epoch(ax, hist, column, labels, confidence, scale)
        ax.set_title(name, fontsize=9)
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return fig


def build(name: str, final, history, claims, ledger, confidence):
    """One named figure from the tables; raises Skip with the reason when it cannot be drawn."""
    band = f"mean and {confidence:.0%} t-CI across seeds"
    if name.endswith("_curves"):
        exp = name[: -len("_curves")]
        runs = final.filter(pl.col("experiment") == exp)
        metric = runs["metric"][0] if runs.height else "metric"
        hist = history.filter(pl.col("experiment") == exp)
        proxy = PER_EPOCH_PROXY.get(metric)
        if proxy in hist.columns and metric in hist.columns and hist[metric].drop_nulls().len() <= runs.height:
            metric = proxy  # the metric exists only after the last epoch: draw its per-epoch counterpart
        return per_epoch_figure(final, history, ledger, exp, metric, None, confidence, f"{exp}: {metric} per epoch\n({band})")
    traces = {"block_size_block_trace": ("block_size", "block_size", "block size (tokens per BPTT segment)"),
              "edba_batch_trace": ("edba", "batch_size", "batch size (samples)"),
              "growth_width_trace": ("growth", "width", "width (fraction of the full network's channels)")}
    if name in traces:
        exp, col, label = traces[name]
        hist = history.filter(pl.col("experiment") == exp)
        col = next((c for c in hist.columns if c == col or c.startswith(col)), col)
        return per_epoch_figure(final, history, ledger, exp, col, label, confidence, f"{exp}: {col} per epoch\n({band})")
    if name == "edba_train_size":
        runs = final.filter((pl.col("experiment") == "edba") & ~pl.col("diverged"))
        if runs.height == 0 or runs["distinct_samples"].drop_nulls().len() == 0:
            raise Skip("no EDBA runs with distinct_samples")
        fig, ax = plt.subplots(figsize=(6, 4))
        plot_train_size(ax, runs.filter(pl.col("distinct_samples").is_not_null()), confidence)
        ax.set_ylabel("test accuracy (%) at the last epoch")
        ax.legend(fontsize=7)
        ax.set_title(f"EDBA: accuracy against training-set size\n({band})", fontsize=9)
        return fig
    if name == "optimizers_speed_accuracy":
        runs = final.filter((pl.col("experiment") == "optimizers") & ~pl.col("diverged"))
        if runs.height == 0:
            raise Skip("no optimizers runs")
        families = {v: family_of(ledger, "optimizers", v) for v in runs["variant"].unique().to_list()}
        fig, ax = plt.subplots(figsize=(8, 6), layout="constrained")
        labels = plot_speed_accuracy(ax, runs, families, confidence)
        legend = ax.legend(fontsize=7, title="family")
        ax.set_title("Optimizers: speed against accuracy\n(label: variant (runs reaching the target / runs))", fontsize=9)
        fig.draw_without_rendering()  # settle the layout first: adjust_text works in display coordinates
        # variants of one family often land on top of each other: move the labels apart, a line back to each point
        adjust_text(labels, ax=ax, objects=[legend], iter_lim=500, arrowprops={"arrowstyle": "-", "color": "0.5",
                                                                            "lw": 0.5})
        return fig
    if name == "claims_chart":
        if claims is None:
            raise Skip("no claims table (pass the analyze stage's directory)")
        shown = claims.filter(pl.col("kind").is_in(["value", "ratio"]) & pl.col("value").is_not_null())
        if shown.height == 0:
            raise Skip("no claim has a reproduced value yet")
        units = sorted(set(shown["unit_label"].to_list()))
        sizes = [shown.filter(pl.col("unit_label") == u).height for u in units]
        fig, axes = plt.subplots(len(units), 1, figsize=(8, 1.6 + 0.3 * shown.height + 0.7 * len(units)), squeeze=False,
                                 gridspec_kw={"height_ratios": [n + 1 for n in sizes]}, layout="constrained")
        for ax, unit in zip(axes.flat, units):
            plot_claims(ax, shown.filter(pl.col("unit_label") == unit), unit)
        handles = [plt.Line2D([], [], marker="o", ls="", color=c, label=f"ours: {v}")
                   for v, c in {**VERDICT_COLOURS, "not comparable": "#E69F00"}.items()]
        handles.append(plt.Line2D([], [], marker="D", ls="", color="black", label="claimed"))
        fig.legend(handles=handles, loc="outside lower center", ncol=5, fontsize=7)
        fig.suptitle("Claims: paper (black, its CI, range or ± sd) vs ours (95% CI)")
        return fig
    raise KeyError(f"unknown figure {name!r}; known: {', '.join(FIGURES)}")


def _placeholder(name: str, reason: str):
    fig, ax = plt.subplots(figsize=(6, 2))
    ax.axis("off")
    ax.text(0.5, 0.5, f"{name}: not drawn\n{reason}", ha="center", va="center", fontsize=10)
    return fig


def figures(tables_dir: Path, out_dir: Path, analysis_dir: Path | None = None, profile: str | None = None,
            ledger_path: Path = LEDGER, confidence: float = 0.95) -> list[dict]:
    """Stage entry: every figure of FIGURES as <out>/<name>.png and .pdf, plus <out>/figures.json.

    Only runs of one profile are drawn: `profile`, else the analyze stage's (analysis.json), else the only one present.
    """
    final, history, _ = read_tables(Path(tables_dir))
    meta = json.loads((Path(analysis_dir) / "analysis.json").read_text()) if analysis_dir else {}
    claims_path = Path(analysis_dir) / "claims.parquet" if analysis_dir else None
    claims = pl.read_parquet(claims_path) if claims_path and claims_path.is_file() else None
    profile = profile or meta.get("profile")
    present = sorted(set(final["profile"].to_list()))
    if profile is None and len(present) > 1:
        raise ValueError(f"{tables_dir}: runs of several profiles {present}; pass the profile to draw")
    profile = profile or (present[0] if present else None)
    final = final.filter(pl.col("profile").eq_missing(profile))
    history = history.filter(pl.col("profile").eq_missing(profile))
    confidence = meta.get("settings", {}).get("confidence", confidence)
    ledger = load_ledger(ledger_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = []
    for name, what in FIGURES.items():
        try:
            fig, status, reason = build(name, final, history, claims, ledger, confidence), "drawn", ""
        except Skip as why:
            fig, status, reason = _placeholder(name, str(why)), "skipped", str(why)
        fig.text(0.995, 0.005, f"profile: {profile}", ha="right", va="bottom", fontsize=7, color="#555555")
        if fig.get_layout_engine() is None:
            fig.tight_layout()
        fig.savefig(out_dir / f"{name}.png", dpi=130, metadata={"Software": None})  # no version stamp: stable bytes
        fig.savefig(out_dir / f"{name}.pdf", metadata={"CreationDate": None, "Producer": None})
        plt.close(fig)
        manifest.append({"name": name, "what": what, "status": status, "reason": reason,
                         "png": f"{name}.png", "pdf": f"{name}.pdf"})
    (out_dir / "figures.json").write_text(json.dumps({"profile": profile, "figures": manifest}, indent=2))
    return manifest
