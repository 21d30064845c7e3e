"""The `analysis:` section: statistics settings shared by every comparison."""
from __future__ import annotations

from pydantic import Field

from .base import PositiveInt, Strict


class Analysis(Strict):
    confidence: float = Field(default=0.95, gt=0, lt=1)  # the papers report 95% intervals
    bootstrap_resamples: PositiveInt = 10000  # enough for stable 95% percentile bounds at n=5
    bootstrap_seed: int = 0  # the bootstrap is seeded so the report is reproducible
    alpha: float = Field(default=0.05, gt=0, lt=1)  # family-wise error rate for the Holm correction
    min_runs: int = Field(default=3, ge=2)  # fewer usable runs than this: a claim's verdict is "inconclusive"
    power: float = Field(default=0.8, gt=0, lt=1)  # for the "smallest detectable effect" the report prints
