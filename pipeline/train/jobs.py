"""What a tuning or training job is given: its experiment, variant, seed, and every path it reads.

    Inputs.from_paths(data=[...], subsets=[...], tuning=[...])   the stage's --data / --subsets / --tuning paths
    Job(params, experiment, variant, seed, inputs, run_dir, checkpoint_root, device)
        .settings / .describe()             the variant's settings and identity (params.yaml, resolved)
        .prepared(dataset)                  the prepared dataset's folder (its kind checked against the profile)
        .subset_file(dataset, subset)       this seed's subset index file, or None for the whole training set
        .tuning_file(name)                  a tuning stage's result
        .image_data(dataset, subset)        this seed's subset of an image dataset and its test split, on the device
                                            (in host memory where the profile's speed.data_on_device is false)
        .spec(metric, mode, ...)            the run's identity (RunSpec): config + the profile's speed options that
                                            change numbers + digests of its data and code
        .start(spec)                        a Run for the spec with the profile's speed options (refuses to overwrite
                                            another config's results), logging live to MLflow if on (pipeline/live.py)

A job reads only what its command line names: a dataset, subset or tuning file it was not given is a one-line
error naming the missing argument, so the Snakefile and dvc.yaml show the real data flow.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.fetch import DataError
from .engine import Run, RunSpec
from .runner import check_data_kind, input_digests, prepared_files, start_run


@dataclass(frozen=True)
class Inputs:
    data: dict[str, Path] = field(default_factory=dict)  # dataset -> prepared folder (data/prepared/<dataset>)
    subsets: dict[str, Path] = field(default_factory=dict)  # dataset -> subsets folder (data/subsets/<dataset>)
    tuning: dict[str, Path] = field(default_factory=dict)  # tuning job -> its result file (<job>.json)

    @classmethod
    def from_paths(cls, data=(), subsets=(), tuning=()) -> "Inputs":
        """Keys from the folders' own records (meta.json, subsets.json: their dataset) and the tuning files' names."""
        return cls(data={_dataset_of(Path(p), "meta.json", "prepare"): Path(p) for p in data},
                   subsets={_dataset_of(Path(p), "subsets.json", "subsets"): Path(p) for p in subsets},
                   tuning={Path(p).stem: Path(p) for p in tuning})


def _dataset_of(folder: Path, record: str, stage: str) -> str:
    path = folder / record
    if not path.is_file():
        raise DataError(f"{path}: missing; run `python -m pipeline {stage}` for this dataset first")
    return json.loads(path.read_text())["dataset"]


@dataclass
class Job:
    params: Any  # pipeline.config.Params
    experiment: str
    variant: str
    seed: int | None  # None: a tuning job before its experiment chose the seed
    inputs: Inputs
    run_dir: Path
    checkpoint_root: Path = Path("results/checkpoints")
    device: Any = "cpu"

    @property
    def settings(self):
        return self.params.settings(self.experiment, self.variant)

    def describe(self) -> dict:
        return self.params.describe(self.experiment, self.variant)

    def _where(self) -> str:
        return f"{self.experiment}/{self.variant}"

    def prepared(self, dataset: str) -> Path:
        if dataset not in self.inputs.data:
            raise DataError(f"{self._where()}: no --data for dataset {dataset!r} (its prepared folder, e.g. "
                            f"data/prepared/{dataset})")
        folder = self.inputs.data[dataset]
        check_data_kind(folder, self.params.synthetic)
        return folder

    def subset_file(self, dataset: str, subset: str | None) -> Path | None:
        """This seed's index file of `subset` (None or "full": the whole training set, no file)."""
        if subset is None or subset == "full":
            return None
        if dataset not in self.inputs.subsets:
            raise DataError(f"{self._where()}: no --subsets for dataset {dataset!r} (e.g. data/subsets/{dataset})")
        path = self.inputs.subsets[dataset] / f"seed{self.seed}" / f"{subset}.npy"
        if not path.exists():
            raise DataError(f"{path}: missing; rerun `python -m pipeline subsets {dataset}` (subset {subset!r}, "
                            f"seed {self.seed})")
        return path

    def tuning_file(self, name: str) -> Path:
        if name not in self.inputs.tuning:
            raise DataError(f"{self._where()}: no --tuning for tuning job {name!r} "
                            f"(e.g. results/tuning/{self.experiment}/{name}.json)")
        path = self.inputs.tuning[name]
        if not path.exists():
            raise DataError(f"{path}: missing; run `python -m pipeline tune {self.experiment} {name}` first "
                            f"(variant {self.variant!r} reads it)")
        return path

    def data_files(self, dataset: str, subset: str | None) -> list[Path]:
        """Every file a run on (dataset, subset) reads, for its identity; the data's kind is checked first."""
        chosen = self.subset_file(dataset, subset)
        return prepared_files(self.prepared(dataset)) + ([chosen] if chosen is not None else [])

    def spec(self, metric: str, mode: str, *, config: dict | None = None, variant: str | None = None,
             reads: list[tuple[str, str | None]] | None = None, **identity) -> RunSpec:
        """The run's identity. `config` (default: the experiment's identity of the settings) decides its checkpoint
        and MLflow params; the digests of the data it reads (`reads`, default: the variant's data) and of its code
        count too. `identity` overrides describe()'s method, dataset or subset."""
        from ..code import train_code_digest

        described = {**self.describe(), **identity}
        reads = self.params.data_of(self.experiment, self.variant) if reads is None else reads
        files = [f for dataset, subset in reads for f in self.data_files(dataset, subset)]
        exp = self.params.experiment(self.experiment)
        return RunSpec(experiment=self.experiment, variant=variant or self.variant, seed=self.seed,
                       profile=self.params.profile, method=described["method"], dataset=described["dataset"],
                       subset=described["subset"], metric=metric, mode=mode,
                       target=self.settings.target.model_dump(),
                       config=self.params.run_config(self.experiment, self.variant, config),
                       inputs=input_digests(files, train_code_digest(exp)))

    def image_data(self, dataset: str, subset: str | None):
        """This seed's training (sub)set of an image dataset and its test split, on the job's device (the images in
        host memory where the profile's speed.data_on_device is false)."""
        from .image import ImageData

        return ImageData.load(self.prepared(dataset), self.subset_file(dataset, subset), self.device,
                              on_device=self.params.speed.data_on_device)

    def start(self, spec: RunSpec, run_dir: Path | None = None) -> Run:
        """A Run for `spec` with the global RNG seeded (checkpoints under <checkpoint_root>/<exp>/<variant>/seed<k>).
        The job's own run (no `run_dir`; not a tuning candidate's) logs its epochs live to MLflow where
        pipeline.live says so, under the run key the track stage syncs it as."""
        run = start_run(spec, self.run_dir if run_dir is None else run_dir, self.checkpoint_root, self.device,
                        speed=self.params.speed)
        if run_dir is None:
            from .. import tracking
            from ..live import LiveLog

            uri, name = tracking.tracking_uri(self.params), f"{self.params.tracking.experiment_prefix}{spec.experiment}"
            key = f"{spec.profile}/{spec.experiment}/{self.run_dir.parent.name}/{self.run_dir.name}"
            run.live = LiveLog.for_run(uri, lambda client: tracking.experiment_id(client, uri, name), key,
                                       f"{spec.variant}/seed{spec.seed} [{spec.profile}]", say=run.log,
                                       lock=tracking.store_lock(uri) if uri.startswith("sqlite:") else None,
                                       params={**tracking.flatten(spec.config), "method": str(spec.method),
                                               "dataset": str(spec.dataset), "subset": str(spec.subset)})
        return run
