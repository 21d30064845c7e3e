"""collect: fake run directories (the engine's run-file contract) -> the final and history tables."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipeline.analysis.collect import collect, collect_runs, read_tables


def write_run(root: Path, experiment: str, variant: str, seed: int, *, method: str, dataset: str,
              subset: str | None, metric: str, mode: str, curve: list[float], profile: str = "smoke",
              diverged: bool = False, extra: dict | None = None, trace: dict[str, list[float]] | None = None,
              seconds_per_epoch: float = 1.0, flops_per_epoch: float = 1e9, target: float | None = None) -> Path:
    """One run's metrics.json, history.csv and config.json as the engine writes them."""
    run = root / experiment / variant / f"seed{seed}"
    run.mkdir(parents=True)
    rows = []
    for e, v in enumerate(curve, start=1):
        row = {"epoch": e, "train_loss": 1.0 / e, metric: v, "lr": 0.1, "elapsed_seconds": e * seconds_per_epoch,
               "samples": e * 100, "flops": e * flops_per_epoch}
        for k, vals in (trace or {}).items():
            row[k] = vals[e - 1]
        rows.append(row)
    if diverged:
        rows[-1][metric] = float("nan")
    with open(run / "history.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    good = [r for r in rows if np.isfinite(r[metric])]
    best = (max if mode == "max" else min)(good, key=lambda r: r[metric])
    tgt = target if target is not None else curve[len(curve) // 2]
    hit = next((r for r in good if (r[metric] >= tgt if mode == "max" else r[metric] <= tgt)), None)
    metrics = {"experiment": experiment, "variant": variant, "seed": seed, "profile": profile, "method": method,
               "dataset": dataset, "subset": subset, "metric": metric, "mode": mode,
               "final": None if diverged else curve[-1], "best": best[metric], "best_epoch": best["epoch"],
               "target": {"metric": metric, "value": tgt, "mode": mode},
               "epochs_to_target": hit and hit["epoch"], "seconds_to_target": hit and hit["elapsed_seconds"],
               "train_seconds": len(curve) * seconds_per_epoch, "train_flops": len(curve) * flops_per_epoch,
               "distinct_samples": 100, "diverged": diverged, "epochs": len(curve), "extra": extra or {}}
    (run / "config.json").write_text(json.dumps({"run": {}, "environment": {"device": "cpu", "git_commit": "abc"}}))
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def small_grid(root: Path) -> None:
    """2 experiments x 2 variants x 3 seeds."""
    rng = np.random.default_rng(0)
    for seed in range(3):
        for variant, base in (("fixed16", 130.0), ("doubling", 112.0)):
            curve = list(base + 50 / np.arange(1, 5) + rng.normal(0, 1, 4))
            write_run(root, "block_size", variant, seed, method=variant, dataset="ptb", subset=None, metric="test_ppl",
                      mode="min", curve=curve, trace={"block_size": [16, 16, 32, 32]})
        for variant in ("baseline-cifar10-p10", "edba-cifar10-p10"):
            curve = list(np.linspace(0.3, 0.7, 3) + rng.normal(0, 0.01, 3))
            write_run(root, "edba", variant, seed, method=variant.split("-")[0], dataset="cifar10", subset="p10",
                      metric="test_acc", mode="max", curve=curve, trace={"batch_size": [100, 120, 140]},
                      extra={"final_batch_size": 140, "sizes": [100, 140], "ema": {"decay": 0.9}})


def test_collect_shapes_and_columns(tmp_path):
    small_grid(tmp_path / "runs")
    final, history = collect_runs(tmp_path / "runs", log=lambda s: None)
    assert final.height == 12  # 2 experiments x 2 variants x 3 seeds
    assert history.height == 3 * 2 * 4 + 3 * 2 * 3  # runs x epochs
    for col in ("experiment", "variant", "seed", "profile", "method", "dataset", "subset", "metric", "mode", "final",
                "best", "target_value", "seconds_to_target", "train_seconds", "train_flops", "diverged", "device",
                "run_dir", "extra_final_batch_size", "extra_sizes", "extra_ema_decay"):
        assert col in final.columns, col
    assert final.schema["extra_final_batch_size"] == pl.Float64
    assert final.schema["extra_sizes"] == pl.String  # non-scalar extras become JSON text
    assert final.filter(pl.col("experiment") == "block_size")["extra_final_batch_size"].null_count() == 6
    # history keeps every run's own columns; runs without a column get nulls there
    assert {"epoch", "test_ppl", "test_acc", "block_size", "batch_size", "elapsed_seconds"} <= set(history.columns)
    assert history.filter(pl.col("experiment") == "edba")["block_size"].null_count() == 18
    assert history.group_by("experiment", "variant", "seed").len()["len"].to_list().count(4) == 6


def test_missing_metrics_is_reported(tmp_path):
    runs = tmp_path / "runs"
    small_grid(runs)
    (runs / "edba" / "edba-cifar10-p10" / "seed1" / "metrics.json").unlink()
    lines: list[str] = []
    final, _ = collect_runs(runs, log=lines.append)
    assert final.height == 11
    reported = [line for line in lines if "no metrics.json" in line]
    assert len(reported) == 1 and "edba-cifar10-p10/seed1" in reported[0]
    collect(runs, tmp_path / "tables", log=lambda s: None)
    _, _, incomplete = read_tables(tmp_path / "tables")
    assert incomplete == ["edba/edba-cifar10-p10/seed1"]


def test_diverged_run_is_kept_and_flagged(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "optimizers", "adam", 0, method="adam", dataset="cifar10", subset=None, metric="test_acc",
              mode="max", curve=[0.2, 0.3, 0.4], diverged=True)
    final, history = collect_runs(runs, log=lambda s: None)
    assert final["diverged"].to_list() == [True] and final["final"].to_list() == [None]
    assert history.height == 3 and np.isnan(history["test_acc"][-1])


def test_written_tables_round_trip(tmp_path):
    small_grid(tmp_path / "runs")
    paths = collect(tmp_path / "runs", tmp_path / "tables", log=lambda s: None)
    assert (tmp_path / "tables" / "runs_final.csv").is_file() and (tmp_path / "tables" / "runs_history.csv").is_file()
    final, history, _ = read_tables(tmp_path / "tables")
    assert final.height == 12 and history.height == 42
    assert pl.read_parquet(paths["runs_final"]).equals(final)


def test_mismatched_identity_is_an_error(tmp_path):
    runs = tmp_path / "runs"
    run = write_run(runs, "edba", "a", 0, method="a", dataset="cifar10", subset=None, metric="test_acc", mode="max",
                    curve=[0.1, 0.2])
    (run.parent.parent / "b").mkdir()
    run.rename(run.parent.parent / "b" / "seed0")
    with pytest.raises(ValueError, match="says edba/a/seed0"):
        collect_runs(runs, log=lambda s: None)
