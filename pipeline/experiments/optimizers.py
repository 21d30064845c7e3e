"""Experiment 4: the rapid-training survey's techniques compared like for like on CIFAR-10.

    tune:  params.optimizers + tuning job <name>
             --> seed-0 training set split into fit / validation (class-balanced, never the test split)
             --> one short run per lr of a log-spaced grid, scored by validation accuracy
             --> results/tuning/optimizers/<name>.json {grid, score per lr, pick, split sizes, budget}
    train: params.optimizers + variant + seed + the tuned lr of the variant (its own, or `lr_from`'s)
             --> ResNet-20 (normalisation applied), optimizer, per-step lr schedule --> pipeline.train.image.fit
             --> results/runs/optimizers/<variant>/seed<k>/{metrics.json, history.csv, config.json}

The survey (rapid-training-survey.txt, Figure 1) ranks optimizers by convergence speed and test accuracy without
saying how each was set up. Here every variant trains the same model on the same data with the same augmentation
and the same budget; only the technique differs, and each technique runs at its own learning rate, picked on a
validation split as a user of that technique would. Three families of variants (params.yaml):
    optimizers      sgd .. kfac, all with batch norm and the common schedule (defaults)
    normalisation   norm-batch / norm-weight / norm-both / norm-none, SGD + momentum
    lr schedules    lr-constant / lr-step / lr-cosine / lr-clr / lr-onecycle, SGD + momentum
metrics.json: method = the variant's name (the technique), time-to-target from the per-epoch test accuracy, and
`extra` = tuned lr, where it came from, optimizer, schedule, normalisation mode, whether the lr sat at a grid edge.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import torch

from .. import dag
from ..methods.lr_schedules import build_scheduler
from ..methods.normalization import apply_normalization, data_dependent_init
from ..methods.optimizers import build_optimizer
from ..models.flops import conv_linear_flops
from ..schemas.optimizers import Optimizers, Resolved
from ..seeding import generator, rng
from ..train import image, runner
from ..train.image import ImageData
from .common import build_model, image_data, spec_for

EXPERIMENT = "optimizers"
METRIC, MODE = "test_acc", "max"  # judged on final test accuracy (a fraction)
VALIDATION_PURPOSE = "tuning/validation"  # seeding purpose of the held-out split


# ---------------------------------------------------------------------------------------------- identity
def describe(section: Optimizers, variant: str) -> dict:
    """The variant's name is its technique (sgd, nadam, norm-weight, lr-clr, ...)."""
    return {"method": variant, "dataset": section.dataset, "subset": section.resolve(variant).train.subset}


def check_data_settings(params, section: Optimizers) -> None:
    """The dataset and subset exist in data.datasets; one line naming the key otherwise (before any training)."""
    datasets = params.data.datasets
    if section.dataset not in datasets:
        raise ValueError(f"optimizers.dataset: {section.dataset!r} is not in data.datasets ({', '.join(datasets)})")
    subsets = ["full", *(datasets[section.dataset].subsets or {})]
    if section.train.subset not in subsets:
        raise ValueError(f"optimizers.train.subset: {section.train.subset!r} is not a subset of "
                         f"{section.dataset} ({', '.join(subsets)})")


# ---------------------------------------------------------------------------------------------- building blocks
def build_network(cfg: Resolved, num_classes: int, seed: int, device) -> torch.nn.Module:
    """The model with the variant's normalisation; the init depends on the seed only (same for every variant)."""
    model = build_model(cfg.model.name, num_classes, cfg.model.widths, generator=generator(seed, "init"))
    return apply_normalization(model, cfg.normalization).to(device)


def init_weight_norm(model: torch.nn.Module, cfg: Resolved, data: ImageData, seed: int) -> None:
    """Salimans & Kingma 2016 §3: g, b from one batch of training images (unaugmented) so every weight-normalised
    pre-activation starts at mean 0, std 1. Only the run's own training rows are used."""
    if cfg.normalization not in ("weight", "both") or cfg.train.weight_norm_init == "none":
        return
    rows = torch.randperm(len(data.y), generator=generator(seed, "weight_norm_init"))[:cfg.train.batch_size]
    data_dependent_init(model, data.normalize(data.x[rows.to(data.x.device)]))


def build_optimization(cfg: Resolved, variant: str, model: torch.nn.Module, lr: float, steps_per_epoch: int,
                       epochs: int, seed: int = 0):
    """(optimizer, scheduler) of the variant at `lr`; the schedule spans steps_per_epoch x epochs steps.

    cfg.options / cfg.schedule_options carry params.yaml's optimizer_options / schedule_options (and the variant's
    overrides), so every setting besides the lr reaches the builders from the configuration."""
    options = dict(cfg.options)
    if cfg.optimizer == "kfac":
        options["model"] = model  # K-FAC hooks the model's Linear/Conv2d layers
        options["seed"] = seed  # the stream of sampled-Fisher labels (fisher: sampled), per run seed
    try:
        optimizer = build_optimizer(cfg.optimizer, model.parameters(), lr, **options)
        scheduler = build_scheduler(cfg.schedule, optimizer, steps_per_epoch, epochs, **cfg.schedule_options)
    except ValueError as err:
        raise ValueError(f"optimizers.variants.{variant}: {err}") from None
    return optimizer, scheduler


def fit_variant(run, cfg: Resolved, variant: str, lr: float, data: ImageData, seed: int, epochs: int,
                device) -> torch.nn.Module:
    """Build model, optimizer and schedule for one (variant, lr, seed) and train it for `epochs` epochs.

    Shared by the tuning runs (data = fit part, "test" = validation slice) and the final runs (data = the
    seed's training set and the test split): the same code path, only the data and the budget differ.
    """
    model = build_network(cfg, data.num_classes, seed, device)
    init_weight_norm(model, cfg, data, seed)  # before resume: a checkpoint overwrites it
    steps_per_epoch = math.ceil(len(data.y) / cfg.train.batch_size)  # what image.train_epoch takes per epoch
    forward_flops = conv_linear_flops(model)  # before the optimizer: K-FAC must not see this probe
    optimizer, scheduler = build_optimization(cfg, variant, model, lr, steps_per_epoch, epochs, seed)
    loop = image.ImageLoop(epochs=epochs, samples_per_epoch=len(data.y), eval_every=1,  # every epoch: time-to-target
                           eval_batch=cfg.train.eval_batch, augment=cfg.train.augment,
                           clip_grad_norm=cfg.train.clip_grad_norm, forward_flops=forward_flops)
    image.fit(run, model, optimizer, scheduler, data, image.FixedBatch(cfg.train.batch_size), loop,
              runner.seed_generators(seed))
    return model


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
            raise ValueError(f"optimizers.tuning.validation_fraction {fraction}: class {c} has {len(rows)} "
                             f"training images, too few to hold any out")
        held.append(rows[:k])
    validation = np.sort(np.concatenate(held))
    return np.setdiff1d(np.arange(len(labels)), validation), validation


def training_index(params, section: Optimizers, seed: int, n_train: int) -> np.ndarray:
    """int64 indices into train.npz of the seed's training set (the subset file of that seed, or all)."""
    subset = section.train.subset
    if subset == "full":
        return np.arange(n_train)
    path = params.subsets_dir(section.dataset) / f"seed{seed}" / f"{subset}.npy"
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; run `python -m pipeline subsets {section.dataset}` first")
    return np.load(path)


def tuning_data(params, section: Optimizers, device) -> tuple[ImageData, dict]:
    """ImageData whose training rows are the fit part of the tuning seed's training set and whose *test* arrays
    are the held-out validation slice, so image.evaluate scores validation; test.npz is never opened."""
    prepared = params.prepared_dir(section.dataset)
    meta = runner.check_data_kind(prepared, params.synthetic)
    with np.load(prepared / "train.npz") as train:
        x_all, y_all = train["x"], train["y"]
    seed = section.tuning.seed
    index = training_index(params, section, seed, len(y_all))
    fit_rows, val_rows = validation_split(y_all[index], section.tuning.validation_fraction, seed)
    fit, held_out = index[fit_rows], index[val_rows]
    to_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2))).to(device)  # NHWC -> NCHW
    x = to_tensor(x_all[fit])
    local_of = torch.full((len(y_all),), -1, dtype=torch.long)  # leak guard: validation rows map to -1
    local_of[torch.from_numpy(fit)] = torch.arange(len(fit))
    pixels = x.float().div(255)
    data = ImageData(x=x, y=torch.from_numpy(y_all[fit]).long().to(device),
                     global_index=torch.from_numpy(fit).long().to(device), local_of=local_of.to(device),
                     test_x=to_tensor(x_all[held_out]), test_y=torch.from_numpy(y_all[held_out]).long().to(device),
                     mean=pixels.mean(dim=(0, 2, 3), keepdim=True),  # statistics of the fit part only
                     std=pixels.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-3), num_classes=len(meta["classes"]))
    split = {"seed": seed, "purpose": VALIDATION_PURPOSE, "subset": section.train.subset,
             "training_set": int(len(index)), "fit": int(len(fit)), "validation": int(len(held_out)),
             "validation_fraction": section.tuning.validation_fraction}
    return data, split


# ---------------------------------------------------------------------------------------------- tuning
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


def tune(params, name: str, out: Path, device, checkpoint_root: Path = Path("results/checkpoints")) -> dict:
    """Run the lr grid of tuning job `name` on the validation split and write the tuning file `out`."""
    section: Optimizers = params.optimizers
    check_data_settings(params, section)
    cfg, grid, seed = section.resolve(name), section.lr_grid(name), section.tuning.seed
    data, split = tuning_data(params, section, device)
    config = section.tuning_config(name)
    scores = []
    for lr in grid:
        spec = spec_for(params, EXPERIMENT, f"tune-{name}", seed, method=name, dataset=section.dataset,
                        subset=section.train.subset, config={"tuning": config, "split": split, "lr": lr})
        # the tuning runs write no run files (their scores go into `out`), only checkpoints, so a killed job resumes
        run = runner.start_run(spec, Path(out).with_suffix(""), checkpoint_root, device)
        fit_variant(run, cfg, name, lr, data, seed, section.tuning.epochs, device)
        scores.append({"lr": lr, **score_of(run)})
    best = pick(scores)
    record = {
        "experiment": EXPERIMENT, "name": name, "profile": params.profile, "dataset": section.dataset,
        "metric": "val_acc", "config": config, "split": split,
        "budget": {"epochs": section.tuning.epochs, "batch_size": cfg.train.batch_size,
                   "steps_per_epoch": math.ceil(split["fit"] / cfg.train.batch_size), "seed": seed,
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


# ---------------------------------------------------------------------------------------------- the tuned lr
def tuned_lr(params, section: Optimizers, variant: str) -> tuple[float, dict]:
    """(lr, tuning record) the variant trains with, read from its tuning file (pipeline.dag.tuning_file); one-line
    errors when the file is missing or was written for another profile or configuration."""
    (source,) = section.variant_tuning(variant)
    path = Path(dag.tuning_file(EXPERIMENT, source))
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; run `python -m pipeline tune {EXPERIMENT} {source} --out {path}` "
                                f"first (variant {variant!r} trains with its lr)")
    record = json.loads(path.read_text())
    expected = json.loads(json.dumps(section.tuning_config(source)))  # tuples -> lists, as stored
    if record.get("profile") != params.profile or record.get("config") != expected:
        raise RuntimeError(f"{path}: tuned for another profile or configuration than params.yaml's "
                           f"(profile {record.get('profile')!r}); rerun the tune stage for {source!r}")
    return float(record["pick"]), record


# ---------------------------------------------------------------------------------------------- one run
def train(params, variant: str, seed: int, run_dir: Path, checkpoint_root: Path, device) -> dict:
    """Train one (variant, seed) at its tuned lr and write its run files; returns the metrics."""
    section: Optimizers = params.optimizers
    check_data_settings(params, section)
    cfg = section.resolve(variant)
    lr, record = tuned_lr(params, section, variant)
    spec = spec_for(params, EXPERIMENT, variant, seed, method=variant, dataset=section.dataset,
                    subset=cfg.train.subset,
                    config={**cfg.model_dump(mode="json"), "lr": lr, "lr_from": record["name"]})
    run = runner.start_run(spec, run_dir, checkpoint_root, device)
    data = image_data(params, section.dataset, cfg.train.subset, seed, device)  # this seed's subset + test split

    model = fit_variant(run, cfg, variant, lr, data, seed, cfg.train.epochs, device)

    run.extra.update({
        "tuned_lr": lr, "lr_from": record["name"], "lr_at_grid_edge": record["at_edge"],
        "optimizer": cfg.optimizer, "schedule": cfg.schedule, "normalization": cfg.normalization,
        "parameters": sum(p.numel() for p in model.parameters()),
    })
    return runner.finish_run(run)
