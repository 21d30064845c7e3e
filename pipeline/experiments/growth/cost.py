"""Experiment 3's cost for the plan (pipeline/plan.py): every growth stage's FLOPs at its own widths.

    drawn per epoch = batch x ceil(samples_per_epoch / batch)    (image.train_epoch draws whole batches)
    train FLOPs     = pipeline.models.flops.schedule_flops over the plan's stages (train.plan_for): 3x the forward
                      FLOPs of the stage's widths x drawn samples x the stage's epochs (= metrics train_flops)
    eval FLOPs      = forward FLOPs of the evaluated epoch's stage x test images
"""
from __future__ import annotations

import functools
import math

from ...plan import Cost, DataSize, image_step
from .schema import Settings

GROWTH_NOTE = "the growth operations themselves (new units, optimizer state carried over) are not counted"


@functools.cache
def _schedule(model: str, classes: int, stage_widths: tuple, stage_epochs: tuple, drawn: int) -> dict:
    """schedule_flops of one plan, cached: the growing modes of a dataset share their plan."""
    import torch

    from ...models import build_model
    from ...models.flops import schedule_flops

    build = lambda widths: build_model(model, classes, widths, generator=torch.Generator().manual_seed(0))
    return schedule_flops(build, list(stage_widths), list(stage_epochs), drawn)


def estimate(settings: Settings, sizes: dict[str, DataSize | None], kind: str) -> Cost | None:
    from .train import plan_for

    data = sizes.get(settings.dataset)
    if kind == "tune" or data is None:
        return None
    t, plan = settings.train, plan_for(settings)
    bounds = [0, *plan.growth_epochs, t.epochs]
    drawn = t.batch_size * math.ceil((t.samples_per_epoch or data.train) / t.batch_size)
    flops = _schedule(settings.model, data.classes, tuple(plan.stage_widths),
                      tuple(b - a for a, b in zip(bounds, bounds[1:])), drawn)
    forward = flops["stage_forward_flops"]
    if kind == "step":  # at the full widths: the network the method ends with
        return Cost(3 * forward[-1] * t.batch_size, step=image_step(lambda d: _build(settings, data.classes, d),
                                                                    data.classes, t.batch_size))
    evaluated = [e for e in range(t.epochs) if (e + 1) % t.eval_every == 0 or e + 1 == t.epochs]
    return Cost(train_flops=flops["total"], eval_flops=sum(forward[plan.stage_at(e)] for e in evaluated) * data.test,
                notes=(GROWTH_NOTE,) if len(forward) > 1 else ())


def _build(settings: Settings, classes: int, device):
    import torch

    from ...models import build_model

    model = build_model(settings.model, classes, settings.full_widths, conv_init=settings.conv_init).to(device)
    t = settings.train
    return model, torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, nesterov=t.nesterov,
                                  weight_decay=t.weight_decay)
