"""One module per experiment: turns a (variant, seed) of params.yaml into a model, optimizer, method and loop.

Each module exposes:
    describe(section, variant) -> {"method": str, "dataset": str, "subset": str | None}
    train(params, variant, seed, run_dir, checkpoint_root, device) -> metrics dict (writes the run files)
and, for experiments with a tuning stage (optimizers):
    tune(params, name, out_file, device) -> None
"""
from __future__ import annotations

import importlib


def module(experiment: str):
    """The experiment's module (imports torch: keep it off start-up paths that do not train)."""
    return importlib.import_module(f"pipeline.experiments.{experiment}")
