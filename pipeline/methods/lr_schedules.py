"""Learning-rate schedules of experiment 4, built by name over a budget of steps_per_epoch x epochs iterations.

    scheduler = build_scheduler("cyclical", optimizer, steps_per_epoch=391, epochs=30)
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

`max_lr` of the cyclical and one-cycle schedules defaults to the optimizer's lr, so one tuned lr per optimizer
serves every schedule. The defaults below are the builder's; experiment 4 passes its own values from params.yaml
(optimizers.schedule_options, each with its reason there). Unknown names and options fail with a one-line
ValueError.
"""
from __future__ import annotations

import torch
from torch.optim import lr_scheduler

# ---------------------------------------------------------------------------------------------------------------
# Configuration: defaults and where they come from
# ---------------------------------------------------------------------------------------------------------------
OPTIONS: dict[str, dict] = {
    "constant": {},
    # (0.5, 0.75) x 0.1: He et al. 2016 §4.2 CIFAR schedule (lr / 10 at 32k and 48k of 64k iterations)
    "step": dict(milestones=(0.5, 0.75), gamma=0.1),
    # anneal to exactly 0 at the end of the budget
    "cosine": dict(eta_min=0.0),
    # base_lr = base_ratio x max_lr, 1/4 (Smith 2015 §3.3: base_lr 1/3 or 1/4 of max_lr; an explicit base_lr wins);
    # cycles of about epochs_per_cycle = 8 epochs (half-cycle 4): Smith 2015 §3.2 advises a half-cycle of 2-10
    # epochs and stopping at the end of a cycle (see default_step_size; an explicit step_size wins);
    # LR-only cycling: CLR cycles the learning rate, not momentum (momentum cycling came in Smith 2018)
    "cyclical": dict(base_lr=None, base_ratio=0.25, max_lr=None, step_size=None, epochs_per_cycle=8,
                     mode="triangular"),
    # torch's defaults (pct_start 0.3, div_factor 25, final_div_factor 1e4, cosine phases); momentum is not cycled
    # (our choice: the schedule then changes only the lr, for every optimizer alike, incl. those without momentum);
    # with cycle_momentum, momentum (or Adam's beta1) runs max_momentum -> base_momentum -> max (Smith 2018 §4)
    "one_cycle": dict(max_lr=None, pct_start=0.3, div_factor=25.0, final_div_factor=1e4, anneal_strategy="cos",
                      three_phase=False, cycle_momentum=False, base_momentum=0.85, max_momentum=0.95),
}
EPOCHS_PER_CYCLE = OPTIONS["cyclical"]["epochs_per_cycle"]

KNOWN = tuple(OPTIONS)


def default_step_size(steps_per_epoch: int, epochs: int, epochs_per_cycle: float = EPOCHS_PER_CYCLE) -> int:
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
    if name not in OPTIONS:
        raise ValueError(f"unknown lr schedule {name!r}; known: {', '.join(KNOWN)}")
    unknown = sorted(set(options) - set(OPTIONS[name]))
    if unknown:
        raise ValueError(f"lr schedule {name!r} does not take option(s) {unknown}; it takes {sorted(OPTIONS[name])}")
    for key, value in (("steps_per_epoch", steps_per_epoch), ("epochs", epochs)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"lr schedule {name!r}: {key} must be a positive integer, got {value!r}")
    o = {**OPTIONS[name], **options}
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
