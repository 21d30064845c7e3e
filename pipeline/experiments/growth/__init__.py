"""Experiment 3: incrementally growing networks with variance transfer and LR adaptation (Yuan, Savarese & Maire,
NeurIPS 2023; NOTES.md section 2). Torch-free: read when params.yaml is loaded.

    schema.py     Settings: dataset, model, full_widths, target, growth, lr_adaptation, width, train, schedule, method
    schedule.py  the widths of every stage and the epochs of the growths
    method.py     grow (random, variance transfer, Net2Net), optimizer state carried in place, LR adaptation
    parameterization.py   kaiming or mup: how the weights and their learning rates scale with width
    train.py      train(job): the image loop with a before-epoch hook that grows the network
    cost.py       the plan's FLOPs of a run, a tuning job or a step (pipeline/plan.py)
    tables.py    accuracy, FLOPs and speed-up against the fixed network
    figures.py   the width trace
    claims.yaml  the claims ledger's entries; choices.md: the choices the sources leave open
"""
from ...registry import Experiment
from ...schemas.base import IMAGE_KINDS
from .schema import Settings


def describe(variant: str, settings: Settings, coords: dict) -> dict:
    """The method is the variant's mode (fixed_full, grow_vt_lr, ...)."""
    return {"method": coords.get("mode", variant), "dataset": settings.dataset, "subset": None}


def identity(settings: Settings) -> dict:
    """What a run depends on: a fixed full-width network not on the schedule, a fixed one not on the method."""
    fixed_full = settings.growth == "none" and settings.width == "full"
    drop = {"schedule", "method"} if fixed_full else {"method"} if settings.growth == "none" else set()
    if settings.parameterization == "kaiming":  # what every run did before the key existed: their results stay valid
        drop.add("parameterization")
    if settings.parameterization == "mup" and fixed_full:  # mup's widths are relative to the schedule's stage 0
        drop.discard("schedule")
    return settings.model_dump(mode="json", exclude=drop or None)


def cost(settings, sizes, kind):
    """The plan's FLOPs (pipeline/plan.py) from cost.py, imported only when asked: it builds models to count."""
    from .cost import estimate

    return estimate(settings, sizes, kind)


EXPERIMENT = Experiment(name="growth", settings=Settings, data_kinds=IMAGE_KINDS, describe=describe,
                        identity=identity, cost=cost)
