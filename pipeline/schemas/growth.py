"""The `growth:` section of params.yaml: experiment 3, incrementally growing networks (variance transfer + LR
adaptation; NOTES.md section 2).

    growth:
      target                              time-to-target threshold (test_acc); a dataset may override it
      datasets: {cifar10: {model, full_widths, target?}, ...}   the model each dataset trains, at full width
      train: {epochs, batch_size, samples_per_epoch, lr, momentum, nesterov, weight_decay, lr_schedule, ...}
      schedule: {num_growths, start_fraction | growth_ratio, stage_length_ratio}   widths and growth epochs
      method: {variance_factor, lr_scope, rescale_state, init_fan, lr_recompute, lr_include_head,
               vt_compensate_lr, net2net_noise}                                    the growth method's open choices
      modes: {name: {growth, lr_adaptation, width}}                               what a variant does

The grid is every mode x every dataset, named `<mode>-<dataset>` (e.g. grow_vt_lr-cifar10). `resolve(variant)`
returns the variant's complete configuration, holding only the keys that change its result (a fixed full-width
run does not depend on the growth schedule), so the run's config hash covers exactly what it trains.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from .base import ExperimentSection, Fraction, NonNegFloat, PositiveFloat, PositiveInt, Strict, Target

WIDTH_GROUPS = {"resnet20": 3, "resnet18": 4, "vgg11": 8}  # entries of `widths` per growable model (pipeline.models)


class DatasetSetup(Strict):
    model: Literal["resnet20", "resnet18", "vgg11"]
    full_widths: list[PositiveInt]  # the target (full) widths, one per width group of the model
    target: Target | None = None  # None: the section's target

    @model_validator(mode="after")
    def _widths_fit_the_model(self):
        if len(self.full_widths) != WIDTH_GROUPS[self.model]:
            raise ValueError(f"full_widths: {self.model} has {WIDTH_GROUPS[self.model]} width groups, "
                             f"got {len(self.full_widths)} widths")
        return self


class Train(Strict):
    epochs: PositiveInt
    batch_size: PositiveInt
    samples_per_epoch: PositiveInt | None = None  # samples drawn per epoch (a budget); None: the training set size
    lr: PositiveFloat  # peak lr of the cosine schedule (the global schedule every LR multiplier sits on)
    momentum: Annotated[float, Field(ge=0, lt=1)]
    nesterov: bool = False
    weight_decay: NonNegFloat
    lr_schedule: Literal["cosine"] = "cosine"  # cosine to 0 over the whole budget, stepped per iteration
    augment: bool = True  # random crop (pad 4) + horizontal flip
    eval_every: PositiveInt = 1  # test accuracy every k epochs (and always after the last)
    eval_batch: PositiveInt = 500


class Schedule(Strict):
    """pipeline.methods.growth.GrowthSchedule without the widths and epochs (they come from dataset and train)."""

    num_growths: PositiveInt
    start_fraction: Fraction | None = None  # stage-0 width / full width; None: growth_ratio, or the method's 1/4
    growth_ratio: Annotated[float, Field(gt=1)] | None = None  # width ratio per growth; start = ratio ** -G
    stage_length_ratio: PositiveFloat  # stage k lasts ~ L0 * ratio ** k epochs; 1.0: equal stages

    @model_validator(mode="after")
    def _one_way_to_the_start(self):
        if self.start_fraction is not None and self.growth_ratio is not None:
            raise ValueError("give start_fraction or growth_ratio, not both (start * ratio ** num_growths = 1)")
        return self


class Method(Strict):
    variance_factor: Literal["linear", "sqrt"]  # old weights x (C_old / C_new) ** 1 or ** 1/2 (see methods.growth)
    lr_scope: Literal["global", "layer"]  # LR-adaptation norms over the whole net or per weight tensor
    rescale_state: bool  # momentum buffers follow their weights' rescaling at a growth
    init_fan: Literal["in", "out"]  # Kaiming fan of new conv units' std sqrt(2 / fan): fan-in or the model's fan-out
    lr_recompute: Literal["epoch", "growth"]  # LR multipliers recomputed at every epoch start, or only at growths
    lr_include_head: bool  # the classifier head's grown columns join their stage's LR group (False: multiplier 1)
    vt_compensate_lr: bool  # x s^2 on the LR of weights variance transfer rescaled by s before a BN
    net2net_noise: NonNegFloat  # relative noise on Net2Net's split of outgoing weights (0: equal shares)


class Mode(Strict):
    growth: Literal["none", "random", "variance_transfer", "net2net"]  # none: a fixed-width network
    lr_adaptation: bool = False  # per-stage LR multipliers (only with a growth)
    width: Literal["full", "start"] = "full"  # a fixed network's widths: full, or the schedule's stage 0

    @model_validator(mode="after")
    def _consistent(self):
        if self.growth == "none" and self.lr_adaptation:
            raise ValueError("lr_adaptation needs a growing network (growth is none)")
        if self.growth != "none" and self.width != "full":
            raise ValueError("width applies to fixed networks only; a growing one starts at stage 0 and ends full")
        return self


class Resolved(Strict):
    """One variant's complete configuration: what the experiment module builds and the config hash covers."""

    mode: str
    dataset: str
    model: Literal["resnet20", "resnet18", "vgg11"]
    full_widths: list[PositiveInt]
    target: Target
    growth: Literal["none", "random", "variance_transfer", "net2net"]
    lr_adaptation: bool
    width: Literal["full", "start"]
    train: Train
    schedule: Schedule | None  # None: fixed at full width (the schedule does not matter)
    method: Method | None  # None: no growth


class Growth(ExperimentSection):
    target: Target
    datasets: dict[str, DatasetSetup] = Field(min_length=1)
    train: Train
    schedule: Schedule
    method: Method
    modes: dict[str, Mode] = Field(min_length=1)

    @model_validator(mode="after")
    def _grid_is_well_formed(self) -> "Growth":
        for name in [*self.modes, *self.datasets]:
            if "-" in name or not name:
                raise ValueError(f"{name!r}: mode and dataset names may not contain '-' (variants are <mode>-<dataset>)")
        if self.train.epochs < self.schedule.num_growths + 1:
            raise ValueError(f"train.epochs {self.train.epochs} cannot hold schedule.num_growths "
                             f"{self.schedule.num_growths} + 1 stages of at least one epoch")
        return self

    def variant_names(self) -> list[str]:
        return [f"{mode}-{dataset}" for mode in self.modes for dataset in self.datasets]

    def split(self, variant: str) -> tuple[str, str]:
        """(mode, dataset) of a variant name; ValueError naming the variant when it is not in the grid."""
        mode, _, dataset = variant.partition("-")
        if mode not in self.modes or dataset not in self.datasets:
            raise ValueError(f"growth: unknown variant {variant!r}; known: {', '.join(self.variant_names())}")
        return mode, dataset

    def variant_datasets(self, variant: str) -> list[str]:
        return [self.split(variant)[1]]

    def data_references(self) -> list[tuple[str, str, str | None]]:
        return [(f"growth.datasets.{d}", d, None) for d in self.datasets]

    def resolve(self, variant: str) -> Resolved:
        mode_name, dataset = self.split(variant)
        mode, setup = self.modes[mode_name], self.datasets[dataset]
        grows, fixed_full = mode.growth != "none", mode.growth == "none" and mode.width == "full"
        return Resolved(mode=mode_name, dataset=dataset, model=setup.model, full_widths=setup.full_widths,
                        target=setup.target or self.target, growth=mode.growth, lr_adaptation=mode.lr_adaptation,
                        width=mode.width, train=self.train, schedule=None if fixed_full else self.schedule,
                        method=self.method if grows else None)
