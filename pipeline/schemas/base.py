"""Shared building blocks for the params.yaml schema (pydantic, torch-free).

Every model forbids unknown keys, so a typo in params.yaml is an error, never a silently ignored setting.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

INT_MAX = 2**31 - 1  # no count in params.yaml is larger (torch indexes and sizes in int32 on some paths)
PositiveInt = Annotated[int, Field(gt=0, le=INT_MAX)]
Pair = Annotated[list[float], Field(min_length=2, max_length=2)]  # two numbers (YAML gives a list)
# Upper bounds that guard against a slip (a stray factor of 1000 would hang or exhaust a machine, not fail): each
# far above what any experiment here uses
Epochs = Annotated[int, Field(gt=0, le=10_000)]  # the papers train 13-300 epochs
BatchSize = Annotated[int, Field(gt=0, le=65_536)]  # samples, streams or tokens per forward
Width = Annotated[int, Field(gt=0, le=8_192)]  # channels, units or embedding size of a layer
Samples = Annotated[int, Field(gt=0, le=100_000_000)]  # samples or tokens drawn per epoch, tokens of a dataset
Count = Annotated[int, Field(gt=0, le=10_000)]  # small counts: grid points, candidates, steps between decisions
NonNegInt = Annotated[int, Field(ge=0, le=INT_MAX)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(gt=0, le=1)]
IMAGE_KINDS = ("cifar10", "cifar100", "imagefolder")  # data.datasets kinds with images (and training subsets)
DATASET_KINDS = ("ptb", *IMAGE_KINDS)  # every kind of data.datasets entry
OVERSIZE_BATCH = ("wrap",)  # how the image loop draws a batch larger than the subset (pipeline.train.image)


class Strict(BaseModel):
    """Base of every params.yaml section: unknown keys are rejected, values are validated on assignment, and types
    are strict: no inf or nan, no boolean for a number (or a number for a boolean), no float for an integer, no
    string for either (YAML gives each its own type, so a mismatch is a mistake, not a conversion to make)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False, strict=True,
                              allow_inf_nan=False)


class Target(Strict):
    """A time-to-target threshold: the first epoch at which `metric` reaches `value` (per profile)."""

    metric: str  # name of a history column, e.g. "valid_ppl" or "test_acc"
    value: float
    mode: Literal["min", "max"]  # "min": reached when metric <= value; "max": when metric >= value
