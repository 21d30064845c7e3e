"""Shared building blocks for the params.yaml schema (pydantic, torch-free).

Every model forbids unknown keys, so a typo in params.yaml is an error, never a silently ignored setting.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

PositiveInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(gt=0, le=1)]
IMAGE_KINDS = ("cifar10", "cifar100", "imagefolder")  # data.datasets kinds with images (and training subsets)
DATASET_KINDS = ("ptb", *IMAGE_KINDS)  # every kind of data.datasets entry
OVERSIZE_BATCH = ("wrap",)  # how the image loop draws a batch larger than the subset (pipeline.train.image)


class Strict(BaseModel):
    """Base of every params.yaml section: unknown keys are rejected, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class Target(Strict):
    """A time-to-target threshold: the first epoch at which `metric` reaches `value` (per profile)."""

    metric: str  # name of a history column, e.g. "valid_ppl" or "test_acc"
    value: float
    mode: Literal["min", "max"]  # "min": reached when metric <= value; "max": when metric >= value
