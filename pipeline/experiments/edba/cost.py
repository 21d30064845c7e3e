"""Experiment 2's cost for the plan (pipeline/plan.py): the PreResNet's forward FLOPs x the passes per sample
drawn x the samples drawn.

    drawn per epoch = batch x ceil(samples_per_epoch / batch)      (image.train_epoch draws whole batches)
    passes          = 3 for the baseline (forward + backward); EDBA two_pass: 1 selection forward + 3 per kept
                      sample, counted as if every sample were kept (4: an upper bound), EDBA shared: 3
    eval FLOPs      = forward x test images x evaluated epochs
"""
from __future__ import annotations

import math

from ...plan import Cost, DataSize, image_step, model_flops
from .schema import Settings

EDBA_NOTE = ("EDBA two_pass counted as if every drawn sample were kept (1 selection + 3 training passes = 4/3 of "
             "the baseline per sample); each dropped sample saves 3 of the 4, so runs record less")
EPOCHS_NOTE = ("train.epochs {epochs} for both arms: the paper reports EDBA converging in ~80-120 epochs on full "
               "data and the baseline in ~300-350; kept so both arms have one budget and epochs_to_target shows "
               "when each gets there (EDBA stopped at 120 would save {saving:.0%} of its arm's FLOPs)")
SUBSET_DEVIATION = ("train.samples_per_epoch train_set: every subset draws the whole training set's {train:,} "
                    "samples an epoch ({steps} baseline steps), so a 10%, 1% or 100-sample run costs what a "
                    "full-data run does; one pass over the subset (the baseline_pass reading) would cost training "
                    "set / subset times less (10x at 10%, 100x at 1%). Kept: the paper does not say how long a "
                    "subset trains, and equal drawn samples give every subset the same steps (300 passes over 100 "
                    "images are 300 steps in all), so a small-subset result is not an artefact of under-training "
                    "(choices.md); the baseline_pass variants run the cheaper reading beside it")


def drawn_per_epoch(settings: Settings, data: DataSize) -> int:
    """Samples image.train_epoch draws in an epoch: samples_per_epoch rounded up to whole batches."""
    spe = settings.train.samples_per_epoch
    target = data.train if spe == "train_set" else data.size(settings.subset) if spe == "subset" else spe
    return settings.train.batch_size * math.ceil(target / settings.train.batch_size)


def estimate(settings: Settings, sizes: dict[str, DataSize | None], kind: str) -> Cost | None:
    data = sizes.get(settings.dataset)
    if kind == "tune" or data is None:
        return None
    t = settings.train
    forward = model_flops(f"preresnet{settings.model.depth}", data.classes, tuple(settings.model.widths))
    if kind == "step":
        return Cost(3 * forward * t.batch_size, step=image_step(lambda d: _build(settings, data.classes, d),
                                                                data.classes, t.batch_size))
    passes = 4 if settings.policy == "edba" and settings.edba.forward == "two_pass" else 3
    drawn = drawn_per_epoch(settings, data)
    evaluated = t.epochs // t.eval_every + (t.epochs % t.eval_every != 0)
    notes = [EDBA_NOTE] if passes == 4 else []
    if settings.policy == "edba" and t.epochs > 120:
        notes.append(EPOCHS_NOTE.format(epochs=t.epochs, saving=1 - 120 / t.epochs))
    paper, deviation = None, ""
    if t.samples_per_epoch == "train_set" and data.size(settings.subset) < data.train:
        one_pass = t.batch_size * math.ceil(data.size(settings.subset) / t.batch_size)
        paper = forward * passes * one_pass * t.epochs
        deviation = SUBSET_DEVIATION.format(train=data.train, steps=drawn // t.batch_size)
    return Cost(train_flops=forward * passes * drawn * t.epochs, eval_flops=forward * data.test * evaluated,
                notes=tuple(notes), paper_flops=paper, deviation=deviation)


def _build(settings: Settings, classes: int, device):
    from ...models import build_model
    from .train import build_optimizer

    model = build_model(f"preresnet{settings.model.depth}", classes, settings.model.widths,
                        conv_init=settings.model.conv_init).to(device)
    return model, build_optimizer(settings, model)
