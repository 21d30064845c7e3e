"""The growth schedule of method.py (Yuan, Savarese & Maire, NeurIPS 2023; NOTES.md section 2): the widths of every
stage and the epochs at which the growths happen, as pure functions of the full widths and the training budget.

    schedule = GrowthSchedule((16, 32, 64), total_epochs=160, num_growths=8, start_fraction=0.25, growth_ratio=None,
                              stage_length_ratio=1.2)
    schedule.stage_widths()   -> [(4, 8, 16), (4, 10, 20), ..., (16, 32, 64)]     widths of stages 0..G
    schedule.growth_epochs()  -> [e_1, ..., e_G]      growth k happens after e_k completed epochs
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ...models.widths import scaled_widths


def stage_widths(full_widths: tuple[int, ...], num_growths: int, start_fraction: float | None,
                 growth_ratio: float | None) -> list[tuple[int, ...]]:
    """Widths of stages 0..num_growths, geometric from `start_fraction` of full width to exactly full width.

    The sources' numbers do not add up: 1/4 * 1.2**8 = 1.07. Our choice: give one of start fraction and growth
    ratio, derive the other so that start * ratio**G = 1: start 1/4 gives ratio 4**(1/8) = 1.19 (each growth adds
    about 19% of the current width), ratio 1.2 gives start 1.2**-8 = 0.23. Rounded to pairs by scaled_widths, a
    narrow group may skip a step where 19% of it is less than a pair; the last stage is exactly full width.
    """
    full = tuple(int(w) for w in full_widths)
    if (start_fraction is None) == (growth_ratio is None):
        raise ValueError("give one of start_fraction and growth_ratio (start * ratio**num_growths must be 1)")
    if not isinstance(num_growths, int) or num_growths < 0:
        raise ValueError(f"num_growths must be a non-negative int, got {num_growths!r}")
    if num_growths == 0:
        return [full]
    start = growth_ratio ** -num_growths if growth_ratio is not None else start_fraction
    if not 0 < start <= 1:
        raise ValueError(f"start width fraction must be in (0, 1] (growth_ratio > 1), got {start!r}")
    ratio = start ** (-1.0 / num_growths)
    return [scaled_widths(full, min(1.0, start * ratio ** k)) for k in range(num_growths)] + [full]


def growth_epochs(total_epochs: int, num_growths: int, stage_length_ratio: float) -> list[int]:
    """Epoch boundaries of the growths: growth k (1..G) happens after growth_epochs[k-1] completed epochs.

    Stage k lasts about L0 * ratio**k epochs, the G + 1 stages summing to total_epochs (ratio 1: equal stages);
    boundaries are rounded to whole epochs and every stage keeps at least one epoch.
    """
    if num_growths < 0 or total_epochs < num_growths + 1 or not stage_length_ratio > 0:
        raise ValueError(f"total_epochs={total_epochs} cannot hold {num_growths + 1} growth stages of at least one "
                         f"epoch each (stage_length_ratio={stage_length_ratio} must be > 0)")
    lengths = [stage_length_ratio ** k for k in range(num_growths + 1)]
    scale, cumulative, bounds = total_epochs / sum(lengths), 0.0, []
    for length in lengths[:-1]:
        cumulative += length * scale
        bounds.append(math.floor(cumulative + 0.5))
    for k in range(num_growths):  # every stage at least one epoch: push up from the start, then down from the end
        bounds[k] = max(bounds[k], (bounds[k - 1] if k else 0) + 1)
    for k in reversed(range(num_growths)):
        bounds[k] = min(bounds[k], (bounds[k + 1] if k + 1 < num_growths else total_epochs) - 1)
    return bounds


@dataclass(frozen=True)
class GrowthSchedule:
    """A growth schedule: per-stage widths and the epochs at which growths happen (see the functions above)."""

    full_widths: tuple[int, ...]
    total_epochs: int
    num_growths: int
    start_fraction: float | None  # stage-0 width / full width (or None and growth_ratio)
    growth_ratio: float | None  # alternative to start_fraction; start = growth_ratio ** -num_growths
    stage_length_ratio: float  # stage k lasts ~ L0 * ratio ** k epochs; 1.0: equal stages

    def stage_widths(self) -> list[tuple[int, ...]]:
        return stage_widths(self.full_widths, self.num_growths, self.start_fraction, self.growth_ratio)

    def growth_epochs(self) -> list[int]:  # growth k happens after growth_epochs()[k-1] completed epochs
        return growth_epochs(self.total_epochs, self.num_growths, self.stage_length_ratio)

    def stage_epochs(self) -> list[int]:
        """Length in epochs of every stage."""
        bounds = [0, *self.growth_epochs(), self.total_epochs]
        return [b - a for a, b in zip(bounds, bounds[1:])]

    def stage_at(self, epoch: int) -> int:
        """The stage that trains 0-based epoch `epoch` (the number of growths done before it)."""
        return sum(1 for e in self.growth_epochs() if e <= epoch)
