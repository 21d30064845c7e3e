"""Figures (PNG + PDF) from the collected run tables, and the claims chart from the analyze stage's claims.

    <tables>/runs_{final,history}.parquet [+ <analysis>/claims.parquet] --figures()--> <out>/<name>.{png,pdf}
                                                                                       <out>/figures.json (manifest)

Every name of figure_list() (per experiment `<experiment>_curves` and the figures its package adds, then the
claims chart) is always written, so both orchestrators can declare the files (Snakemake's report()
included): when an experiment has no runs or a column is missing, the file shows why, and the manifest marks it
"skipped" with that reason; nothing crashes. Curves and bands are the mean and t-based CI across seeds per epoch;
diverged runs are left out of every plot and their count is given in the legend. Accuracies are drawn in %.
Plot functions take an `ax` and return its figure; colours are the Okabe-Ito colour-blind-safe palette, with line
styles cycling once the eight colours are used up.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # files only, never a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
from scipy import stats as sps  # noqa: E402

from ..errors import ConfigError  # noqa: E402
from .claims import family_of  # noqa: E402
from .collect import read_tables  # noqa: E402
from .ledger import ledger_for  # noqa: E402

OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442"]
STYLES = ["-", "--", ":", "-."]


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
    """history [runs*epochs] of non-diverged runs -> mean of `column` per epoch per variant with a t-CI band.
    Variants whose curves coincide (e.g. growth schedules shared by several methods) are drawn once, labelled
    with all their names, so that no line hides another."""
    agg = (history.filter(pl.col(column).is_not_null() & pl.col(column).is_finite())
           .group_by("variant", "epoch").agg(pl.col(column).mean().alias("m"), pl.col(column).std().alias("s"),
                                            pl.len().alias("n")).sort("variant", "epoch"))
    lines: list[list] = []  # [labels, epochs, means, half-widths]
    for variant, label in labels.items():
        g = agg.filter(pl.col("variant") == variant)
        if g.height == 0:
            continue
        e, m = g["epoch"].to_numpy(), g["m"].to_numpy() * scale
        half = t_band(m, g["s"].fill_null(np.nan).to_numpy() * scale, g["n"].to_numpy(), confidence)
        same = next((line for line in lines if np.array_equal(line[1], e) and np.allclose(line[2], m, equal_nan=True)
                     and np.allclose(line[3], half, equal_nan=True)), None)
        if same is not None:
            same[0].append(label)
        else:
            lines.append([[label], e, m, half])
    for i, (names, e, m, half) in enumerate(lines):
        ax.plot(e, m, label=" = ".join(names) + (" (same curve)" if len(names) > 1 else ""), **style(i))
        ax.fill_between(e, m - half, m + half, color=style(i)["color"], alpha=0.18, linewidth=0)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    return ax.figure


LEGEND_INSIDE = 6  # entries a legend may have inside its axes; a longer one goes beside the axes, off the data


def legend(ax) -> None:
    entries = len(ax.get_legend_handles_labels()[1])
    if entries > LEGEND_INSIDE:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    elif entries:
        ax.legend(fontsize=7)


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
def _grid(n: int, wide: bool = False):
    """n panels, three to a row; `wide`: room beside each for a long legend."""
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(6.0, (6.4 if wide else 4.6) * cols), 0.6 + 3.4 * rows),
                             squeeze=False, layout="constrained")
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
    fig, axes = _grid(len(panels), wide=max(len(v) for v in panels.values()) > LEGEND_INSIDE)
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
        legend(ax)
    fig.suptitle(title, fontsize=10)
    return fig


@dataclass(frozen=True)
class FigureContext:
    """What a figure is drawn from: the runs of one profile (final [runs], history [runs x epochs]), the analyze
    stage's claims table (None when not given), the ledger, and the interval level."""

    final: pl.DataFrame
    history: pl.DataFrame
    claims: pl.DataFrame | None
    ledger: Any
    confidence: float

    def band(self) -> str:
        return f"mean and {self.confidence:.0%} t-CI across seeds"


@dataclass(frozen=True)
class Figure:
    """A named figure of the report: what it shows, and draw(ctx) -> a matplotlib figure, or raise Skip(reason)."""

    what: str
    draw: Callable[[FigureContext], Any]


def curves(experiment: str) -> Callable[[FigureContext], Any]:
    """The experiment's eval metric per epoch, one panel per (family, dataset, subset) (its per-epoch counterpart
    where the metric exists only after the last epoch, e.g. valid_ppl for test_ppl)."""
    def draw(ctx: FigureContext):
        runs = ctx.final.filter(pl.col("experiment") == experiment)
        metric = runs["metric"][0] if runs.height else "metric"
        hist = ctx.history.filter(pl.col("experiment") == experiment)
        proxy = PER_EPOCH_PROXY.get(metric)
        if proxy in hist.columns and metric in hist.columns and hist[metric].drop_nulls().len() <= runs.height:
            metric = proxy  # the metric exists only after the last epoch: draw its per-epoch counterpart
        return per_epoch_figure(ctx.final, ctx.history, ctx.ledger, experiment, metric, None, ctx.confidence,
                                f"{experiment}: {metric} per epoch\n({ctx.band()})")
    return draw


def trace(experiment: str, column: str, label: str) -> Callable[[FigureContext], Any]:
    """A history column per epoch (the first column named `column` or starting with it), e.g. a batch-size trace."""
    def draw(ctx: FigureContext):
        hist = ctx.history.filter(pl.col("experiment") == experiment)
        col = next((c for c in hist.columns if c == column or c.startswith(column)), column)
        return per_epoch_figure(ctx.final, ctx.history, ctx.ledger, experiment, col, label, ctx.confidence,
                                f"{experiment}: {col} per epoch\n({ctx.band()})")
    return draw


def claims_chart(ctx: FigureContext):
    """Every value and ratio claim: claimed (black, its CI, range or sd) against ours (coloured by verdict)."""
    if ctx.claims is None:
        raise Skip("no claims table (pass the analyze stage's directory)")
    shown = ctx.claims.filter(pl.col("kind").is_in(["value", "ratio"]) & pl.col("value").is_not_null())
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


def figure_list(experiments: dict) -> dict[str, Figure]:
    """Every figure of the report, by stable name: per experiment (name -> registry.Experiment, in params.yaml's
    order) `<experiment>_curves` and the figures its package's figures.py adds (FIGURES; CURVES describes the
    curves), then the claims chart."""
    out = {}
    for name, exp in experiments.items():
        module = exp.module("figures") if exp.has_module("figures") else None
        out[f"{name}_curves"] = Figure(getattr(module, "CURVES", f"{name}: the eval metric per epoch"), curves(name))
        for fig_name, fig in (getattr(module, "FIGURES", None) or {}).items():
            if fig_name in out or not fig_name.startswith(f"{name}_"):
                raise ConfigError(f"{exp.folder}/figures.py: figure {fig_name!r} must be named {name}_<what>, once")
            out[fig_name] = fig
    out["claims_chart"] = Figure("claimed vs reproduced values with their intervals", claims_chart)
    return out


def _placeholder(name: str, reason: str):
    fig, ax = plt.subplots(figsize=(6, 2))
    ax.axis("off")
    ax.text(0.5, 0.5, f"{name}: not drawn\n{reason}", ha="center", va="center", fontsize=10)
    return fig


def figures(tables_dir: Path, out_dir: Path, params, analysis_dir: Path | None = None, ledger=None) -> list[dict]:
    """Stage entry: every figure of figure_list (the experiments of `params`) as <out>/<name>.png and .pdf, plus
    <out>/figures.json. Only runs of params' profile are drawn."""
    final, history, _ = read_tables(Path(tables_dir))
    meta = json.loads((Path(analysis_dir) / "analysis.json").read_text()) if analysis_dir else {}
    claims_path = Path(analysis_dir) / "claims.parquet" if analysis_dir else None
    claims = pl.read_parquet(claims_path) if claims_path and claims_path.is_file() else None
    profile = params.profile
    final = final.filter(pl.col("profile").eq_missing(profile))
    history = history.filter(pl.col("profile").eq_missing(profile))
    confidence = meta.get("settings", {}).get("confidence", params.analysis.confidence)
    ctx = FigureContext(final, history, claims, ledger or ledger_for(params), confidence)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = []
    for name, spec in figure_list({e: params.experiment(e) for e in params.experiments}).items():
        try:
            fig, status, reason = spec.draw(ctx), "drawn", ""
        except Skip as why:
            fig, status, reason = _placeholder(name, str(why)), "skipped", str(why)
        fig.text(0.995, 0.005, f"profile: {profile}", ha="right", va="bottom", fontsize=7, color="#555555")
        if fig.get_layout_engine() is None:
            fig.tight_layout()
        fig.savefig(out_dir / f"{name}.png", dpi=130, metadata={"Software": None})  # no version stamp: stable bytes
        fig.savefig(out_dir / f"{name}.pdf", metadata={"CreationDate": None, "Producer": None})
        plt.close(fig)
        manifest.append({"name": name, "what": spec.what, "status": status, "reason": reason,
                         "png": f"{name}.png", "pdf": f"{name}.pdf"})
    (out_dir / "figures.json").write_text(json.dumps({"profile": profile, "figures": manifest}, indent=2))
    return manifest
