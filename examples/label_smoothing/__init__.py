"""Label smoothing (Szegedy et al. 2016, "Rethinking the Inception Architecture", §7) against hard labels: an
example of a method brought to the harness as one folder outside pipeline/ (see the README, "Adding a method").

    schema.py    Settings: what one variant trains (dataset, subset, target, model, train, smoothing)
    train.py     train(job): the harness's image loop with a batch policy whose loss smooths the labels
    tables.py    one table: accuracy per variant against the baseline
    claims.yaml  the comparison (smoothing vs baseline) and the claim it tests
    choices.md   the choices the source leaves open

This file is read whenever params.yaml is loaded: it imports nothing heavy (no torch).
"""
from pipeline.registry import Experiment
from pipeline.schemas.base import IMAGE_KINDS

from .schema import Settings

EXPERIMENT = Experiment(name="label_smoothing", settings=Settings, data_kinds=IMAGE_KINDS)
