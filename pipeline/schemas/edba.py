"""The `edba:` section of params.yaml: experiment 2, Efficient Dynamic Batch Adaptation on CIFAR subsets
(edba-efficient-dynamic-batch-adaptation.txt; NOTES.md section 3).

    edba:
      target                                 time-to-target threshold (test_acc); a dataset may override it
      datasets: {cifar10: {subsets: [full, p10, ...], target?}, ...}   which subsets of which dataset are trained
      model: {depth, widths}                 the PreResNet every variant trains
      train: {epochs, samples_per_epoch, batch_size, lr, momentum, nesterov, weight_decay, augment, oversize_batch,
              ...}
      method: {min_batch, max_batch, num_candidates, ...}   EDBA's settings (pipeline.methods.edba.EDBAConfig)
      methods: {baseline: {policy: fixed}, edba: {policy: edba}}       what a variant's method does

The grid is every method x every (dataset, subset), named `<method>-<dataset>-<subset>` (e.g. edba-cifar10-n100).
The baseline trains with train.batch_size throughout; EDBA starts from it (the paper's initial batch of 100) and
adapts it within [method.min_batch, method.max_batch]. `resolve(variant)` returns the variant's complete
configuration, holding only the keys that change its result (a baseline does not depend on EDBA's settings), so
the run's config hash covers exactly what it trains. Torch-free: `Method` mirrors EDBAConfig's fields (a test
keeps the two equal); EDBAConfig checks the ranges again when a run starts.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from .base import ExperimentSection, Fraction, NonNegFloat, PositiveFloat, PositiveInt, Strict, Target


class DatasetSetup(Strict):
    subsets: list[str] = Field(min_length=1)  # names of data.datasets.<dataset>.subsets ("full": the whole set)
    target: Target | None = None  # None: the section's target


class Model(Strict):
    depth: PositiveInt  # PreResNet depth 6n + 2 (paper: 56)
    widths: list[PositiveInt] = Field(min_length=3, max_length=3)  # channels of the 3 stages (paper: 16, 32, 64)

    @model_validator(mode="after")
    def _depth_is_6n_plus_2(self):
        if self.depth < 8 or (self.depth - 2) % 6:
            raise ValueError(f"depth: PreResNet depth must be 6n+2 (8, 14, 20, ..., 56), got {self.depth}")
        return self


class Train(Strict):
    epochs: PositiveInt
    # samples drawn per epoch: "train_set" = the size of the dataset's whole training set whatever the subset (so
    # every subset gets the same number of drawn samples, i.e. of baseline steps, per epoch); "subset" = one pass
    # over the subset; a number = that many samples
    samples_per_epoch: PositiveInt | Literal["train_set", "subset"]
    batch_size: PositiveInt  # the baseline's fixed batch and EDBA's initial batch
    lr: PositiveFloat  # constant: the paper names no schedule
    momentum: Annotated[float, Field(ge=0, lt=1)]
    nesterov: bool
    weight_decay: NonNegFloat
    augment: bool = True  # random crop (pad 4) + horizontal flip
    eval_every: PositiveInt = 1  # test accuracy every k epochs (and always after the last)
    eval_batch: PositiveInt = 500
    # a batch larger than the (sub)set (EDBA may grow to 1000 on a 100-image subset): "wrap" = read on into the
    # next fresh permutation(s) of the subset (pipeline.train.image.IndexStream), the only mode
    oversize_batch: Literal["wrap"]


class Method(Strict):
    """pipeline.methods.edba.EDBAConfig without initial_batch (= train.batch_size); reasons in that module."""

    min_batch: PositiveInt
    max_batch: PositiveInt
    num_candidates: PositiveInt
    subset_sizes: Literal["uniform_size", "bernoulli"]
    min_subset_frac: Fraction
    include_full_batch: bool
    ema_decay: Annotated[float, Field(ge=0, lt=1)]
    denominator_guard: Literal["clamp", "exclude"]
    guard_eps: PositiveFloat
    grad_metric: Literal["norm_of_mean", "mean_of_norms"]
    model_metric: Literal["batch", "subset"]
    batch_rule: Literal["margin", "kept_fraction"]
    window: PositiveInt
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


class MethodSetup(Strict):
    policy: Literal["fixed", "edba"]  # fixed: pipeline.train.image.FixedBatch (the baseline); edba: EDBASampler


class Resolved(Strict):
    """One variant's complete configuration: what the experiment module builds and the config hash covers."""

    method: str
    policy: Literal["fixed", "edba"]
    dataset: str
    subset: str
    target: Target
    model: Model
    train: Train
    edba: Method | None  # None: the baseline (EDBA's settings do not change it)


class Edba(ExperimentSection):
    target: Target
    datasets: dict[str, DatasetSetup] = Field(min_length=1)
    model: Model
    train: Train
    method: Method
    methods: dict[str, MethodSetup] = Field(min_length=1)

    @model_validator(mode="after")
    def _grid_is_well_formed(self) -> "Edba":
        names = [*self.methods, *self.datasets, *(s for d in self.datasets.values() for s in d.subsets)]
        for name in names:
            if "-" in name or not name:
                raise ValueError(f"{name!r}: method, dataset and subset names may not contain '-' (variants are "
                                 f"<method>-<dataset>-<subset>)")
        for dataset, setup in self.datasets.items():
            if len(set(setup.subsets)) != len(setup.subsets):
                raise ValueError(f"datasets.{dataset}.subsets: {setup.subsets} lists a subset twice")
        if not self.method.min_batch <= self.train.batch_size <= self.method.max_batch:
            raise ValueError(f"train.batch_size {self.train.batch_size} (EDBA's initial batch) is outside "
                             f"method.min_batch..max_batch [{self.method.min_batch}, {self.method.max_batch}]")
        return self

    def variant_names(self) -> list[str]:
        return [f"{m}-{d}-{s}" for m in self.methods for d, setup in self.datasets.items() for s in setup.subsets]

    def split(self, variant: str) -> tuple[str, str, str]:
        """(method, dataset, subset) of a variant name; ValueError naming the variant when it is not in the grid."""
        parts = variant.split("-")
        if len(parts) != 3 or variant not in self.variant_names():
            raise ValueError(f"edba: unknown variant {variant!r}; known: {', '.join(self.variant_names())}")
        return parts[0], parts[1], parts[2]

    def data_references(self) -> list[tuple[str, str, str | None]]:
        return [(f"edba.datasets.{d}", d, None) for d in self.datasets] + [
            (f"edba.datasets.{d}.subsets", d, s) for d, setup in self.datasets.items() for s in setup.subsets]

    def variant_datasets(self, variant: str) -> list[str]:
        return [self.split(variant)[1]]

    def resolve(self, variant: str) -> Resolved:
        method, dataset, subset = self.split(variant)
        policy = self.methods[method].policy
        return Resolved(method=method, policy=policy, dataset=dataset, subset=subset,
                        target=self.datasets[dataset].target or self.target, model=self.model, train=self.train,
                        edba=self.method if policy == "edba" else None)
