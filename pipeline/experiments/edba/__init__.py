"""Experiment 2: Efficient Dynamic Batch Adaptation against a fixed batch on CIFAR subsets
(edba-efficient-dynamic-batch-adaptation.txt; NOTES.md section 3). Torch-free: read when params.yaml is loaded.

    schema.py    Settings: dataset, subset, policy, target, model, train, edba (EDBA's settings)
    method.py    EDBA: per-sample last-layer gradients, candidate subsets, margin loss, the batch-size rule
    train.py     train(job): PreResNet, SGD, the variant's batch policy -> pipeline.train.image.fit
    cost.py      the plan's FLOPs of a run, a tuning job or a step (pipeline/plan.py)
    tables.py    the paper's Table 1 (accuracy by training-set size)
    figures.py   accuracy against training-set size, the batch-size trace
    claims.yaml  the claims ledger's entries; choices.md: the choices the sources leave open
"""
from ...registry import Experiment
from ...schemas.base import IMAGE_KINDS
from .schema import Settings


def identity(settings: Settings) -> dict:
    """What a run depends on: everything but EDBA's settings for the baseline (which never builds EDBA)."""
    return settings.model_dump(mode="json", exclude={"edba"} if settings.policy == "fixed" else None)


def cost(settings, sizes, kind):
    """The plan's FLOPs (pipeline/plan.py) from cost.py, imported only when asked: it builds models to count."""
    from .cost import estimate

    return estimate(settings, sizes, kind)


EXPERIMENT = Experiment(name="edba", settings=Settings, data_kinds=IMAGE_KINDS, identity=identity, cost=cost)
