"""Experiment 4's cost for the plan (pipeline/plan.py): the network's forward FLOPs x 3 x the samples drawn, for
a training run and for a tuning job (its grid points, each trained on the fit part of the tuning seed's set).

    drawn per epoch = batch x ceil(training images / batch)     (image.train_epoch draws whole batches)
    train FLOPs     = 3 x forward x drawn x epochs               (= metrics train_flops)
    tuning job      = points x the same over tuning.epochs on the fit part, validation scored every epoch
"""
from __future__ import annotations

import math

from ...plan import Cost, DataSize, image_step, model_flops
from .schema import Settings

KFAC_NOTE = ("K-FAC's statistics and inverses are not in the count (3x forward per sample, as for every "
             "optimizer); on the CPU a quick-profile K-FAC run took ~2 min against ~45 s for SGD (params.yaml)")


def held_out(images: int, classes: int, fraction: float) -> int:
    """Validation images of tune.validation_split on a class-balanced set: max(1, round(fraction x n_c)) per class,
    n_c = images // classes, one more for images % classes of the classes."""
    q, r = divmod(images, classes)
    return sum(max(1, int(round(fraction * n))) * k for n, k in ((q + 1, r), (q, classes - r)) if k and n)


def estimate(settings: Settings, sizes: dict[str, DataSize | None], kind: str) -> Cost | None:
    data = sizes.get(settings.dataset)
    if data is None:
        return None
    t, tuning = settings.train, settings.tuning
    widths = tuple(settings.model.widths) if settings.model.widths else None
    forward = model_flops(settings.model.name, data.classes, widths)
    images = data.size(t.subset)
    if kind == "step":
        return Cost(3 * forward * t.batch_size, step=image_step(lambda d: _build(settings, data.classes, d),
                                                                data.classes, t.batch_size))
    if kind == "tune":
        held = held_out(images, data.classes, tuning.validation_fraction)
        drawn = t.batch_size * math.ceil((images - held) / t.batch_size)
        return Cost(train_flops=3 * forward * drawn * tuning.epochs * tuning.points,
                    eval_flops=forward * held * tuning.epochs * tuning.points, runs=tuning.points)
    drawn = t.batch_size * math.ceil(images / t.batch_size)
    return Cost(train_flops=3 * forward * drawn * t.epochs, eval_flops=forward * data.test * t.epochs,
                notes=(KFAC_NOTE,) if settings.optimizer == "kfac" else ())


def _build(settings: Settings, classes: int, device):
    from .train import build_network, build_optimization

    model = build_network(settings, classes, 0, device)
    lr = settings.lr_center.get(settings.optimizer, 0.1)  # the middle of its tuning grid
    optimizer, _ = build_optimization(settings, "calibrate", model, lr, 1, 1, 0)
    return model, optimizer
