"""The `block_size:` section of params.yaml (placeholder shape until the experiment fills it in)."""
from __future__ import annotations

from pydantic import Field

from .base import ExperimentSection, Target


class BlockSize(ExperimentSection):
    dataset: str
    target: Target
    variants: dict[str, dict] = Field(min_length=1)

    def variant_names(self) -> list[str]:
        return list(self.variants)

    def variant_datasets(self, variant: str) -> list[str]:
        return [self.dataset]
