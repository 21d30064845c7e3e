"""Collect every run's files into two polars tables: one row per run (final) and one row per run x epoch (history).

    results/runs/<experiment>/<variant>/seed<k>/{metrics.json, history.csv, config.json}
        --collect_runs()--> final [runs x columns], history [runs*epochs x columns]
        --collect()-------> <out>/runs_final.{parquet,csv}, <out>/runs_history.{parquet,csv}, <out>/incomplete_runs.csv

A run directory without metrics.json (the engine writes it last, so its absence means a killed or running job)
is reported with one line naming it and listed in incomplete_runs.csv; it is never silently skipped.
A malformed metrics.json, or one whose experiment/variant/seed disagree with its path, is an error naming the file.

Columns of `final` (one row per run):

| column             | type   | meaning                                                                        |
|--------------------|--------|--------------------------------------------------------------------------------|
| experiment         | str    | block_size, edba, growth, optimizers                                           |
| variant            | str    | the grid's variant name (e.g. edba-cifar10-p10)                                |
| seed               | i64    | the run's seed                                                                 |
| profile            | str    | smoke / quick / paper: the profile the run was trained under                   |
| method             | str    | method name from metrics.json (e.g. edba, baseline, nadam)                     |
| dataset            | str    | dataset key (e.g. ptb, cifar10)                                                |
| subset             | str    | subset name (e.g. full, p10, n100) or null                                     |
| metric, mode       | str    | the eval metric (test_acc, test_ppl) and its direction (max / min)             |
| final              | f64    | eval metric after the last epoch, harness units (accuracy 0-1); null if diverged |
| best, best_epoch   | f64,i64| best eval metric over the evaluated epochs and its epoch                       |
| target_metric, target_value, target_mode | str,f64,str | the time-to-target threshold                    |
| epochs_to_target   | i64    | first epoch reaching the target; null if never                                 |
| seconds_to_target  | f64    | training seconds (eval excluded) to reach the target; null if never            |
| train_seconds      | f64    | training wall-clock seconds, evaluation excluded                               |
| train_flops        | f64    | analytic training FLOPs                                                        |
| distinct_samples   | f64    | distinct training samples (images) or token positions seen                     |
| diverged           | bool   | the loss became NaN/inf; the run's metric is excluded from means, and counted  |
| epochs             | i64    | completed epochs                                                               |
| extra_<key>        | f64/str| metrics.json "extra": numbers as f64, anything else as JSON text; nested keys joined with _ |
| device, git_commit | str    | from config.json "environment" (null when absent)                              |
| run_dir            | str    | the run's directory relative to runs_root                                      |

Columns of `history` (one row per run x evaluated epoch): experiment, variant, seed, profile, method, dataset,
subset, diverged (as above, to group without a join), then every column of history.csv as written by the engine:
epoch (i64, 1-based), train_loss, the eval metric columns (test_acc / valid_ppl / test_ppl ...), lr, batch_size
or block_size, elapsed_seconds (cumulative training seconds), time (wall clock at the epoch's end, unix seconds;
absent in runs written before it was recorded), samples, flops (cumulative), and experiment-specific columns
(e.g. width); all of them f64. Runs whose history lacks a column have null there.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Callable

import polars as pl

from ..errors import PipelineError

class RunFileError(PipelineError, ValueError):
    """A run directory or table that cannot be read: the message is one line naming the file."""


SEED_DIR = re.compile(r"^seed(\d+)$")
IDENTITY = ["experiment", "variant", "seed", "profile", "method", "dataset", "subset"]
FINAL_SCHEMA = {
    "experiment": pl.String, "variant": pl.String, "seed": pl.Int64, "profile": pl.String, "method": pl.String,
    "dataset": pl.String, "subset": pl.String, "metric": pl.String, "mode": pl.String,
    "final": pl.Float64, "best": pl.Float64, "best_epoch": pl.Int64,
    "target_metric": pl.String, "target_value": pl.Float64, "target_mode": pl.String,
    "epochs_to_target": pl.Int64, "seconds_to_target": pl.Float64, "train_seconds": pl.Float64,
    "train_flops": pl.Float64, "distinct_samples": pl.Float64, "diverged": pl.Boolean, "epochs": pl.Int64,
}
TAIL = {"device": pl.String, "git_commit": pl.String, "run_dir": pl.String}


# ---- finding runs -----------------------------------------------------------------------------------------------
def find_run_dirs(runs_root: Path) -> tuple[list[Path], list[Path]]:
    """-> (complete run dirs, run dirs without metrics.json), both sorted; a run dir is <exp>/<variant>/seed<k>."""
    runs_root = Path(runs_root)
    if not runs_root.is_dir():
        raise RunFileError(f"{runs_root}: runs directory does not exist")
    dirs = sorted(p for p in runs_root.glob("*/*/seed*") if p.is_dir() and SEED_DIR.match(p.name))
    complete = [d for d in dirs if (d / "metrics.json").is_file()]
    return complete, [d for d in dirs if d not in complete]


# ---- one run ------------------------------------------------------------------------------------------------------
def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise RunFileError(f"{path}: unreadable run file ({err})") from None
    if not isinstance(data, dict):
        raise RunFileError(f"{path}: expected a JSON object")
    return data


def _flatten(prefix: str, value, out: dict) -> None:
    """Nested dicts become prefix_key columns; numbers stay numbers, anything else becomes JSON text."""
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}_{k}", v, out)
    elif value is None or isinstance(value, str):
        out[prefix] = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out[prefix] = float(value)
    else:
        out[prefix] = json.dumps(value)


def final_row(run_dir: Path, runs_root: Path) -> dict:
    """metrics.json (+ config.json's environment) of one run -> one row of the final table."""
    metrics_path = run_dir / "metrics.json"
    m = _read_json(metrics_path)
    missing = [k for k in ("experiment", "variant", "seed", "metric", "mode", "diverged") if k not in m]
    if missing:
        raise RunFileError(f"{metrics_path}: missing key(s) {', '.join(missing)}")
    path_identity = (run_dir.parent.parent.name, run_dir.parent.name, int(SEED_DIR.match(run_dir.name)[1]))
    if (m["experiment"], m["variant"], int(m["seed"])) != path_identity:
        raise RunFileError(f"{metrics_path}: says {m['experiment']}/{m['variant']}/seed{m['seed']}, "
                         f"but lies in {'/'.join(map(str, path_identity))}")
    target = m.get("target") or {}
    row = {k: m.get(k) for k in FINAL_SCHEMA if not k.startswith("target_")}
    row.update(target_metric=target.get("metric"), target_value=target.get("value"), target_mode=target.get("mode"))
    for k in ("final", "best", "seconds_to_target", "train_seconds", "train_flops", "distinct_samples"):
        v = row[k]
        row[k] = float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None
    extra: dict = {}
    _flatten("extra", m.get("extra") or {}, extra)
    row.update(extra)
    env = {}
    if (run_dir / "config.json").is_file():
        env = _read_json(run_dir / "config.json").get("environment") or {}
    row.update(device=env.get("device"), git_commit=env.get("git_commit"),
               run_dir=str(run_dir.relative_to(runs_root)))
    return row


def history_frame(run_dir: Path, identity: dict) -> pl.DataFrame | None:
    """history.csv of one run -> its rows with the identity columns in front; None when the file is absent."""
    path = run_dir / "history.csv"
    if not path.is_file():
        return None
    try:
        h = pl.read_csv(path, infer_schema_length=None)
    except (pl.exceptions.PolarsError, OSError) as err:
        raise RunFileError(f"{path}: unreadable history ({err})") from None
    if "epoch" not in h.columns:
        raise RunFileError(f"{path}: no 'epoch' column")
    h = h.with_columns([pl.col(c).cast(pl.Float64, strict=False) for c in h.columns if c != "epoch"])
    h = h.with_columns(pl.col("epoch").cast(pl.Int64))
    ident = [pl.lit(identity[k], dtype=FINAL_SCHEMA[k]).alias(k) for k in IDENTITY + ["diverged"]]
    return h.select(ident + [pl.col(c) for c in h.columns if c not in IDENTITY + ["diverged"]])


# ---- all runs -----------------------------------------------------------------------------------------------------
def _final_frame(rows: list[dict]) -> pl.DataFrame:
    extra_cols = sorted({k for r in rows for k in r if k.startswith("extra_")})
    columns: dict[str, pl.Series] = {}
    for name, dtype in {**FINAL_SCHEMA, **TAIL}.items():
        columns[name] = pl.Series(name, [r.get(name) for r in rows], dtype=dtype)
    for name in extra_cols:
        values = [r.get(name) for r in rows]
        numeric = all(v is None or isinstance(v, float) for v in values)
        columns[name] = pl.Series(name, values if numeric else [None if v is None else str(v) for v in values],
                                  dtype=pl.Float64 if numeric else pl.String)
    order = list(FINAL_SCHEMA) + extra_cols + list(TAIL)
    return pl.DataFrame([columns[c] for c in order])


def collect_runs(runs_root: Path, log: Callable[[str], None] = print) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Every complete run under runs_root -> (final, history); one log line per run dir without metrics.json."""
    runs_root = Path(runs_root)
    complete, incomplete = find_run_dirs(runs_root)
    for d in incomplete:
        log(f"incomplete run (no metrics.json): {d}")
    rows, histories = [], []
    for d in complete:
        row = final_row(d, runs_root)
        rows.append(row)
        h = history_frame(d, row)
        if h is None:
            log(f"run without history.csv: {d}")
        else:
            histories.append(h)
    final = _final_frame(rows)
    if histories:
        history = pl.concat(histories, how="diagonal_relaxed").sort(["experiment", "variant", "seed", "epoch"])
    else:
        history = pl.DataFrame(schema={**{k: FINAL_SCHEMA[k] for k in IDENTITY + ["diverged"]}, "epoch": pl.Int64})
    return final.sort(["experiment", "variant", "seed"]), history


def collect(runs_root: Path, out_dir: Path, log: Callable[[str], None] = print) -> dict[str, Path]:
    """Stage entry: write runs_final / runs_history (parquet + csv) and incomplete_runs.csv into out_dir."""
    runs_root, out_dir = Path(runs_root), Path(out_dir)
    final, history = collect_runs(runs_root, log)
    _, incomplete = find_run_dirs(runs_root)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, frame in (("runs_final", final), ("runs_history", history)):
        frame.write_parquet(out_dir / f"{name}.parquet")
        frame.write_csv(out_dir / f"{name}.csv")
        paths[name] = out_dir / f"{name}.parquet"
    pl.DataFrame({"run_dir": [str(d.relative_to(runs_root)) for d in incomplete]}, schema={"run_dir": pl.String}) \
        .write_csv(out_dir / "incomplete_runs.csv")
    paths["incomplete_runs"] = out_dir / "incomplete_runs.csv"
    log(f"collected {final.height} runs ({history.height} history rows, {len(incomplete)} incomplete) into {out_dir}")
    return paths


def read_tables(tables_dir: Path) -> tuple[pl.DataFrame, pl.DataFrame, list[str]]:
    """The collect stage's outputs -> (final, history, incomplete run dirs); a clear error if one is missing."""
    tables_dir = Path(tables_dir)
    for name in ("runs_final.parquet", "runs_history.parquet"):
        if not (tables_dir / name).is_file():
            raise RunFileError(f"{tables_dir / name}: missing; run the collect stage first")
    incomplete_path = tables_dir / "incomplete_runs.csv"
    incomplete = pl.read_csv(incomplete_path)["run_dir"].to_list() if incomplete_path.is_file() else []
    return (pl.read_parquet(tables_dir / "runs_final.parquet"), pl.read_parquet(tables_dir / "runs_history.parquet"),
            incomplete)
