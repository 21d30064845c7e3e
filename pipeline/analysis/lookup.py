"""What an experiment's tables (its package's tables.py) are built from, and the lookups they share.

    TableContext(experiment, summary, comparisons, claims, ledger, final, settings)
        summary      one row per (experiment, variant, quantity): n, mean, sd, CIs (analysis.tables.summarize)
        comparisons  one row per comparison x quantity (analysis.claims.compare)
        claims       one row per claim with its verdict (analysis.claims.judge_claims)
        ledger       the claims ledger (labels, reference variants)
        final        one row per run (analysis.collect)
    rows(ctx, quantity)            the experiment's summary rows of one quantity
    claims(ctx, **match) / claim   its claims matching column values (claim: the one, or None)
    label(ctx, kind, name)         the paper's label of a method, dataset or subset
    ratio(ctx, dataset, variant, reference, quantity, invert)   bootstrap CI of a ratio of means
    against(ctx, row)              the comparison in which a summary row's variant is the baseline

An experiment's tables.py has `tables(ctx) -> [formatting.table(...)]`; the analyze stage writes each as Markdown
and CSV and the report prints them. All functions are pure.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from ..errors import PipelineError
from ..seeding import rng
from . import stats


@dataclass(frozen=True)
class TableContext:
    experiment: str
    summary: pl.DataFrame
    comparisons: pl.DataFrame
    claims: pl.DataFrame
    ledger: Any  # ledger.Ledger
    final: pl.DataFrame
    settings: Any  # the analysis settings (confidence, bootstrap_seed, bootstrap_resamples, ...)


def rows(ctx: TableContext, quantity: str = "final") -> list[dict]:
    if ctx.summary.height == 0:
        return []
    return ctx.summary.filter((pl.col("experiment") == ctx.experiment) & (pl.col("quantity") == quantity)).to_dicts()


def claims(ctx: TableContext, **match) -> list[dict]:
    hit = ctx.claims.filter(pl.col("experiment") == ctx.experiment)
    for k, v in match.items():
        hit = hit.filter(pl.col(k).is_null() if v is None else pl.col(k) == v)
    return hit.to_dicts()


def claim(ctx: TableContext, **match) -> dict | None:
    """The one claim matching; an error if several do (a table cell shows one claim)."""
    hit = claims(ctx, **match)
    if len(hit) > 1:
        raise PipelineError(f"{ctx.experiment}/claims.yaml: several claims match {match}: {[c['id'] for c in hit]}")
    return hit[0] if hit else None


def label(ctx: TableContext, kind: str, name) -> str:
    return ctx.ledger.labels.get(ctx.experiment, {}).get(kind, {}).get(name, str(name))


def ratio(ctx: TableContext, dataset, variant: str, reference: str, quantity: str, invert: bool) -> tuple:
    """(ratio of means, lo, hi): variant / reference on `quantity` (reference / variant when `invert`), seeded
    percentile bootstrap over the non-diverged runs of `dataset`."""
    s = ctx.settings
    runs = ctx.final.filter((pl.col("experiment") == ctx.experiment) & (pl.col("dataset") == dataset)
                            & ~pl.col("diverged"))
    x = runs.filter(pl.col("variant") == variant)[quantity].drop_nulls().to_numpy()
    y = runs.filter(pl.col("variant") == reference)[quantity].drop_nulls().to_numpy()
    num, den = (y, x) if invert else (x, y)
    return stats.ratio_interval(num, den, rng(s.bootstrap_seed, f"table/{ctx.experiment}/{variant}/{reference}/"
                                               f"{quantity}"), s.confidence, s.bootstrap_resamples)


def against(ctx: TableContext, r: dict, quantity: str = "final") -> dict:
    """The comparison with summary row r's variant as the baseline, in r's own dataset and subset."""
    if ctx.comparisons.height == 0:
        return {}
    c = ctx.comparisons
    hit = c.filter((pl.col("experiment") == ctx.experiment) & (pl.col("quantity") == quantity)
                   & (pl.col("baseline") == r["variant"]) & pl.col("dataset").eq_missing(r["dataset"])
                   & pl.col("subset").eq_missing(r["subset"]))
    return hit.row(0, named=True) if hit.height else {}
