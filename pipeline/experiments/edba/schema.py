"""Settings of experiment 2, Efficient Dynamic Batch Adaptation on CIFAR subsets (one variant's configuration).

    dataset, subset, policy          what the variant trains on and with which batch policy (set by the grid)
    target                           time-to-target threshold (test_acc)
    model: {depth, widths}           the PreResNet every variant trains
    train: {epochs, samples_per_epoch, batch_size, lr, momentum, nesterov, weight_decay, augment, oversize_batch, ...}
    edba: {min_batch, max_batch, num_candidates, ...}   EDBA's settings (method.py)

The section's grid is every method x every (dataset, subset), named `<method>-<dataset>-<subset>` (e.g.
edba-cifar10-n100). The baseline trains with train.batch_size throughout; EDBA starts from it (the paper's initial
batch of 100) and adapts it within [edba.min_batch, edba.max_batch]. Types and ranges only: every value is in
params.yaml with its reason.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from ...models import CONV_INITS
from ...schemas.base import (BatchSize, Count, Epochs, Fraction, NonNegFloat, PositiveFloat, PositiveInt, Samples, Strict,
                             Target, Width)


class Model(Strict):
    depth: int = Field(ge=8, le=1202)  # PreResNet depth 6n + 2 (paper: 56; He et al. 2016 go up to 1202)
    widths: list[Width] = Field(min_length=3, max_length=3)  # channels of the 3 stages (paper: 16, 32, 64)
    conv_init: Literal[CONV_INITS]  # the convolutions' initialisation (pipeline.models.init)

    @model_validator(mode="after")
    def _depth_is_6n_plus_2(self):
        if self.depth < 8 or (self.depth - 2) % 6:
            raise ValueError(f"depth: PreResNet depth must be 6n+2 (8, 14, 20, ..., 56), got {self.depth}")
        return self


class Train(Strict):
    epochs: Epochs
    # samples drawn per epoch: "train_set" = the size of the dataset's whole training set whatever the subset (so
    # every subset gets the same number of drawn samples, i.e. of baseline steps, per epoch); "subset" = one pass
    # over the subset; a number = that many samples
    samples_per_epoch: Samples | Literal["train_set", "subset"]
    batch_size: BatchSize  # the baseline's fixed batch and EDBA's initial batch
    lr: PositiveFloat  # constant: the paper names no schedule
    momentum: Annotated[float, Field(ge=0, lt=1)]
    nesterov: bool
    weight_decay: NonNegFloat
    augment: bool  # random crop (pad 4) + horizontal flip
    eval_every: PositiveInt  # test accuracy every k epochs (and always after the last)
    eval_batch: BatchSize
    # a batch larger than the (sub)set (EDBA may grow to 1000 on a 100-image subset): "wrap" = read on into the
    # next fresh permutation(s) of the subset (pipeline.train.image.IndexStream), the only mode
    oversize_batch: Literal["wrap"]


class EDBAConfig(Strict):
    """EDBA's settings (pipeline/experiments/edba/method.py says what each one does; params.yaml gives every value
    and its reason). The initial batch is train.batch_size, the baseline's batch."""

    min_batch: BatchSize
    max_batch: BatchSize
    num_candidates: Count
    subset_sizes: Literal["uniform_size", "bernoulli"]
    min_subset_frac: Fraction
    include_full_batch: bool
    ema_decay: Annotated[float, Field(ge=0, lt=1)]
    denominator_guard: Literal["clamp", "exclude"]
    guard_eps: PositiveFloat
    grad_metric: Literal["norm_of_mean", "mean_of_norms"]
    model_metric: Literal["batch", "subset"]
    batch_rule: Literal["margin", "kept_fraction"]
    window: Count
    margin_tolerance: NonNegFloat
    kept_low: Fraction
    kept_high: Fraction
    factor: Annotated[float, Field(gt=1)]
    forward: Literal["two_pass", "shared"]

    @model_validator(mode="after")
    def _ordered(self):
        if self.min_batch > self.max_batch:
            raise ValueError(f"min_batch {self.min_batch} is above max_batch {self.max_batch}")
        if self.kept_low > self.kept_high:
            raise ValueError(f"kept_low {self.kept_low} is above kept_high {self.kept_high}")
        return self


POLICIES = ("fixed", "edba")  # fixed: pipeline.train.image.FixedBatch (the baseline); edba: method.EDBASampler


class Settings(Strict):
    """One variant's complete configuration (the section's grid: method x dataset x subset)."""

    dataset: str  # an image-kind key of data.datasets (set by the grid's dataset axis)
    subset: str  # a subset of data.datasets.<dataset>.subsets, or "full" (set by the subset axis)
    policy: Literal[POLICIES]  # the batch policy of the variant's method
    target: Target
    model: Model
    train: Train
    edba: EDBAConfig  # EDBA's settings; a baseline's identity leaves them out (they do not change it)

    @model_validator(mode="after")
    def _initial_batch_within_bounds(self) -> "Settings":
        if not self.edba.min_batch <= self.train.batch_size <= self.edba.max_batch:
            raise ValueError(f"train.batch_size {self.train.batch_size} (EDBA's initial batch) is outside "
                             f"edba.min_batch..max_batch [{self.edba.min_batch}, {self.edba.max_batch}]")
        return self
