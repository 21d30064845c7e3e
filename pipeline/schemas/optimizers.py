"""The `optimizers:` section of params.yaml: experiment 4, the rapid-training survey's techniques like for like.

    optimizers:
      dataset, target                  the CIFAR dataset key; time-to-target threshold on test_acc (per profile)
      model: {name, widths}            one model for every variant (pipeline.experiments.common.build_model)
      train: {subset, epochs, batch_size, weight_decay, augment, ...}   one budget and one data pipeline for all
      defaults: {schedule, normalization}   the optimizer comparison's common setting
      tuning: {epochs, points, step_decades, validation_fraction, seed}   the learning-rate search
      lr_center: {optimizer: lr}       middle of each optimizer's log-spaced lr grid (its usual default)
      optimizer_options: {adabound, amsbound: {final_lr, gamma}, kfac: {momentum, damping, ...}}
      schedule_options: {step, cosine, cyclical, one_cycle: {...}}   the schedules' settings
      variants: {name: {optimizer, schedule?, normalization?, options?, schedule_options?, lr_from?}}

`optimizer_options.<optimizer>` and `schedule_options.<schedule>` are the settings every variant of that optimizer /
schedule trains with (typed here, so a misspelt or out-of-range setting fails at load); a variant's own `options`
/ `schedule_options` override them key by key.

Every variant gets its own learning rate, picked on a validation split held out from its training set: a tuning
job per variant (`tuning_names()`), except variants with `lr_from: <variant>`, which reuse that variant's pick
(meant for a variant whose configuration is the other's). `resolve(name)` gives a variant's complete
configuration (without the lr); every variant is resolved at load, so a bad value fails before any job starts.
Torch-free: the optimizer, schedule and normalization names are listed here and checked against
pipeline/methods in tests/test_optimizers_experiment.py; optimizer and schedule *options* are checked by the
builders when a run starts (they need torch), before any training step.
"""
from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from .base import ExperimentSection, NonNegFloat, NonNegInt, PositiveFloat, PositiveInt, Strict, Target

# the names pipeline.methods.optimizers / lr_schedules / normalization build (a test keeps the lists equal)
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "adadelta", "rmsprop", "adam", "adamw", "adamax", "nadam",
              "amsgrad", "adabound", "amsbound", "kfac")
OptimizerName = Literal["sgd", "momentum", "nesterov", "adagrad", "adadelta", "rmsprop", "adam", "adamw", "adamax",
                        "nadam", "amsgrad", "adabound", "amsbound", "kfac"]
ScheduleName = Literal["constant", "step", "cosine", "cyclical", "one_cycle"]
NormalizationName = Literal["batch", "weight", "both", "none"]
MODEL_NAME = re.compile(r"^(resnet20|resnet18|vgg11|preresnet\d+)$")


class Model(Strict):
    name: str  # resnet20 | resnet18 | vgg11 | preresnet<6n+2>
    widths: list[PositiveInt] | None = None  # None: the model's own widths (ResNet-20: 16, 32, 64)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if not MODEL_NAME.match(v):
            raise ValueError(f"unknown model {v!r}; known: resnet20, resnet18, vgg11, preresnet<6n+2>")
        return v


class Train(Strict):
    subset: str = "full"  # a subset of data.datasets.<dataset>.subsets (per seed); "full": the whole training set
    epochs: PositiveInt
    batch_size: PositiveInt
    weight_decay: float = Field(default=0.0, ge=0)  # L2 added to the gradient, every optimizer (AdamW: see variant)
    augment: bool = True  # crop (pad 4) + flip, He et al. 2016 §4.2
    clip_grad_norm: PositiveFloat | None = None
    weight_norm_init: Literal["data_dependent", "none"] = "data_dependent"  # Salimans & Kingma 2016 §3
    eval_batch: PositiveInt = 500


class Defaults(Strict):
    schedule: ScheduleName
    normalization: NormalizationName


class Tuning(Strict):
    """lr grid = lr_center[optimizer] * 10 ** (step_decades * (i - (points - 1) / 2)), i = 0 .. points - 1."""

    epochs: PositiveInt  # the tuning budget: each grid point trains this many epochs (schedule over this budget)
    points: PositiveInt
    step_decades: PositiveFloat  # spacing of the grid in decades (0.5: 1, 3.16, 10, ...)
    validation_fraction: Annotated[float, Field(gt=0, lt=1)]  # of each class of the training set, held out
    seed: NonNegInt = 0  # the tuning runs' seed (and the subset of that seed)


Unit = Annotated[float, Field(ge=0, lt=1)]  # a decay or momentum in [0, 1)
OpenFraction = Annotated[float, Field(gt=0, lt=1)]


class BoundOptions(Strict):
    """AdaBound / AMSBound (Luo et al. 2019): the step is clipped to [final_lr (1 - 1/(gamma t + 1)),
    final_lr (1 + 1/(gamma t))], which narrows to SGD at final_lr."""

    final_lr: PositiveFloat
    gamma: PositiveFloat


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
    adabound: BoundOptions
    amsbound: BoundOptions
    kfac: KfacOptions


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
    step: StepOptions
    cosine: CosineOptions
    cyclical: CyclicalOptions
    one_cycle: OneCycleOptions


class Variant(Strict):
    optimizer: OptimizerName
    schedule: ScheduleName | None = None  # None: defaults.schedule
    normalization: NormalizationName | None = None  # None: defaults.normalization
    options: dict = Field(default_factory=dict)  # over optimizer_options.<optimizer> (e.g. weight_decay)
    schedule_options: dict = Field(default_factory=dict)  # over schedule_options.<schedule> (build_scheduler's options)
    lr_from: str | None = None  # reuse the lr tuned for this variant instead of tuning its own


class Resolved(Strict):
    """A variant's complete configuration except its learning rate (which the tuning stage picks)."""

    model: Model
    train: Train
    optimizer: OptimizerName
    options: dict  # train.weight_decay, then optimizer_options.<optimizer>, then the variant's options
    schedule: ScheduleName
    schedule_options: dict  # schedule_options.<schedule>, then the variant's
    normalization: NormalizationName


class Optimizers(ExperimentSection):
    dataset: str
    target: Target
    model: Model
    train: Train
    defaults: Defaults
    tuning: Tuning
    lr_center: dict[OptimizerName, PositiveFloat]
    optimizer_options: OptimizerOptions
    schedule_options: ScheduleOptions
    variants: dict[str, Variant] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> "Optimizers":
        for name, v in self.variants.items():
            if v.lr_from is not None:
                source = self.variants.get(v.lr_from)
                if source is None:
                    raise ValueError(f"variants.{name}.lr_from: {v.lr_from!r} is not a variant")
                if source.lr_from is not None:
                    raise ValueError(f"variants.{name}.lr_from: {v.lr_from!r} takes its lr from "
                                     f"{source.lr_from!r} itself; name the tuned variant")
            elif v.optimizer not in self.lr_center:
                raise ValueError(f"lr_center: no entry for optimizer {v.optimizer!r} (tuned by variant {name!r})")
            self.resolve(name)
        return self

    # ---- the grid ------------------------------------------------------------------------------------------
    def variant_names(self) -> list[str]:
        return list(self.variants)

    def variant_datasets(self, variant: str) -> list[str]:
        return [self.dataset]

    def data_references(self) -> list[tuple[str, str, str | None]]:
        return [("optimizers.dataset", self.dataset, None), ("optimizers.train.subset", self.dataset, self.train.subset)]

    def tuning_names(self) -> list[str]:
        """One tuning job per variant that tunes its own lr (no `lr_from`)."""
        return [name for name, v in self.variants.items() if v.lr_from is None]

    def variant_tuning(self, variant: str) -> list[str]:
        return [self.variants[variant].lr_from or variant]

    def tuning_datasets(self, name: str) -> list[str]:
        return [self.dataset]

    # ---- resolved configurations -----------------------------------------------------------------------------
    def resolve(self, name: str) -> Resolved:
        """The complete configuration of variant `name` (lr excluded); ValueError naming the key when invalid."""
        if name not in self.variants:
            raise ValueError(f"optimizers: unknown variant {name!r}; known: {', '.join(self.variants)}")
        v = self.variants[name]
        schedule = v.schedule or self.defaults.schedule
        method_options = self.optimizer_options.model_dump().get(v.optimizer, {})  # {}: the method's defaults
        schedule_options = self.schedule_options.model_dump().get(schedule, {})  # {}: "constant" has none
        raw = {"model": self.model.model_dump(), "train": self.train.model_dump(), "optimizer": v.optimizer,
               "options": {"weight_decay": self.train.weight_decay, **method_options, **v.options},
               "schedule": schedule, "schedule_options": {**schedule_options, **v.schedule_options},
               "normalization": v.normalization or self.defaults.normalization}
        try:
            return Resolved.model_validate(raw)
        except ValidationError as err:
            first = err.errors()[0]
            path = ".".join(str(p) for p in first["loc"])
            raise ValueError(f"variants.{name}: {path}: {first['msg']}") from None

    def lr_grid(self, name: str) -> list[float]:
        """The log-spaced lr grid of tuning job `name`, ascending, centred on its optimizer's lr_center."""
        center, t = self.lr_center[self.variants[name].optimizer], self.tuning
        # 6 significant digits: the lr a run trains with is exactly the number its JSON file shows
        return [float(f"{center * 10 ** (t.step_decades * (i - (t.points - 1) / 2)):.6g}") for i in range(t.points)]

    def tuning_config(self, name: str) -> dict:
        """What a tuning job's result depends on (besides the data): written into, and checked against, its file."""
        return {"variant": self.resolve(name).model_dump(mode="json"), "tuning": self.tuning.model_dump(),
                "grid": self.lr_grid(name)}
