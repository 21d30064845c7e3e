"""The `analysis:` section: statistics settings shared by every comparison (values and reasons: params.yaml)."""
from __future__ import annotations

from pydantic import Field

from .base import PositiveInt, Strict


class Analysis(Strict):
    confidence: float = Field(gt=0, lt=1)  # level of every interval
    bootstrap_resamples: PositiveInt  # resamples of the percentile bootstrap
    bootstrap_seed: int  # the bootstrap is seeded so the report is reproducible
    alpha: float = Field(gt=0, lt=1)  # family-wise error rate of the Holm correction
    min_runs: int = Field(ge=2)  # fewer usable runs than this: a claim's verdict is "inconclusive"
    power: float = Field(gt=0, lt=1)  # of the "smallest detectable effect" the report prints
