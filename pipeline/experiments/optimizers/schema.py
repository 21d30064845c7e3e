"""Settings of experiment 4, the rapid-training survey's techniques like for like (one variant's configuration).

    dataset, target                  the CIFAR dataset key; time-to-target threshold on test_acc (per profile)
    model: {name, widths}            one model for every variant (pipeline.models.build_model)
    train: {subset, epochs, batch_size, weight_decay, augment, ...}   one budget and one data pipeline for all
    optimizer, schedule, normalization   the variant's technique
    lr_from                          null: the variant's lr is tuned for it; a variant's name: that variant's lr
    tuning: {epochs, points, step_decades, validation_fraction, seed}   the learning-rate search
    lr_center: {optimizer: lr}       middle of each optimizer's log-spaced lr grid (its usual default)
    optimizer_options: {sgd: {}, momentum: {momentum}, ..., kfac: {...}}   every optimizer's settings but lr and L2
    schedule_options: {step, cosine, cyclical, one_cycle: {...}}           every schedule's settings

A variant overrides any of them (adamw's decoupled decay lives in optimizer_options.adamw). Every variant gets its
own learning rate, picked on a validation split held out from its training set by a tuning job named after it,
unless `lr_from` names the variant whose pick it reuses (meant for a variant whose configuration is the other's).
Types and ranges only: every value is in params.yaml with its reason; the names come from pipeline/methods.
"""
from __future__ import annotations

import math
import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from ...methods import LR_SCHEDULES, NORMALIZATIONS, OPTIMIZERS
from ...models import CONV_INITS, width_groups
from ...schemas.base import (BatchSize, Epochs, NonNegFloat, NonNegInt, PositiveFloat, PositiveInt, Strict, Target,
                             Width)

MODEL_NAME = re.compile(r"^(resnet20|resnet18|vgg11|preresnet\d+)$")
Unit = Annotated[float, Field(ge=0, lt=1)]  # a decay or momentum in [0, 1)
OpenFraction = Annotated[float, Field(gt=0, lt=1)]
Betas = Annotated[list[Unit], Field(min_length=2, max_length=2)]  # (beta1, beta2)


class Model(Strict):
    name: str  # resnet20 | resnet18 | vgg11 | preresnet<6n+2>
    widths: list[Width] | None  # None: the model's own widths (ResNet-20: 16, 32, 64)
    conv_init: Literal[CONV_INITS]  # the convolutions' initialisation (pipeline.models.init)
    dropout: float = Field(ge=0, lt=1)  # dropout on the features before the classifier head (0: none)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if not MODEL_NAME.match(v):
            raise ValueError(f"unknown model {v!r}; known: resnet20, resnet18, vgg11, preresnet<6n+2>")
        if v.startswith("preresnet") and not (8 <= int(v[9:]) <= 1202 and (int(v[9:]) - 2) % 6 == 0):
            raise ValueError(f"{v}: a PreResNet's depth is 6n+2 from 8 to 1202")
        return v

    @model_validator(mode="after")
    def _widths_fit_the_model(self) -> "Model":
        if self.widths is not None and len(self.widths) != width_groups(self.name):
            raise ValueError(f"widths: {self.name} has {width_groups(self.name)} width groups, got "
                             f"{len(self.widths)} widths")
        return self


class Train(Strict):
    subset: str  # a subset of data.datasets.<dataset>.subsets (per seed); "full": the whole training set
    epochs: Epochs
    batch_size: BatchSize
    weight_decay: NonNegFloat  # L2 added to the gradient, every optimizer (AdamW's decoupled decay: its options)
    augment: bool  # crop (pad 4) + flip
    clip_grad_norm: PositiveFloat | None  # None: no clipping
    weight_norm_init: Literal["data_dependent", "none"]  # weight norm's initialisation (Salimans & Kingma 2016 §3)
    eval_batch: BatchSize


class Tuning(Strict):
    """lr grid = lr_center[optimizer] * 10 ** (step_decades * (i - (points - 1) / 2)), i = 0 .. points - 1."""

    epochs: Epochs  # the tuning budget: each grid point trains this many epochs (schedule over this budget)
    points: int = Field(gt=0, le=101)  # grid points
    step_decades: PositiveFloat  # spacing of the grid in decades (0.5: 1, 3.16, 10, ...)
    validation_fraction: OpenFraction  # of each class of the training set, held out
    seed: NonNegInt  # the tuning runs' seed (and the subset of that seed)


# ---- every optimizer's settings besides lr and the L2 weight decay (keyword arguments of its class) ----------------
class NoOptions(Strict):
    pass


class MomentumOptions(Strict):
    momentum: Unit


class NesterovOptions(Strict):
    momentum: OpenFraction  # Nesterov's look-ahead needs a momentum (torch refuses 0)


class AdagradOptions(Strict):
    lr_decay: NonNegFloat
    initial_accumulator_value: NonNegFloat
    eps: PositiveFloat


class AdadeltaOptions(Strict):
    rho: Unit
    eps: PositiveFloat


class RMSpropOptions(Strict):
    alpha: Unit
    eps: PositiveFloat
    momentum: Unit
    centered: bool


class AdamOptions(Strict):
    betas: Betas
    eps: PositiveFloat


class AdamWOptions(AdamOptions):
    weight_decay: NonNegFloat  # decoupled: w shrinks by lr x weight_decay a step (replaces train.weight_decay)


class NadamOptions(AdamOptions):
    momentum_decay: NonNegFloat


class BoundOptions(AdamOptions):
    """AdaBound / AMSBound (Luo et al. 2019): the step is clipped to [final_lr (1 - 1/(gamma t + 1)),
    final_lr (1 + 1/(gamma t))], which narrows to SGD at final_lr."""

    final_lr: PositiveFloat
    gamma: PositiveFloat
    weight_decouple: bool  # False: L2 added to the gradient (the authors' code)


class KfacOptions(Strict):
    """pipeline.methods.kfac.KFAC's settings besides lr and weight decay."""

    momentum: Unit
    damping: PositiveFloat  # Tikhonov lambda, factored with the pi-correction (M&G 2015 §6)
    stat_decay: Unit  # running average of A, G: decay min(1 - 1/k, stat_decay)
    inv_every: PositiveInt  # T3: steps between recomputations of the damped inverses
    stats_every: PositiveInt  # steps between statistics updates
    kl_clip: PositiveFloat | None  # None: no KL clipping
    fisher: Literal["empirical", "sampled"]  # labels of the data, or drawn from the model's predictive distribution


class OptimizerOptions(Strict):
    sgd: NoOptions
    momentum: MomentumOptions
    nesterov: NesterovOptions
    adagrad: AdagradOptions
    adadelta: AdadeltaOptions
    rmsprop: RMSpropOptions
    adam: AdamOptions
    adamw: AdamWOptions
    adamax: AdamOptions
    nadam: NadamOptions
    amsgrad: AdamOptions
    adabound: BoundOptions
    amsbound: BoundOptions
    kfac: KfacOptions


# ---- every schedule's settings; its peak / start lr is the tuned lr --------------------------------------------------
class StepOptions(Strict):
    milestones: list[OpenFraction] = Field(min_length=1)  # fractions of the budget
    gamma: PositiveFloat


class CosineOptions(Strict):
    eta_min: NonNegFloat


class CyclicalOptions(Strict):
    base_ratio: OpenFraction  # base_lr = base_ratio x max_lr (the tuned lr)
    epochs_per_cycle: PositiveFloat  # about this many epochs per whole cycle (a whole number of cycles fills the budget)
    mode: Literal["triangular", "triangular2"]


class OneCycleOptions(Strict):
    pct_start: OpenFraction
    div_factor: PositiveFloat  # initial lr = max_lr / div_factor
    final_div_factor: PositiveFloat  # final lr = initial lr / final_div_factor
    anneal_strategy: Literal["cos", "linear"]
    three_phase: bool
    cycle_momentum: bool
    base_momentum: Unit  # used only with cycle_momentum
    max_momentum: Unit

    @model_validator(mode="after")
    def _ordered(self) -> "OneCycleOptions":
        if self.base_momentum > self.max_momentum:
            raise ValueError("base_momentum must not exceed max_momentum")
        return self


class ScheduleOptions(Strict):
    constant: NoOptions
    step: StepOptions
    cosine: CosineOptions
    cyclical: CyclicalOptions
    one_cycle: OneCycleOptions


# ---- one variant ---------------------------------------------------------------------------------------------------
class Settings(Strict):
    dataset: str  # an image-kind key of data.datasets
    target: Target
    model: Model
    train: Train
    optimizer: Literal[OPTIMIZERS]
    schedule: Literal[LR_SCHEDULES]
    normalization: Literal[NORMALIZATIONS]
    lr_from: str | None  # None: tune this variant's own lr; a variant's name: reuse that variant's tuned lr
    tuning: Tuning
    lr_center: dict[Literal[OPTIMIZERS], PositiveFloat]
    optimizer_options: OptimizerOptions
    schedule_options: ScheduleOptions

    @model_validator(mode="after")
    def _tunable(self) -> "Settings":
        if self.lr_from is None and self.optimizer not in self.lr_center:
            raise ValueError(f"lr_center: no entry for optimizer {self.optimizer!r}, whose lr this variant tunes")
        if self.lr_from is None:
            t, center = self.tuning, self.lr_center[self.optimizer]
            span = t.step_decades * (t.points - 1) / 2  # decades either side of the centre
            if not (-12 <= math.log10(center) - span and math.log10(center) + span <= 6):
                raise ValueError(f"tuning: the lr grid of {self.optimizer} spans {center:g} x 10^+-{span:g}, "
                                 f"outside [1e-12, 1e6]")
        return self

    def options(self, mode: str = "python") -> dict:
        """The optimizer's keyword arguments besides lr: the L2 of train, then the optimizer's own settings
        (mode "json": as plain JSON data, e.g. for a run's identity)."""
        own = getattr(self.optimizer_options, self.optimizer).model_dump(mode=mode)
        return {"weight_decay": self.train.weight_decay, **own}

    def schedule_settings(self, mode: str = "python") -> dict:
        return getattr(self.schedule_options, self.schedule).model_dump(mode=mode)

    def lr_grid(self) -> list[float]:
        """The log-spaced lr grid of this variant's tuning job, ascending, centred on its optimizer's lr_center."""
        center, t = self.lr_center[self.optimizer], self.tuning
        # 6 significant digits: the lr a run trains with is exactly the number its JSON file shows
        return [float(f"{center * 10 ** (t.step_decades * (i - (t.points - 1) / 2)):.6g}") for i in range(t.points)]
