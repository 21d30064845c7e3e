"""Experiment 4: the rapid-training survey's techniques compared like for like on CIFAR-10
(rapid-training-survey.txt). Torch-free: read when params.yaml is loaded.

    schema.py    Settings: dataset, target, model, train, optimizer, schedule, normalization, lr_from, tuning, ...
    tune.py      tune(job, out): the lr grid on a validation split held out from the training set
    train.py     train(job): the variant at its tuned lr -> pipeline.train.image.fit
    cost.py      the plan's FLOPs of a run, a tuning job or a step (pipeline/plan.py)
    tables.py    one table per technique family
    figures.py   accuracy against seconds to target
    claims.yaml  the claims ledger's entries; choices.md: the choices the sources leave open
"""
from ...registry import Experiment
from ...schemas.base import IMAGE_KINDS
from .schema import Settings


def data(settings: Settings) -> list[tuple[str, str | None]]:
    return [(settings.dataset, settings.train.subset)]


def tuning(variant: str, settings: Settings) -> str:
    """Every variant trains at a tuned lr: its own tuning job's, or that of the variant `lr_from` names."""
    return settings.lr_from or variant


def identity(settings: Settings) -> dict:
    """What a variant's runs (and its tuning job) depend on besides the lr: the chosen optimizer's and schedule's
    settings, not the whole tables, nor the tuning budget and grid (the lr they pick counts instead)."""
    return {**settings.model_dump(mode="json", include={"dataset", "model", "train", "optimizer", "schedule",
                                                         "normalization"}),
            "options": settings.options("json"), "schedule_options": settings.schedule_settings("json")}


def cost(settings, sizes, kind):
    """The plan's FLOPs (pipeline/plan.py) from cost.py, imported only when asked: it builds models to count."""
    from .cost import estimate

    return estimate(settings, sizes, kind)


EXPERIMENT = Experiment(name="optimizers", settings=Settings, data_kinds=IMAGE_KINDS, data=data, tuning=tuning,
                        identity=identity, cost=cost)
