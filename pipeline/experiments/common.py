"""What the image experiments share: the run's identity, its data on the device, and models by name.

    spec_for(params, experiment, variant, seed, method, dataset, subset, config) -> RunSpec
    image_data(params, dataset, subset, seed, device) -> ImageData (subset of this seed; leak-guarded)
    build_model(name, num_classes, widths=None, generator=None) -> nn.Module with features()/head (pipeline.models)
"""
from __future__ import annotations

from pathlib import Path

from ..config import Params
from ..models import build_model  # noqa: F401  (re-exported: the one registry of image models by name)
from ..train.engine import RunSpec
from ..train.image import ImageData
from ..train.runner import check_data_kind


def spec_for(params: Params, experiment: str, variant: str, seed: int, *, method: str, dataset: str,
             subset: str | None, config: dict, metric: str = "test_acc", mode: str = "max") -> RunSpec:
    """The run's identity; `config` (the resolved variant settings) decides its checkpoint and MLflow params."""
    target = params.experiment(experiment).target.model_dump()
    return RunSpec(experiment=experiment, variant=variant, seed=seed, profile=params.profile, method=method,
                   dataset=dataset, subset=subset, metric=metric, mode=mode, target=target,
                   config={"profile": params.profile, "synthetic": params.synthetic, **config})


def image_data(params: Params, dataset: str, subset: str | None, seed: int, device) -> ImageData:
    """The training (sub)set of `seed` and the test split, on the device."""
    prepared = params.prepared_dir(dataset)
    check_data_kind(prepared, params.synthetic)
    subset_file = None
    if subset is not None and subset != "full":
        subset_file = params.subsets_dir(dataset) / f"seed{seed}" / f"{subset}.npy"
        if not subset_file.exists():
            raise FileNotFoundError(f"{subset_file}: missing; run `python -m pipeline subsets {dataset}` first")
    return ImageData.load(prepared, subset_file, device)
