"""Experiment 4's tuning stage: each variant's learning rate, picked on a validation split (never the test split).

    params.yaml optimizers (tuning job <name> = the variant it tunes) + --data <prepared> [--subsets <subsets>]
        --> the tuning seed's training set split into fit / validation (class-balanced)
        --> one short run per lr of a log-spaced grid (train.fit_variant, the final runs' code path), scored by
            validation accuracy
        --> --out results/tuning/optimizers/<name>.json {grid, score per lr, pick, split sizes, budget, config}

The file records the configuration it was tuned for (tuning_config); a training job refuses a file written for
another profile or configuration.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np

from ...errors import ConfigError
from ...seeding import rng
from ...train.image import ImageData
from ...train.jobs import Job
from .train import METRIC, fit_variant, tuning_config

VALIDATION_PURPOSE = "tuning/validation"  # seeding purpose of the held-out split


# ---------------------------------------------------------------------------------------------- tuning data
def validation_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, validation rows) into `labels`, both sorted: round(fraction * n_c) rows of every class c (at
    least one, and at least one left to fit) drawn by one permutation per class, classes in sorted order, from
    pipeline.seeding.rng(seed, "tuning/validation"). Deterministic; stratified, so balanced data stay balanced."""
    gen = rng(seed, VALIDATION_PURPOSE)
    held = []
    for c in np.unique(labels):
        rows = gen.permutation(np.flatnonzero(labels == c))
        k = max(1, int(round(fraction * len(rows))))
        if k >= len(rows):
            raise ConfigError(f"optimizers.tuning.validation_fraction {fraction}: class {c} has {len(rows)} "
                              f"training images, too few to hold any out")
        held.append(rows[:k])
    validation = np.sort(np.concatenate(held))
    return np.setdiff1d(np.arange(len(labels)), validation), validation


def tuning_data(job: Job) -> tuple[ImageData, dict]:
    """ImageData whose training rows are the fit part of the tuning seed's training set and whose *test* arrays
    are the held-out validation slice, so image.evaluate scores validation; test.npz is never opened."""
    cfg = job.settings
    prepared = job.prepared(cfg.dataset)
    meta = json.loads((prepared / "meta.json").read_text())
    with np.load(prepared / "train.npz") as train:
        x_all, y_all = train["x"], train["y"]
    chosen = job.subset_file(cfg.dataset, cfg.train.subset)
    index = np.arange(len(y_all)) if chosen is None else np.load(chosen)
    fit_rows, val_rows = validation_split(y_all[index], cfg.tuning.validation_fraction, job.seed)
    fit, held_out = index[fit_rows], index[val_rows]
    # the fit part as the training rows (leak guard: validation rows are not in it; statistics of the fit part only)
    # and the validation slice as the "test" split
    data = ImageData.from_arrays(x_all[fit], y_all[fit], fit, len(y_all), x_all[held_out], y_all[held_out],
                                 len(meta["classes"]), job.device, on_device=job.params.speed.data_on_device)
    split = {"seed": job.seed, "purpose": VALIDATION_PURPOSE, "subset": cfg.train.subset,
             "training_set": int(len(index)), "fit": int(len(fit)), "validation": int(len(held_out)),
             "validation_fraction": cfg.tuning.validation_fraction}
    return data, split


# ---------------------------------------------------------------------------------------------- scoring
def score_of(run) -> dict:
    """Validation accuracy and loss at the end of a tuning run; a NaN loss or non-finite score is a divergence."""
    last = run.history[-1] if run.history else {}
    acc, loss = last.get(METRIC), last.get("test_loss")
    finite = all(isinstance(v, (int, float)) and math.isfinite(v) for v in (acc, loss))
    diverged = run.diverged or not finite
    return {"val_acc": acc if finite and not diverged else None, "val_loss": loss if finite and not diverged else None,
            "diverged": bool(diverged), "epochs": run.epoch, "train_seconds": run.train_seconds,
            "val_acc_per_epoch": [r.get(METRIC) for r in run.history]}


def pick(scores: list[dict]) -> int:
    """Index of the best grid point: the highest validation accuracy; ties go to the lower validation loss, then to
    the smaller lr (the grid ascends). Diverged points rank below every finished one (if all diverged: index 0)."""
    def key(i: int) -> tuple:
        s = scores[i]
        if s["diverged"]:
            return (-math.inf, -math.inf, -i)
        return (s["val_acc"], -s["val_loss"], -i)

    return max(range(len(scores)), key=key)


# ---------------------------------------------------------------------------------------------- the stage
def tune(job: Job, out: Path) -> dict:
    """Run the lr grid of tuning job `job.variant` on the validation split and write the tuning file `out`. The
    runs' seed (and the subset of that seed) is settings.tuning.seed."""
    cfg, name = job.settings, job.variant
    job = dataclasses.replace(job, seed=cfg.tuning.seed)
    grid, config = cfg.lr_grid(), tuning_config(job.params, name)
    data, split = tuning_data(job)
    scores = []
    for lr in grid:
        spec = job.spec(METRIC, "max", config={"tuning": config, "split": split, "lr": lr}, variant=f"tune-{name}")
        # the tuning runs write no run files (their scores go into `out`), only checkpoints, so a killed job resumes
        run = job.start(spec, Path(out).with_suffix(""))
        fit_variant(run, cfg, name, lr, data, job.seed, cfg.tuning.epochs, job.device)
        scores.append({"lr": lr, **score_of(run)})
    best = pick(scores)
    record = {
        "experiment": job.experiment, "name": name, "profile": job.params.profile, "dataset": cfg.dataset,
        "metric": "val_acc", "config": config, "split": split,
        "budget": {"epochs": cfg.tuning.epochs, "batch_size": cfg.train.batch_size,
                   "steps_per_epoch": math.ceil(split["fit"] / cfg.train.batch_size), "seed": job.seed,
                   "schedule": cfg.schedule},
        "grid": grid, "scores": scores, "pick_index": best, "pick": grid[best],
        "at_edge": len(grid) > 1 and best in (0, len(grid) - 1),
        "all_diverged": all(s["diverged"] for s in scores),
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, out)  # atomic: a half-written tuning file never exists
    shown = ", ".join(f"{s['lr']:.3g}: {'diverged' if s['diverged'] else format(s['val_acc'], '.3f')}" for s in scores)
    print(f"optimizers/tune {name}: val_acc {{{shown}}} -> lr {grid[best]:.3g}"
          + (" (at the grid edge: widen tuning.points or move lr_center)" if record["at_edge"] else "")
          + (" (every lr diverged)" if record["all_diverged"] else ""))
    return record
