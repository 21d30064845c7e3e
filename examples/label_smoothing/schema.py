"""One variant's settings: types and ranges only (every value, with its reason, is in params.yaml)."""
from __future__ import annotations

from pydantic import Field

from pipeline.schemas.base import NonNegFloat, PositiveFloat, PositiveInt, Strict, Target


class Model(Strict):
    name: str  # an image model of pipeline.models.build_model: resnet20, resnet18, vgg11, preresnet<6n+2>
    widths: list[PositiveInt] | None  # None: the model's own widths


class Train(Strict):
    epochs: PositiveInt
    batch_size: PositiveInt
    samples_per_epoch: PositiveInt | None  # samples drawn per epoch; None: one pass over the (sub)set
    lr: PositiveFloat  # constant
    momentum: float = Field(ge=0, lt=1)
    weight_decay: NonNegFloat
    augment: bool  # random crop (pad 4) + horizontal flip
    eval_batch: PositiveInt


class Settings(Strict):
    dataset: str  # an image dataset of data.datasets (set by the grid's dataset axis)
    subset: str  # one of its subsets, or "full" (set by the subset axis)
    target: Target  # time-to-target threshold
    model: Model
    train: Train
    smoothing: float = Field(ge=0, lt=1)  # eps: targets 1 - eps on the label + eps spread evenly; 0: hard labels
