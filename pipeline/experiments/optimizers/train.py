"""Experiment 4: the rapid-training survey's techniques compared like for like on CIFAR-10.

    params.yaml optimizers (variant, seed) + --data <prepared> [--subsets <subsets>] + --tuning <tuning file>
        --> ResNet-20 (normalisation applied), optimizer at the tuned lr, per-step lr schedule
        --> pipeline.train.image.fit --> results/runs/optimizers/<variant>/seed<k>/{metrics.json, history.csv, ...}

The survey (rapid-training-survey.txt, Figure 1) ranks optimizers by convergence speed and test accuracy without
saying how each was set up. Here every variant trains the same model on the same data with the same augmentation
and the same budget; only the technique differs, and each technique runs at its own learning rate, picked on a
validation split as a user of that technique would (tune.py, the tuning stage). Three families of variants (params.yaml):
    optimizers      sgd .. kfac, all with batch norm and the common schedule
    normalisation   norm-batch / norm-weight / norm-both / norm-none, SGD + momentum
    lr schedules    lr-constant / lr-step / lr-cosine / lr-clr / lr-onecycle, SGD + momentum
metrics.json: method = the variant's name (the technique), time-to-target from the per-epoch test accuracy, and
`extra` = tuned lr, where it came from, optimizer, schedule, normalisation mode, whether the lr sat at a grid edge.
"""
from __future__ import annotations

import json
import math

import torch

from ...errors import ConfigError, PipelineError
from ...methods.lr_schedules import build_scheduler
from ...methods.normalization import apply_normalization, data_dependent_init
from ...methods.optimizers import build_optimizer
from ...models import build_model
from ...models.flops import conv_linear_flops
from ...seeding import generator
from ...train import image, runner
from ...train.image import ImageData
from ...train.jobs import Job
from .schema import Settings

METRIC, MODE = "test_acc", "max"  # judged on final test accuracy (a fraction)


# ---------------------------------------------------------------------------------------------- building blocks
def build_network(cfg: Settings, num_classes: int, seed: int, device) -> torch.nn.Module:
    """The model with the variant's normalisation (and dropout before its head); the init depends on the seed only
    (the same for every variant). Dropout draws from the global RNG, seeded per run and checkpointed."""
    model = build_model(cfg.model.name, num_classes, cfg.model.widths, generator=generator(seed, "init"),
                        conv_init=cfg.model.conv_init)
    if cfg.model.dropout > 0:
        model.head = torch.nn.Sequential(torch.nn.Dropout(cfg.model.dropout), model.head)
    return apply_normalization(model, cfg.normalization).to(device)


def init_weight_norm(model: torch.nn.Module, cfg: Settings, data: ImageData, seed: int) -> None:
    """Salimans & Kingma 2016 §3: g, b from one batch of training images (unaugmented) so every weight-normalised
    pre-activation starts at mean 0, std 1. Only the run's own training rows are used."""
    if cfg.normalization not in ("weight", "both") or cfg.train.weight_norm_init == "none":
        return
    rows = torch.randperm(len(data.y), generator=generator(seed, "weight_norm_init"))[:cfg.train.batch_size]
    data_dependent_init(model, data.normalize(data.x[rows.to(data.x.device)]))


def build_optimization(cfg: Settings, variant: str, model: torch.nn.Module, lr: float, steps_per_epoch: int,
                       epochs: int, seed: int):
    """(optimizer, scheduler) of the variant at `lr`; the schedule spans steps_per_epoch x epochs steps. Every
    setting besides the lr comes from params.yaml's optimizer_options / schedule_options (cfg.options())."""
    options = cfg.options()
    if cfg.optimizer == "kfac":
        options["model"] = model  # K-FAC hooks the model's Linear/Conv2d layers
        options["seed"] = seed  # the stream of sampled-Fisher labels (fisher: sampled), per run seed
    try:
        optimizer = build_optimizer(cfg.optimizer, model.parameters(), lr, **options)
        scheduler = build_scheduler(cfg.schedule, optimizer, steps_per_epoch, epochs, **cfg.schedule_settings())
    except ValueError as err:
        raise ConfigError(f"optimizers.variants.{variant}: {err}") from None
    return optimizer, scheduler


def fit_variant(run, cfg: Settings, variant: str, lr: float, data: ImageData, seed: int, epochs: int,
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


# ---------------------------------------------------------------------------------------------- the tuned lr
def tuning_config(params, variant: str) -> dict:
    """What a tuning job's result depends on (besides the data): written into, and checked against, its file."""
    settings = params.settings("optimizers", variant)
    return {"variant": params.identity("optimizers", variant), "tuning": settings.tuning.model_dump(),
            "grid": settings.lr_grid()}


def tuned_lr(job: Job) -> tuple[float, dict]:
    """(lr, tuning record) the variant trains with, read from its --tuning file (its own tuning job's, or that of
    the variant `lr_from` names); one-line errors when the file is missing or was written for another profile or
    configuration."""
    source = job.params.tuning_of(job.experiment, job.variant)
    path = job.tuning_file(source)
    record = json.loads(path.read_text())
    expected = json.loads(json.dumps(tuning_config(job.params, source)))  # tuples -> lists, as stored
    if record.get("profile") != job.params.profile or record.get("config") != expected:
        raise PipelineError(f"{path}: tuned for another profile or configuration than params.yaml's "
                            f"(profile {record.get('profile')!r}); rerun the tune stage for {source!r}")
    return float(record["pick"]), record


# ---------------------------------------------------------------------------------------------- one run
def train(job: Job) -> dict:
    """Train one (variant, seed) at its tuned lr and write its run files; returns the metrics."""
    cfg = job.settings
    lr, record = tuned_lr(job)
    spec = job.spec(METRIC, MODE, config={**job.params.identity(job.experiment, job.variant), "lr": lr,
                                          "lr_from": record["name"]})
    run = job.start(spec)
    data = job.image_data(cfg.dataset, cfg.train.subset)  # this seed's subset + test split

    model = fit_variant(run, cfg, job.variant, lr, data, job.seed, cfg.train.epochs, job.device)

    run.extra.update({
        "tuned_lr": lr, "lr_from": record["name"], "lr_at_grid_edge": record["at_edge"],
        "optimizer": cfg.optimizer, "schedule": cfg.schedule, "normalization": cfg.normalization,
        "parameters": sum(p.numel() for p in model.parameters()),
    })
    return runner.finish_run(run)

