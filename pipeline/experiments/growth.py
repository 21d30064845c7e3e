"""Experiment 3: incrementally growing networks with variance transfer and LR adaptation (NOTES.md section 2).

    params.growth + variant `<mode>-<dataset>` + seed --> a plan (widths per stage, growth epochs)
        --> a network at stage-0 widths, SGD + cosine schedule --> epochs; at each growth epoch the network is
        grown (pipeline.methods.growth) with the optimizer carried in place --> results/runs/growth/<variant>/seed<k>/

Modes (params.yaml growth.modes): fixed_full (the baseline), fixed_small (the lower bound: stage-0 widths
throughout), grow_random (growing only), grow_vt (+ variance transfer), grow_vt_lr (+ LR adaptation: the method),
net2net (Net2WiderNet copies). Every mode runs through the same driver, so their wall-clock times compare.

The driver is its own (the model changes between epochs) and is built from the image loop's pieces: train_epoch,
evaluate, IndexStream, FixedBatch, ImageData, and the Run API. What changes shape at a growth (the model, the
optimizer with its scheduler, the stage masks) lives in one checkpointed object, `Growing`, whose state records
its stage, so that a resumed run first rebuilds the network at that stage's widths and only then loads weights.

History adds per epoch: stage, width (channels / full-width channels), params, epoch_flops (analytic: 3 x forward
FLOPs of the current widths per sample), lr_multiplier_s<k> for every stage k of the plan (stage k's
LR-adaptation multiplier, the mean over its weight entries; 1 without adaptation; empty before stage k exists),
lr_multiplier (the current stage's).
metrics.json extra: flops_fraction (training FLOPs / the fixed full-width network's for the same samples),
final_widths, full_widths, stage_widths, growth_epochs, parameters, full_width_parameters.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ..methods.growth import (GrowthSchedule, carry_optimizer_state, extend_lr_compensation, extend_stage_masks,
                              grow, initial_stage_masks, lr_multipliers, scaled_step, stage_multipliers)
from ..methods.lr_schedules import build_scheduler
from ..models.flops import TRAIN_TO_FORWARD, conv_linear_flops
from ..schemas.growth import Growth, Resolved
from ..seeding import generator
from ..train import runner
from ..train.engine import Diverged, GeneratorState, TensorState
from ..train.image import FixedBatch, ImageLoop, IndexStream, evaluate, train_epoch
from .common import build_model, image_data, spec_for

EXPERIMENT = "growth"


# ---------------------------------------------------------------------------------------------- identity
def describe(section: Growth, variant: str) -> dict:
    mode, dataset = section.split(variant)
    return {"method": mode, "dataset": dataset, "subset": None}


# ---------------------------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class Plan:
    """Widths of every stage and the epochs after which the growths happen (none for a fixed network)."""

    stage_widths: list[tuple[int, ...]]
    growth_epochs: list[int]  # growth k (1-based) happens after growth_epochs[k-1] completed epochs

    def stage_at(self, epoch: int) -> int:
        """The stage that trains 0-based epoch `epoch`."""
        return sum(1 for e in self.growth_epochs if e <= epoch)


def plan_for(cfg: Resolved) -> Plan:
    full = tuple(cfg.full_widths)
    if cfg.schedule is None:  # fixed full width
        return Plan([full], [])
    s = cfg.schedule
    schedule = GrowthSchedule(full, cfg.train.epochs, s.num_growths, s.start_fraction, s.growth_ratio,
                              s.stage_length_ratio)
    if cfg.growth == "none":  # fixed at the schedule's stage-0 widths
        return Plan([schedule.stage_widths()[0]], [])
    return Plan(schedule.stage_widths(), schedule.growth_epochs())


def steps_per_epoch(cfg: Resolved, train_size: int) -> int:
    """Iterations per epoch: a whole number of batches covering samples_per_epoch (the image loop's rule)."""
    return math.ceil((cfg.train.samples_per_epoch or train_size) / cfg.train.batch_size)


# ---------------------------------------------------------------------------------------------- what grows
class Growing:
    """The network, its SGD optimizer + cosine scheduler and the LR-adaptation stage masks, at `stage`.

    Also the optimizer interface train_epoch calls (zero_grad, step): with LR adaptation or variance-transfer LR
    compensation a step is the growth method's scaled_step (per-entry multipliers on the update), otherwise the
    plain optimizer step. state_dict() holds the stage and the multipliers in use; load_state_dict() rebuilds
    everything at that stage's widths before loading.
    """

    def __init__(self, cfg: Resolved, plan: Plan, num_classes: int, steps: int, device, seed: int):
        self.cfg, self.plan, self.num_classes, self.steps, self.device = cfg, plan, num_classes, steps, device
        self.adapted: dict[str, torch.Tensor] = {}  # parameter name -> per-entry LR-adaptation multiplier
        self.compensation: dict[str, torch.Tensor] = {}  # parameter name -> per-entry s^2 (vt_compensate_lr)
        self.multipliers: dict[str, torch.Tensor] = {}  # their product: what a step uses
        self._build(0, generator(seed, "init"))  # the initialisation depends on the seed only

    def _build(self, stage: int, init: torch.Generator) -> None:
        t = self.cfg.train
        self.stage = stage
        self.model = build_model(self.cfg.model, self.num_classes, self.plan.stage_widths[stage],
                                 generator=init).to(self.device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=t.lr, momentum=t.momentum,
                                         nesterov=t.nesterov, weight_decay=t.weight_decay)
        # cosine over the whole budget, per iteration; it stays attached across growths (carried in place)
        self.scheduler = build_scheduler(t.lr_schedule, self.optimizer, self.steps, t.epochs)
        self.masks = initial_stage_masks(self.model) if self.cfg.lr_adaptation else None

    def start_epoch(self, stage: int, method_gen: torch.Generator) -> None:
        """Grow to `stage` if needed, then recompute the LR multipliers after a growth, and at every epoch start
        with lr_recompute "epoch" (with "growth" they stay as computed at the last growth)."""
        grew = stage > self.stage
        self.grow_to(stage, method_gen)
        if grew or (self.cfg.method is not None and self.cfg.method.lr_recompute == "epoch"):
            self.update_multipliers()

    def grow_to(self, stage: int, method_gen: torch.Generator) -> None:
        """Grow to the widths of `stage` (one growth per stage, in order), keeping function and optimizer state."""
        m = self.cfg.method
        for k in range(self.stage + 1, stage + 1):
            new_model, step = grow(self.model, self.plan.stage_widths[k], self.cfg.growth, method_gen,
                                   variance_factor=m.variance_factor, base_widths=self.plan.stage_widths[0],
                                   init_fan=m.init_fan, net2net_noise=m.net2net_noise)
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
        one = lambda table, n: table.get(n, 1.0)
        names = [*self.adapted, *(n for n in self.compensation if n not in self.adapted)]
        self.multipliers = {n: one(self.adapted, n) * one(self.compensation, n) for n in names}

    def stage_multipliers(self) -> list[float | None]:
        """LR-adaptation multiplier of every stage of the plan (all 1.0 without adaptation; VT compensation
        apart), None for the stages not reached yet."""
        ahead = [None] * (len(self.plan.stage_widths) - 1 - self.stage)
        if self.masks is None:
            return [1.0] * (self.stage + 1) + ahead
        return stage_multipliers(self.model, self.masks, self.adapted, self.cfg.method.lr_include_head) + ahead

    # the optimizer interface of train_epoch
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
                "compensation": self.compensation}

    def load_state_dict(self, state: dict) -> None:
        self._build(state["stage"], torch.Generator().manual_seed(0))  # placeholder weights, overwritten next
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state["masks"] is not None:
            self.masks = {n: m.to(self.device) for n, m in state["masks"].items()}
        self.adapted, self.compensation = ({n: t.to(self.device) for n, t in state[k].items()}
                                           for k in ("adapted", "compensation"))
        self._combine()  # the multipliers in use at the checkpoint, not recomputed from the loaded weights


def channels(widths) -> int:
    return sum(widths)


def stage_columns(multipliers: list[float | None], stage: int) -> dict:
    """History columns: lr_multiplier_s<k> for every stage of the plan (empty before stage k exists) and
    lr_multiplier, the current (newest) stage's."""
    return {**{f"lr_multiplier_s{k}": m for k, m in enumerate(multipliers)}, "lr_multiplier": multipliers[stage]}


# ---------------------------------------------------------------------------------------------- the driver
def fit(run, growing: Growing, data, loop: ImageLoop, seed_gens: dict) -> None:
    """Train for loop.epochs with the growths of growing.plan; evaluate every loop.eval_every epochs; checkpoint
    every epoch. A growth happens at the start of the first epoch of its stage and counts as training time."""
    stream = IndexStream(data.global_index, seed_gens["data_order"])
    policy = FixedBatch(growing.cfg.train.batch_size)
    seen = torch.zeros(len(data.y), dtype=torch.bool, device=data.x.device)
    objects = {"growing": growing, "stream": stream, "policy": policy, "augment": GeneratorState(seed_gens["augment"]),
               "method": GeneratorState(seed_gens["method"]), "seen": TensorState(seen)}
    run.total_epochs = loop.epochs
    run.resume(objects)  # `growing` first rebuilds at the checkpoint's stage, then loads
    totals = {"samples": 0, "flops": 0}
    if run.history:
        totals = {k: run.history[-1][k] for k in totals}
    full = channels(growing.cfg.full_widths)
    while not run.done and run.epoch < loop.epochs:
        try:
            with run.training():
                growing.start_epoch(growing.plan.stage_at(run.epoch), seed_gens["method"])
            loop.forward_flops = conv_linear_flops(growing.model)  # at the current widths (not timed: bookkeeping)
            lr = growing.optimizer.param_groups[0]["lr"]  # the epoch's first-step lr (the schedule moves it per step)
            with run.training():
                stats = train_epoch(growing.model, growing, growing.scheduler, data, stream, policy, loop,
                                    seed_gens["augment"], seen)
        except Diverged as err:
            run.mark_diverged(str(err), objects)
            break
        totals = {"samples": totals["samples"] + stats["trained"], "flops": totals["flops"] + stats["flops"]}
        last = run.epoch + 1 == loop.epochs
        evaluated = evaluate(growing.model, data, loop.eval_batch) if last or (run.epoch + 1) % loop.eval_every == 0 else {}
        row = {"train_loss": stats["train_loss"], **evaluated, "lr": lr,
               "batch_size": stats["batch_size"], "steps": stats["steps"], "stage": growing.stage,
               "width": channels(growing.model.widths) / full,
               "params": sum(p.numel() for p in growing.model.parameters()), "epoch_flops": stats["flops"],
               **stage_columns(growing.stage_multipliers(), growing.stage), **totals}
        run.end_epoch(row, objects, done=last)
    run.distinct_samples = int(seen.sum().item())


# ---------------------------------------------------------------------------------------------- one run
def train(params, variant: str, seed: int, run_dir: Path, checkpoint_root: Path, device) -> dict:
    """Train one (variant, seed) and write its run files; returns the metrics."""
    section: Growth = params.growth
    cfg = section.resolve(variant)
    spec = spec_for(params, EXPERIMENT, variant, seed, method=cfg.mode, dataset=cfg.dataset, subset=None,
                    config=cfg.model_dump(mode="json"))
    spec = dataclasses.replace(spec, target=cfg.target.model_dump())  # the dataset's own threshold
    data = image_data(params, cfg.dataset, None, seed, device)  # checks the data's kind before any work
    run = runner.start_run(spec, run_dir, checkpoint_root, device)  # seeds the global RNG

    plan = plan_for(cfg)
    steps = steps_per_epoch(cfg, len(data.y))
    growing = Growing(cfg, plan, data.num_classes, steps, device, seed)
    loop = ImageLoop(epochs=cfg.train.epochs, samples_per_epoch=cfg.train.samples_per_epoch or len(data.y),
                     eval_every=cfg.train.eval_every, eval_batch=cfg.train.eval_batch, augment=cfg.train.augment)
    fit(run, growing, data, loop, runner.seed_generators(seed))

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
    })
    return runner.finish_run(run)
