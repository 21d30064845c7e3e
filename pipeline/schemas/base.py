"""Shared building blocks for the params.yaml schema (pydantic, torch-free).

Every model forbids unknown keys, so a typo in params.yaml is an error, never a silently ignored setting.
"""
from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

PositiveInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(gt=0, le=1)]
IMAGE_KINDS = ("cifar10", "cifar100", "imagefolder")  # data.datasets kinds with images (and training subsets)


class Strict(BaseModel):
    """Base of every params.yaml section: unknown keys are rejected, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class Target(Strict):
    """A time-to-target threshold: the first epoch at which `metric` reaches `value` (per profile)."""

    metric: str  # name of a history column, e.g. "valid_ppl" or "test_acc"
    value: float
    mode: Literal["min", "max"]  # "min": reached when metric <= value; "max": when metric >= value


class ExperimentSection(Strict):
    """What every experiment section shares; each experiment's schema subclasses it.

    The grid (variant names) is a pure function of the section, identical in every profile.
    """

    def variant_names(self) -> list[str]:
        """Every variant of the grid, in a stable order."""
        raise NotImplementedError

    def variant_datasets(self, variant: str) -> list[str]:
        """Datasets (keys of data.datasets) whose prepared arrays and subsets the variant reads."""
        raise NotImplementedError

    def tuning_names(self) -> list[str]:
        """Names of tuning jobs this experiment needs before its variants (default: none)."""
        return []

    def variant_tuning(self, variant: str) -> list[str]:
        """Tuning jobs (from tuning_names) whose result the variant reads."""
        return []

    def tuning_datasets(self, name: str) -> list[str]:
        """Datasets a tuning job reads."""
        return []

    # the kinds of data.datasets entries the experiment can train on (image experiments; block_size: text)
    DATA_KINDS: ClassVar[tuple[str, ...]] = IMAGE_KINDS

    def data_references(self) -> list[tuple[str, str, str | None]]:
        """(key path, dataset, subset or None) for every dataset and subset name the section refers to; the
        params loader checks each against data.datasets before any job starts."""
        raise NotImplementedError
