"""Learning-rate schedules of experiment 4, built by name over a budget of steps_per_epoch x epochs iterations.

    scheduler = build_scheduler("cosine", optimizer, steps_per_epoch=391, epochs=30, eta_min=0.0)
    for each training iteration: optimizer.step(); scheduler.step()      # stepped per ITERATION, never per epoch

All are torch.optim.lr_scheduler classes, so `state_dict()` / `load_state_dict()` checkpoint them; on resume,
build the optimizer and the scheduler exactly as at the start, then load both state dicts.

    constant   the optimizer's lr throughout
    step       lr x gamma at each milestone, milestones given as fractions of the budget
    cosine     cosine annealing from the optimizer's lr to eta_min over the whole budget (Loshchilov & Hutter 2017,
               one cycle, no restarts)
    cyclical   triangular CLR (Smith 2015 §3): lr = base + (max - base) * max(0, 1 - x),
               x = |it / step_size - 2 cycle + 1|, cycle = floor(1 + it / (2 step_size)), base = base_ratio * max
    one_cycle  super-convergence one-cycle (Smith & Topin 2017) as torch.optim.lr_scheduler.OneCycleLR: warm-up
               from max_lr/div_factor to max_lr over pct_start of the budget, then anneal to
               max_lr/(div_factor*final_div_factor), both phases cosine (anneal_strategy)

`max_lr` of the cyclical and one-cycle schedules is the optimizer's lr unless given, so one tuned lr per optimizer
serves every schedule. Every other setting is given by the caller (experiment 4 passes params.yaml's
optimizers.schedule_options, each value with its reason there). Unknown names and options, and missing ones, fail
with a one-line ValueError.
"""
from __future__ import annotations

import torch
from torch.optim import lr_scheduler

from . import LR_SCHEDULES

# The settings each schedule needs (their values: params.yaml, e.g. optimizers.schedule_options, with the sources),
# and the ones it may be given (None or absent: derived from the optimizer's lr, or from the settings).
REQUIRED: dict[str, set[str]] = {
    "constant": set(), "step": {"milestones", "gamma"}, "cosine": {"eta_min"},
    "cyclical": {"base_ratio", "epochs_per_cycle", "mode"},
    "one_cycle": {"pct_start", "div_factor", "final_div_factor", "anneal_strategy", "three_phase", "cycle_momentum",
                  "base_momentum", "max_momentum"},
}
OPTIONAL: dict[str, set[str]] = {"cyclical": {"base_lr", "max_lr", "step_size"}, "one_cycle": {"max_lr"}}
assert set(REQUIRED) == set(LR_SCHEDULES)


def default_step_size(steps_per_epoch: int, epochs: int, epochs_per_cycle: float) -> int:
    """Half-cycle length in iterations: a whole number of cycles of about `epochs_per_cycle` epochs fills the budget.

    e.g. 30 epochs, 8 per cycle -> round(30 / 8) = 4 cycles -> half-cycle 3.75 epochs; 2 epochs -> 1 cycle of 2.
    """
    cycles = max(1, round(epochs / epochs_per_cycle))
    return max(1, (steps_per_epoch * epochs) // (2 * cycles))


def _group_lrs(optimizer: torch.optim.Optimizer) -> list[float]:
    """The lr each param group was built with ('initial_lr' once a scheduler has been attached)."""
    return [float(group.get("initial_lr", group["lr"])) for group in optimizer.param_groups]


def build_scheduler(name: str, optimizer: torch.optim.Optimizer, steps_per_epoch: int, epochs: int,
                    **options) -> lr_scheduler.LRScheduler:
    """The schedule `name` for `optimizer` over steps_per_epoch x epochs iterations, stepped once per iteration."""
    if name not in LR_SCHEDULES:
        raise ValueError(f"unknown lr schedule {name!r}; known: {', '.join(LR_SCHEDULES)}")
    takes = REQUIRED[name] | OPTIONAL.get(name, set())
    unknown, missing = sorted(set(options) - takes), sorted(REQUIRED[name] - set(options))
    if unknown:
        raise ValueError(f"lr schedule {name!r} does not take option(s) {unknown}; it takes {sorted(takes)}")
    if missing:
        raise ValueError(f"lr schedule {name!r} needs option(s) {missing}")
    for key, value in (("steps_per_epoch", steps_per_epoch), ("epochs", epochs)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"lr schedule {name!r}: {key} must be a positive integer, got {value!r}")
    o = {**dict.fromkeys(OPTIONAL.get(name, ())), **options}
    total = steps_per_epoch * epochs  # iterations in the budget

    if name == "constant":
        return lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)

    if name == "step":
        fractions = sorted(float(f) for f in o["milestones"])
        if any(not 0 < f < 1 for f in fractions):
            raise ValueError(f"lr schedule 'step': milestones are fractions of the budget in (0, 1), got {fractions}")
        return lr_scheduler.MultiStepLR(optimizer, milestones=[round(f * total) for f in fractions], gamma=o["gamma"])

    if name == "cosine":
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=total, eta_min=o["eta_min"])

    if name == "cyclical":
        if not 0 < o["base_ratio"] < 1 or not o["epochs_per_cycle"] > 0:
            raise ValueError(f"lr schedule 'cyclical': need 0 < base_ratio < 1 and epochs_per_cycle > 0, got "
                             f"base_ratio={o['base_ratio']}, epochs_per_cycle={o['epochs_per_cycle']}")
        max_lr = _group_lrs(optimizer) if o["max_lr"] is None else [float(o["max_lr"])] * len(optimizer.param_groups)
        base_lr = ([m * o["base_ratio"] for m in max_lr] if o["base_lr"] is None
                   else [float(o["base_lr"])] * len(max_lr))
        step_size = (default_step_size(steps_per_epoch, epochs, o["epochs_per_cycle"]) if o["step_size"] is None
                     else int(o["step_size"]))
        if step_size < 1 or any(b >= m for b, m in zip(base_lr, max_lr)):
            raise ValueError(f"lr schedule 'cyclical': need step_size >= 1 and base_lr < max_lr, got "
                             f"step_size={step_size}, base_lr={base_lr}, max_lr={max_lr}")
        return lr_scheduler.CyclicLR(optimizer, base_lr=base_lr, max_lr=max_lr, step_size_up=step_size,
                                     mode=o["mode"], cycle_momentum=False)

    # one_cycle
    max_lr = _group_lrs(optimizer) if o["max_lr"] is None else float(o["max_lr"])
    return lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=total, pct_start=o["pct_start"],
                                   anneal_strategy=o["anneal_strategy"], cycle_momentum=o["cycle_momentum"],
                                   base_momentum=o["base_momentum"], max_momentum=o["max_momentum"],
                                   div_factor=o["div_factor"], final_div_factor=o["final_div_factor"],
                                   three_phase=o["three_phase"])
