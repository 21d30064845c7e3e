"""Widths of a network at a fraction of its full widths, rounded the way growing networks grow (whole pairs).

    scaled_widths((16, 32, 64), 0.25) -> (4, 8, 16)
"""
from __future__ import annotations

import math


def scaled_widths(full_widths: tuple[int, ...], fraction: float) -> tuple[int, ...]:
    """`fraction` of every width, rounded so that full - width is even (growth adds whole pairs of units) and
    at least one pair (one unit for an odd full width). E.g. ((16, 32, 64), 0.25) -> (4, 8, 16)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"width fraction must be in (0, 1], got {fraction!r}")
    nearest = lambda full: full - 2 * math.floor((full - full * fraction) / 2 + 0.5)  # same parity as full
    return tuple(max(nearest(full), 2 - full % 2) for full in full_widths)
