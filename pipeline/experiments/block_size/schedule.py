"""Block-size schedules: the truncated-BPTT length of each epoch, from the epoch number and the history so far.

    block_size_at(spec, epoch, history) -> int          epoch: 0-based; history: the rows of the epochs before it

The adaptive block-size paper (§4, §5) starts at b(0) = 16 and doubles the block every 10 epochs
(16, 32, 64, 128, 256 over 50 epochs); §4 names linear, exponential and performance-based ("loss reduction")
schedules as alternatives. Each schedule here is a pure function of (epoch, history) with a ceiling
`max_block`, so a resumed run recomputes exactly the blocks of an uninterrupted one:

    constant      b(t) = block                                         the fixed-block baseline
    linear        b(t) = min(b0 + step * floor(t / every), max_block)  "add d every k epochs"
    exponential   b(t) = min(round(b0 * factor ** floor(t / every)), max_block)
    doubling      exponential with factor 2                            the paper's method
    plateau       b0, multiplied by `factor` each time the validation loss has gone `patience` epochs without
                  improving on its best by more than `delta` (ReduceLROnPlateau's rule with an absolute
                  threshold and no cooldown, applied to the block instead of the learning rate)

The training loop (pipeline/train/lm.py) calls `schedule.block_size(epoch, history)` once per epoch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

History = list[dict]  # one dict per completed epoch; `plateau` reads its "valid_loss" (mean nats per token)


# ---------------------------------------------------------------------------------------------- schedules
def constant(epoch: int, history: History, *, block: int) -> int:
    """The same block every epoch (paper §6 baseline: 16)."""
    return block


def linear(epoch: int, history: History, *, b0: int, step: int, every: int, max_block: int) -> int:
    """b0, plus `step` tokens every `every` epochs, capped at max_block."""
    return min(b0 + step * (epoch // every), max_block)


def exponential(epoch: int, history: History, *, b0: int, factor: float, every: int, max_block: int) -> int:
    """b0 times `factor` every `every` epochs, capped at max_block (rounded to whole tokens)."""
    return min(int(round(b0 * factor ** (epoch // every))), max_block)


def doubling(epoch: int, history: History, *, b0: int, every: int, max_block: int) -> int:
    """The paper's schedule (§4): b(0) = 16, doubled every 10 epochs."""
    return exponential(epoch, history, b0=b0, factor=2.0, every=every, max_block=max_block)


def plateau(epoch: int, history: History, *, b0: int, factor: float, patience: int, delta: float,
            max_block: int) -> int:
    """Grow by `factor` after `patience` consecutive epochs without a validation-loss gain of more than `delta`.

    Replays the validation losses of the epochs before `epoch`: an epoch is "bad" when its loss is not below
    best - delta (best: the lowest loss so far); after `patience` bad epochs in a row the block grows and the
    count restarts (the best loss is kept). A pure function of history[:epoch], so a resume agrees with it.
    """
    block, best, bad = b0, math.inf, 0
    for row in history[:epoch]:
        loss = float(row["valid_loss"])
        if loss < best - delta:
            best, bad = loss, 0
        else:
            bad += 1
        if bad >= patience and block < max_block:
            block, bad = min(int(round(block * factor)), max_block), 0
    return block


KINDS: dict[str, Callable[..., int]] = {
    "constant": constant, "linear": linear, "exponential": exponential, "doubling": doubling, "plateau": plateau,
}


# ---------------------------------------------------------------------------------------------- the loop's view
@dataclass(frozen=True)
class BlockSchedule:
    """A schedule by name with its settings; `block_size(epoch, history)` is what the LM loop calls."""

    kind: str
    settings: dict = field(default_factory=dict)  # keyword arguments of the schedule function, e.g. b0, every

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"block schedule kind {self.kind!r} is unknown; known: {', '.join(KINDS)}")

    def block_size(self, epoch: int, history: History) -> int:
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0 (0-based), got {epoch}")
        block = int(KINDS[self.kind](epoch, history, **self.settings))
        if block < 1:
            raise ValueError(f"block schedule {self.kind} {self.settings} gave block {block} at epoch {epoch}")
        return block


def build_schedule(spec: dict) -> BlockSchedule:
    """{"kind": "doubling", "b0": 16, "every": 10, "max_block": 256} -> BlockSchedule."""
    spec = dict(spec)
    kind = spec.pop("kind", None)
    if kind is None:
        raise ValueError(f"block schedule {spec}: needs a 'kind' ({', '.join(KINDS)})")
    return BlockSchedule(kind, spec)


def block_size_at(spec: dict, epoch: int, history: History) -> int:
    """The block of 0-based `epoch` under schedule `spec`, given the rows of the epochs before it."""
    return build_schedule(spec).block_size(epoch, history)


def fixed_trace(spec: dict, epochs: int) -> list[int]:
    """Blocks of epochs 0 .. epochs-1 for a schedule that does not read history (all but plateau)."""
    if spec.get("kind") == "plateau":
        raise ValueError("a plateau schedule depends on the validation losses; it has no fixed trace")
    schedule = build_schedule(spec)
    return [schedule.block_size(t, []) for t in range(epochs)]
