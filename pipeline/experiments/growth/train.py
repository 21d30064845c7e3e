"""Experiment 3: incrementally growing networks with variance transfer and LR adaptation (NOTES.md section 2).

    params.yaml growth (variant `<mode>-<dataset>`, seed) + --data <prepared> --> a plan (widths per stage, growth
        epochs) --> a network at stage-0 widths, SGD + cosine schedule --> pipeline.train.image.fit, whose
        before-epoch hook grows the network (method.py) with the optimizer carried in place
        --> results/runs/growth/<variant>/seed<k>/

Modes (params.yaml growth.grid.axes.mode): fixed_full (the baseline), fixed_small (the lower bound: stage-0 widths
throughout), grow_random (growing only), grow_vt (+ variance transfer), grow_vt_lr (+ LR adaptation: the method),
net2net (Net2WiderNet copies). Every mode runs through the same image loop, so their wall-clock times compare.

What changes shape at a growth (the model, the optimizer with its scheduler, the stage masks) lives in one
object, `Growing`, the loop's hook: it grows the network at the start of an epoch (timed as training) and its
state records its stage, so that a resumed run first rebuilds the network at that stage's widths and only then
loads weights.

History adds per epoch: stage, width (channels / full-width channels), params, epoch_flops (analytic: 3 x forward
FLOPs of the current widths per sample), lr_multiplier_s<k> for every stage k of the plan (stage k's
LR-adaptation multiplier, the mean over its weight entries; 1 without adaptation; empty before stage k exists),
lr_multiplier (the current stage's).
metrics.json extra: flops_fraction (training FLOPs / the fixed full-width network's for the same samples),
final_widths, full_widths, stage_widths, growth_epochs, parameters, full_width_parameters.
"""
from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass

import torch

from ...methods.lr_schedules import build_scheduler
from ...models import build_model
from ...models.flops import TRAIN_TO_FORWARD, conv_linear_flops
from ...seeding import generator
from ...train import image, runner
from ...train.jobs import Job
from .parameterization import mup_lr_factors, to_mup
from .method import (carry_optimizer_state, extend_lr_compensation, extend_stage_masks, grow, initial_stage_masks,
                     lr_multipliers, scale_ratio, scaled_step, stage_multipliers)
from .schedule import GrowthSchedule
from .schema import Settings

METRIC, MODE = "test_acc", "max"  # judged on final test accuracy (a fraction)


# ---------------------------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class Plan:
    """Widths of every stage and the epochs after which the growths happen (none for a fixed network)."""

    stage_widths: list[tuple[int, ...]]
    growth_epochs: list[int]  # growth k (1-based) happens after growth_epochs[k-1] completed epochs

    def stage_at(self, epoch: int) -> int:
        """The stage that trains 0-based epoch `epoch`."""
        return sum(1 for e in self.growth_epochs if e <= epoch)


def schedule_of(cfg: Settings) -> GrowthSchedule:
    s = cfg.schedule
    return GrowthSchedule(tuple(cfg.full_widths), cfg.train.epochs, s.num_growths, s.start_fraction, s.growth_ratio,
                          s.stage_length_ratio)


def plan_for(cfg: Settings) -> Plan:
    full = tuple(cfg.full_widths)
    if cfg.growth == "none" and cfg.width == "full":  # fixed full width: the schedule does not matter
        return Plan([full], [])
    schedule = schedule_of(cfg)
    if cfg.growth == "none":  # fixed at the schedule's stage-0 widths
        return Plan([schedule.stage_widths()[0]], [])
    return Plan(schedule.stage_widths(), schedule.growth_epochs())


def base_widths(cfg: Settings) -> tuple[int, ...]:
    """The schedule's stage-0 widths, growing or fixed: where the parameterizations agree (parameterization.py)."""
    return tuple(schedule_of(cfg).stage_widths()[0])


def steps_per_epoch(cfg: Settings, train_size: int) -> int:
    """Iterations per epoch: a whole number of batches covering samples_per_epoch (the image loop's rule)."""
    return math.ceil((cfg.train.samples_per_epoch or train_size) / cfg.train.batch_size)


# ---------------------------------------------------------------------------------------------- what grows
class Growing:
    """The network, its SGD optimizer + cosine scheduler and the LR-adaptation stage masks, at `stage`: the image
    loop's hook (before_epoch grows, epoch_stats adds the growth columns).

    Also the optimizer interface train_epoch calls (param_groups, zero_grad, step): with LR adaptation or
    variance-transfer LR compensation a step is the growth method's scaled_step (per-entry multipliers on the
    update), otherwise the plain optimizer step. state_dict() holds the stage, the multipliers in use and the
    growth's random stream; load_state_dict() rebuilds everything at that stage's widths before loading.
    """

    def __init__(self, cfg: Settings, plan: Plan, num_classes: int, steps: int, device, seed: int,
                 method_gen: torch.Generator):
        self.cfg, self.plan, self.num_classes, self.steps, self.device = cfg, plan, num_classes, steps, device
        self.method_gen = method_gen  # the growths' draws (new units, Net2Net splits)
        self.adapted: dict[str, torch.Tensor] = {}  # parameter name -> per-entry LR-adaptation multiplier
        self.compensation: dict[str, torch.Tensor] = {}  # parameter name -> per-entry s^2 (vt_compensate_lr)
        self.multipliers: dict[str, torch.Tensor] = {}  # their product (x mup's per-layer lr): what a step uses
        self.base = base_widths(cfg)  # mup's C_0
        self._build(0, generator(seed, "init"))  # the initialisation depends on the seed only
        self._combine()

    def _build(self, stage: int, init: torch.Generator) -> None:
        t = self.cfg.train
        self.stage = stage
        self.model = build_model(self.cfg.model, self.num_classes, self.plan.stage_widths[stage],
                                 generator=init, conv_init=self.cfg.conv_init).to(self.device)
        if self.cfg.parameterization == "mup":  # a fixed full network at mup's scale (stage 0: unchanged)
            to_mup(self.model, self.base)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=t.lr, momentum=t.momentum,
                                         nesterov=t.nesterov, weight_decay=t.weight_decay)
        # cosine over the whole budget, per iteration; it stays attached across growths (carried in place)
        self.scheduler = build_scheduler(t.lr_schedule, self.optimizer, self.steps, t.epochs, eta_min=t.eta_min)
        self.masks = initial_stage_masks(self.model) if self.cfg.lr_adaptation else None

    def start_epoch(self, stage: int, method_gen: torch.Generator) -> None:
        """Grow to `stage` if needed, then recompute the LR multipliers after a growth, and at every epoch start
        with lr_recompute "epoch" (with "growth" they stay as computed at the last growth)."""
        grew = stage > self.stage
        self.grow_to(stage, method_gen)
        if grew or self.cfg.method.lr_recompute == "epoch":
            self.update_multipliers()

    def grow_to(self, stage: int, method_gen: torch.Generator) -> None:
        """Grow to the widths of `stage` (one growth per stage, in order), keeping function and optimizer state."""
        m = self.cfg.method
        for k in range(self.stage + 1, stage + 1):
            new_model, step = grow(self.model, self.plan.stage_widths[k], self.cfg.growth, method_gen,
                                   variance_factor=m.variance_factor, base_widths=self.plan.stage_widths[0],
                                   init_fan=m.init_fan, net2net_noise=m.net2net_noise,
                                   parameterization=self.cfg.parameterization)
            carry_optimizer_state(self.optimizer, self.model, new_model, step, rescale_state=m.rescale_state)
            if self.masks is not None:
                self.masks = extend_stage_masks(self.masks, new_model, step, stage=k)
            if m.vt_compensate_lr:  # BN makes rescaled weights' effective LR 1/s^2: give them s^2 back
                self.compensation = extend_lr_compensation(self.compensation, new_model, step)
            self.model, self.stage = new_model, k

    def update_multipliers(self) -> None:
        """LR adaptation's per-stage multipliers from the current weight norms, times the VT compensation."""
        if self.masks is not None:
            m = self.cfg.method
            self.adapted = lr_multipliers(self.model, self.masks, scope=m.lr_scope, include_head=m.lr_include_head)
        self._combine()

    def _combine(self) -> None:
        """The multipliers a step uses: LR adaptation x VT compensation x mup's C_0 / C (from the current widths)."""
        width = mup_lr_factors(self.model, self.base) if self.cfg.parameterization == "mup" else {}
        tables = (self.adapted, self.compensation, width)
        names = dict.fromkeys(n for table in tables for n in table)
        self.multipliers = {n: math.prod(table.get(n, 1.0) for table in tables) for n in names}

    def stage_multipliers(self) -> list[float | None]:
        """LR-adaptation multiplier of every stage of the plan (all 1.0 without adaptation; VT compensation
        apart), None for the stages not reached yet."""
        ahead = [None] * (len(self.plan.stage_widths) - 1 - self.stage)
        if self.masks is None:
            return [1.0] * (self.stage + 1) + ahead
        return stage_multipliers(self.model, self.masks, self.adapted, self.cfg.method.lr_include_head) + ahead

    # the image loop's hook
    def before_epoch(self, run, loop: image.ImageLoop):
        """Grow to the stage of this epoch (a growth counts as training time), then set the loop's per-sample
        forward FLOPs at the current widths (bookkeeping, not timed)."""
        with run.training():
            self.start_epoch(self.plan.stage_at(run.epoch), self.method_gen)
        loop.forward_flops = conv_linear_flops(self.model)
        return self.model, self, self.scheduler

    def epoch_stats(self, stats: dict) -> dict:
        """History columns of the epoch: stage, width fraction, parameters, its FLOPs, the LR multipliers, and the
        weights' scale against a fresh initialisation of the current widths (weight_scale, scale_ratio)."""
        return {"stage": self.stage, "width": channels(self.model.widths) / channels(self.cfg.full_widths),
                "params": sum(p.numel() for p in self.model.parameters()), "epoch_flops": stats["flops"],
                **stage_columns(self.stage_multipliers(), self.stage),
                "weight_scale": scale_ratio(self.model, fresh(self.cfg, self.num_classes, self.model.widths))}

    # the optimizer interface of train_epoch
    @property
    def param_groups(self) -> list[dict]:
        return self.optimizer.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        if self.multipliers:
            scaled_step(self.optimizer, self.model, self.multipliers)
        else:
            self.optimizer.step()

    # the checkpoint protocol
    def state_dict(self) -> dict:
        return {"stage": self.stage, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "masks": self.masks, "adapted": self.adapted,
                "compensation": self.compensation, "method_gen": self.method_gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self._build(state["stage"], torch.Generator().manual_seed(0))  # placeholder weights, overwritten next
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state["masks"] is not None:
            self.masks = {n: m.to(self.device) for n, m in state["masks"].items()}
        self.adapted, self.compensation = ({n: t.to(self.device) for n, t in state[k].items()}
                                           for k in ("adapted", "compensation"))
        self.method_gen.set_state(state["method_gen"])
        self._combine()  # the multipliers in use at the checkpoint, not recomputed from the loaded weights


@functools.cache
def _fresh(model: str, num_classes: int, widths: tuple, conv_init: str, base: tuple | None):
    net = build_model(model, num_classes, widths, generator=torch.Generator().manual_seed(0), conv_init=conv_init)
    return net if base is None else to_mup(net, base)


def fresh(cfg: Settings, num_classes: int, widths) -> torch.nn.Module:
    """A freshly initialised network at `widths` under the run's parameterization (a fixed generator:
    bookkeeping, no run stream is touched)."""
    base = base_widths(cfg) if cfg.parameterization == "mup" else None
    return _fresh(cfg.model, num_classes, tuple(widths), cfg.conv_init, base)


def grown_init_scale(cfg: Settings, plan: Plan, initial: torch.nn.Module) -> float | None:
    """The schedule applied to the untrained initial network: its weights' scale after the last growth against a
    fresh full-width initialisation (1.0: the growth keeps the initialisation's scale; None: no growth)."""
    if len(plan.stage_widths) == 1:
        return None
    m, model, draws = cfg.method, copy.deepcopy(initial), torch.Generator().manual_seed(0)
    for widths in plan.stage_widths[1:]:
        model, _ = grow(model, widths, cfg.growth, draws, variance_factor=m.variance_factor,
                        base_widths=plan.stage_widths[0], init_fan=m.init_fan, net2net_noise=m.net2net_noise,
                        parameterization=cfg.parameterization)
    return scale_ratio(model, fresh(cfg, model.head.out_features, plan.stage_widths[-1]))


def channels(widths) -> int:
    return sum(widths)


def stage_columns(multipliers: list[float | None], stage: int) -> dict:
    """History columns: lr_multiplier_s<k> for every stage of the plan (empty before stage k exists) and
    lr_multiplier, the current (newest) stage's."""
    return {**{f"lr_multiplier_s{k}": m for k, m in enumerate(multipliers)}, "lr_multiplier": multipliers[stage]}


# ---------------------------------------------------------------------------------------------- one run
def train(job: Job) -> dict:
    """Train one (variant, seed) and write its run files; returns the metrics."""
    cfg = job.settings
    spec = job.spec(METRIC, MODE)  # checks the data's kind before any work
    data = job.image_data(cfg.dataset, None)  # the whole training set and the test split, on the device
    run = job.start(spec)  # seeds the global RNG

    plan = plan_for(cfg)
    gens = runner.seed_generators(job.seed)
    growing = Growing(cfg, plan, data.num_classes, steps_per_epoch(cfg, len(data.y)), job.device, job.seed,
                      gens["method"])
    init_scale = grown_init_scale(cfg, plan, growing.model)  # before training: the method's scale, not training's
    loop = image.ImageLoop(epochs=cfg.train.epochs, samples_per_epoch=cfg.train.samples_per_epoch or len(data.y),
                           eval_every=cfg.train.eval_every, eval_batch=cfg.train.eval_batch,
                           augment=cfg.train.augment)
    image.fit(run, growing.model, growing, growing.scheduler, data, image.FixedBatch(cfg.train.batch_size), loop,
              gens, hook=growing)

    # the fixed full-width network's analytic FLOPs for the very samples this run trained on
    full_model = build_model(cfg.model, data.num_classes, cfg.full_widths, generator=torch.Generator().manual_seed(0))
    samples = run.history[-1]["samples"] if run.history else 0
    full_flops = TRAIN_TO_FORWARD * conv_linear_flops(full_model) * samples
    run.extra.update({
        "flops_fraction": run.history[-1]["flops"] / full_flops if full_flops else None,
        "full_width_train_flops": full_flops,
        "final_widths": list(growing.model.widths),
        "full_widths": list(cfg.full_widths),
        "stage_widths": [list(w) for w in plan.stage_widths],
        "growth_epochs": list(plan.growth_epochs),
        "parameters": sum(p.numel() for p in growing.model.parameters()),
        "full_width_parameters": sum(p.numel() for p in full_model.parameters()),
        "grown_init_scale_ratio": init_scale,
    })
    return runner.finish_run(run)
