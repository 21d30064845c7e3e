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
from ..data.fetch import DataError
from ..train.runner import check_data_kind, input_digests, prepared_files


def spec_for(params: Params, experiment: str, variant: str, seed: int, *, method: str, dataset: str,
             subset: str | None, config: dict, metric: str = "test_acc", mode: str = "max") -> RunSpec:
    """The run's identity; `config` (the resolved variant settings) decides its checkpoint and MLflow params, and
    the digests of the data files it reads (prepared arrays, this seed's subset) and of the code count too."""
    target = params.experiment(experiment).target.model_dump()
    return RunSpec(experiment=experiment, variant=variant, seed=seed, profile=params.profile, method=method,
                   dataset=dataset, subset=subset, metric=metric, mode=mode, target=target,
                   config={"profile": params.profile, "synthetic": params.synthetic, **config},
                   inputs=input_digests(data_files(params, dataset, subset, seed)))


def subset_file(params: Params, dataset: str, subset: str | None, seed: int) -> Path | None:
    """The index file of `subset` for `seed`, or None for the whole training set; a missing file is a DataError."""
    if subset is None or subset == "full":
        return None
    path = params.subsets_dir(dataset) / f"seed{seed}" / f"{subset}.npy"
    if not path.exists():
        raise DataError(f"{path}: missing; run `python -m pipeline subsets {dataset}` first")
    return path


def data_files(params: Params, dataset: str, subset: str | None, seed: int) -> list[Path]:
    """Every file a run on (dataset, subset, seed) reads; the data's kind is checked first (one-line error)."""
    prepared = params.prepared_dir(dataset)
    check_data_kind(prepared, params.synthetic)
    chosen = subset_file(params, dataset, subset, seed)
    return prepared_files(prepared) + ([chosen] if chosen is not None else [])


def image_data(params: Params, dataset: str, subset: str | None, seed: int, device) -> ImageData:
    """The training (sub)set of `seed` and the test split, on the device."""
    prepared = params.prepared_dir(dataset)
    check_data_kind(prepared, params.synthetic)
    return ImageData.load(prepared, subset_file(params, dataset, subset, seed), device)
