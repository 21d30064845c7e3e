"""Settings of experiment 3, incrementally growing networks (variance transfer + LR adaptation; NOTES.md section 2).

    dataset, model, full_widths, target   what the variant trains (set by the grid's dataset axis)
    conv_init, parameterization           how the weights are drawn and scale with width
    growth, lr_adaptation, width          what the variant does (set by the grid's mode axis)
    train: {epochs, batch_size, samples_per_epoch, lr, momentum, nesterov, weight_decay, lr_schedule, eta_min, ...}
    schedule: {num_growths, start_fraction | growth_ratio, stage_length_ratio}   widths and growth epochs
    method: {variance_factor, lr_scope, rescale_state, init_fan, lr_recompute, lr_include_head,
             vt_compensate_lr, net2net_noise}                                    the growth method's open choices

The section's grid is every mode x every dataset, named `<mode>-<dataset>` (e.g. grow_vt_lr-cifar10). A run's
identity holds only the keys that change its result (a fixed full-width run does not depend on the growth
schedule): see `identity` in __init__.py. Types and ranges only: every value is in params.yaml with its reason.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from ...models import CONV_INITS, width_groups
from ...schemas.base import (BatchSize, Epochs, Fraction, NonNegFloat, PositiveFloat, PositiveInt, Samples, Strict,
                             Target, Width)

GROWABLE = ("resnet20", "resnet18", "vgg11")  # the models pipeline.models can grow
GROWTHS = ("none", "random", "variance_transfer", "net2net")  # none: a fixed-width network
PARAMETERIZATIONS = ("kaiming", "mup")  # how the weights scale with width (parameterization.py)


class Train(Strict):
    epochs: Epochs
    batch_size: BatchSize
    samples_per_epoch: Samples | None  # samples drawn per epoch (a budget); None: the training set size
    lr: PositiveFloat  # peak lr of the cosine schedule (the global schedule every LR multiplier sits on)
    momentum: Annotated[float, Field(ge=0, lt=1)]
    nesterov: bool
    weight_decay: NonNegFloat
    lr_schedule: Literal["cosine"]  # cosine over the whole budget, stepped per iteration, across growths
    eta_min: NonNegFloat  # the cosine's final lr
    augment: bool  # random crop (pad 4) + horizontal flip
    eval_every: PositiveInt  # test accuracy every k epochs (and always after the last)
    eval_batch: BatchSize


class Schedule(Strict):
    """schedule.GrowthSchedule without the widths and epochs (they come from the dataset and train)."""

    num_growths: int = Field(gt=0, le=64)
    start_fraction: Fraction | None = None  # stage-0 width / full width; None: from growth_ratio
    growth_ratio: Annotated[float, Field(gt=1)] | None = None  # width ratio per growth; start = ratio ** -G
    stage_length_ratio: PositiveFloat  # stage k lasts ~ L0 * ratio ** k epochs; 1.0: equal stages

    @model_validator(mode="after")
    def _one_way_to_the_start(self):
        if (self.start_fraction is None) == (self.growth_ratio is None):
            raise ValueError("give one of start_fraction and growth_ratio (start * ratio ** num_growths = 1)")
        return self


class Method(Strict):
    variance_factor: Literal["linear", "sqrt"]  # old weights x (C_old / C_new) ** 1 or ** 1/2 (see method.py)
    lr_scope: Literal["global", "layer"]  # LR-adaptation norms over the whole net or per weight tensor
    rescale_state: bool  # momentum buffers follow their weights' rescaling at a growth
    init_fan: Literal["in", "out"]  # Kaiming fan of new conv units' std sqrt(2 / fan): fan-in or the model's fan-out
    lr_recompute: Literal["epoch", "growth"]  # LR multipliers recomputed at every epoch start, or only at growths
    lr_include_head: bool  # the classifier head's grown columns join their stage's LR group (False: multiplier 1)
    vt_compensate_lr: bool  # x s^2 on the LR of weights variance transfer rescaled by s before a BN
    net2net_noise: NonNegFloat  # relative noise on Net2Net's split of outgoing weights (0: equal shares)


class Settings(Strict):
    """One variant's complete configuration (the section's grid: mode x dataset)."""

    dataset: str  # an image-kind key of data.datasets (set by the grid's dataset axis)
    model: Literal[GROWABLE]
    full_widths: list[Width]  # the target (full) widths, one per width group of the model
    conv_init: Literal[CONV_INITS]  # the initial network's convolutions (pipeline.models.init)
    parameterization: Literal[PARAMETERIZATIONS]  # init law + variance factor + per-layer lr (parameterization.py)
    target: Target
    growth: Literal[GROWTHS]  # how the network grows (none: fixed width)
    lr_adaptation: bool  # per-stage LR multipliers (only with a growth)
    width: Literal["full", "start"]  # a fixed network's widths: full, or the schedule's stage 0
    train: Train
    schedule: Schedule
    method: Method

    @model_validator(mode="after")
    def _consistent(self) -> "Settings":
        if len(self.full_widths) != width_groups(self.model):
            raise ValueError(f"full_widths: {self.model} has {width_groups(self.model)} width groups, "
                             f"got {len(self.full_widths)} widths")
        if self.growth == "none" and self.lr_adaptation:
            raise ValueError("lr_adaptation needs a growing network (growth is none)")
        if self.growth != "none" and self.width != "full":
            raise ValueError("width applies to fixed networks only; a growing one starts at stage 0 and ends full")
        m = self.method
        pairing = (self.conv_init, m.variance_factor, m.init_fan)
        if self.parameterization == "mup" and pairing != ("he_fan_in", "linear", "in"):
            raise ValueError(f"parameterization mup goes with conv_init he_fan_in, method.variance_factor linear and "
                             f"method.init_fan in (got {self.conv_init}, {m.variance_factor}, {m.init_fan})")
        if self.train.epochs < self.schedule.num_growths + 1:
            raise ValueError(f"train.epochs {self.train.epochs} cannot hold schedule.num_growths "
                             f"{self.schedule.num_growths} + 1 stages of at least one epoch")
        return self
