"""The analysis as DVC's own verbs read it: metrics files and per-epoch curves (dvc.yaml's `metrics:`, `plots:`).

    summary (pipeline/analysis/stats: one row per experiment x variant x quantity) + final (one row per run)
        --write_metrics()--> <out>/metrics/<experiment>/<variant>.json
            {"<metric>": mean of the final metric, "<metric>_ci_lo", "<metric>_ci_hi", "n_runs",
             "train_seconds": mean, "seeds": {"0": final of seed 0, ...}}      `dvc metrics show` / `diff`
    history (collect's runs x epochs table)
        --write_curves()--> <out>/curves/<experiment>.csv
            epoch, <variant>, <variant>, ...: the mean over seeds of the curve metric (the experiment's target metric,
            e.g. valid_ppl or test_acc) per evaluated epoch                    `dvc plots show` / `diff`

    claims (the analyze stage's ledger with verdicts) + final
        --write_summaries()--> <out>/summary/<experiment>.json
            {"<experiment>": {"runs", "diverged", "claims", "reproduced", "not_reproduced", "inconclusive",
            "not_judged"}}: a few columns per experiment for `dvc exp show` (README: its --keep pattern)

Pure functions of the tables; the file names are the ones dvc.yaml declares (pipeline/dvcfile.py).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl


def _number(value):
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def variant_metrics(summary: pl.DataFrame, final: pl.DataFrame, experiment: str, variant: str) -> dict:
    """One variant's metrics file: its final metric's mean and interval over seeds, and each seed's value."""
    rows = summary.filter((pl.col("experiment") == experiment) & (pl.col("variant") == variant))
    out: dict = {}
    for row in rows.iter_rows(named=True):
        if row["quantity"] == "final":
            metric = row["metric"]
            out.update({metric: _number(row["mean"]), f"{metric}_ci_lo": _number(row["ci_lo"]),
                        f"{metric}_ci_hi": _number(row["ci_hi"]), "n_runs": row["n_runs"]})
        elif row["quantity"] == "train_seconds":
            out["train_seconds"] = _number(row["mean"])
    runs = final.filter((pl.col("experiment") == experiment) & (pl.col("variant") == variant)).sort("seed")
    out["seeds"] = {str(r["seed"]): _number(r["final"]) for r in runs.iter_rows(named=True)}
    return out


def write_metrics(summary: pl.DataFrame, final: pl.DataFrame, out_dir: Path) -> list[Path]:
    written = []
    for experiment, variant in final.select("experiment", "variant").unique(maintain_order=True).iter_rows():
        path = Path(out_dir) / "metrics" / experiment / f"{variant}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(variant_metrics(summary, final, experiment, variant), indent=1) + "\n")
        written.append(path)
    return written


def curve_metric(final: pl.DataFrame, experiment: str) -> str | None:
    """The metric an experiment's curves show: its runs' time-to-target metric (evaluated every few epochs)."""
    metrics = final.filter(pl.col("experiment") == experiment)["target_metric"].drop_nulls().unique().to_list()
    return metrics[0] if metrics else None


def curves(history: pl.DataFrame, final: pl.DataFrame, experiment: str) -> pl.DataFrame | None:
    """epoch x variant: the mean over seeds of the curve metric, evaluated epochs only (a wide table)."""
    metric = curve_metric(final, experiment)
    rows = history.filter((pl.col("experiment") == experiment) & ~pl.col("diverged"))
    if metric is None or metric not in rows.columns:
        return None
    variants = final.filter(pl.col("experiment") == experiment)["variant"].unique(maintain_order=True).to_list()
    means = (rows.filter(pl.col(metric).is_not_null()).group_by("variant", "epoch").agg(pl.col(metric).mean())
             .pivot(on="variant", index="epoch", values=metric).sort("epoch"))
    return means.select("epoch", *[v for v in variants if v in means.columns])


def write_curves(history: pl.DataFrame, final: pl.DataFrame, out_dir: Path) -> list[Path]:
    written = []
    for experiment in final["experiment"].unique(maintain_order=True).to_list():
        table = curves(history, final, experiment)
        if table is not None:
            path = Path(out_dir) / "curves" / f"{experiment}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            table.write_csv(path)
            written.append(path)
    return written


def experiment_summary(claims: pl.DataFrame, final: pl.DataFrame, experiment: str) -> dict:
    """Runs, diverged runs, and the experiment's claims by verdict ("not comparable ..." and "not tested" are
    counted as not judged)."""
    runs = final.filter(pl.col("experiment") == experiment)
    verdicts = claims.filter(pl.col("experiment") == experiment)["verdict"].to_list()
    counts = {key: sum(v == verdict for v in verdicts) for key, verdict in
              (("reproduced", "reproduced"), ("not_reproduced", "not reproduced"), ("inconclusive", "inconclusive"))}
    return {"runs": runs.height, "diverged": int(runs["diverged"].sum()), "claims": len(verdicts), **counts,
            "not_judged": len(verdicts) - sum(counts.values())}


def write_summaries(claims: pl.DataFrame, final: pl.DataFrame, experiments: list[str], out_dir: Path) -> list[Path]:
    written = []
    for experiment in experiments:
        path = Path(out_dir) / "summary" / f"{experiment}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        # under the experiment's name: `dvc exp show` then names its columns <experiment>.<key>, short and unique
        path.write_text(json.dumps({experiment: experiment_summary(claims, final, experiment)}, indent=1) + "\n")
        written.append(path)
    return written
