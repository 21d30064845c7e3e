"""The only reader of params.yaml: merge the active profile into every section, validate, expose the grid.

    params.yaml --load()--> Params: the shared settings (profile, seeds, data, tracking, analysis) + one resolved
                            Section per experiment whose name is a top-level key (pipeline/registry.py finds them)

Profiles scale experiments, never the shape of the grid: a section's `profiles: {smoke: {...}, quick: {...},
paper: {...}}` holds overrides that are merged into the section (pipeline.variants.merge) before validation. Every
profile is validated, not only the active one. Any error (unknown key, wrong type, impossible value, a dataset or
subset that does not exist) is one `ConfigError` line naming the key path.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator

from . import registry
from .errors import ConfigError, PipelineError  # noqa: F401  (ConfigError is re-exported: callers catch it here)
from .schemas.analysis import Analysis
from .data.subsets import subset_sizes
from .schemas.base import NonNegInt, Strict
from .schemas.data import Data
from .schemas.speed import Speed
from .variants import Section, merge, resolve_section
from .yamlfile import read_yaml

PROFILES = ("smoke", "quick", "paper")
Profile = Literal[PROFILES]
DEFAULT_PARAMS = Path("params.yaml")


class ProfileSettings(Strict):
    synthetic: bool  # True: every dataset is replaced by synthetic data the pipeline generates (no download)
    job_per: Literal["variant", "seed"]  # one training job per variant (all seeds in turn) or one per seed
    speed: Speed  # GPU speed options (autocast, channels-last, ...); params.yaml: the papers' fp32 path


class Tracking(Strict):
    uri: str | None  # None: sqlite:///mlflow.db at the repository root; MLFLOW_TRACKING_URI overrides
    experiment_prefix: str  # prepended to MLflow experiment names, e.g. to separate profiles


class Shared(Strict):
    """The keys of params.yaml that are not an experiment's section."""

    profile: Profile
    seeds: list[NonNegInt] = Field(min_length=1)
    profiles: dict[Profile, ProfileSettings]
    plugins: list[str] = []  # folders of experiment packages outside pipeline/, relative to params.yaml
    data: Data
    tracking: Tracking
    analysis: Analysis

    @field_validator("seeds")
    @classmethod
    def _unique(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"seeds must be distinct, got {v}")
        return v


class Params:
    """The validated params of the active profile: the shared settings and every experiment's resolved section."""

    def __init__(self, shared: Shared, sections: dict[str, Section], experiments: dict[str, registry.Experiment]):
        self.shared, self.sections, self.registry = shared, sections, experiments

    def __getattr__(self, key: str):  # profile, seeds, profiles, plugins, data, tracking, analysis
        if key in Shared.model_fields:
            return getattr(self.shared, key)
        raise AttributeError(key)

    @property
    def synthetic(self) -> bool:
        return self.profiles[self.profile].synthetic

    @property
    def job_per(self) -> str:
        """"variant" (one training job trains every seed) or "seed" (one job per seed), for the active profile."""
        return self.profiles[self.profile].job_per

    @property
    def speed(self) -> Speed:
        """The active profile's speed options; Speed.identity() of them enters every run's identity (Job.spec)."""
        return self.profiles[self.profile].speed

    # ---- the grid ------------------------------------------------------------------------------------------------
    @property
    def experiments(self) -> list[str]:
        """The experiments that run: those with a section, in params.yaml's order."""
        return list(self.sections)

    def experiment(self, name: str) -> registry.Experiment:
        if name not in self.sections:
            raise ConfigError(f"unknown experiment {name!r}; params.yaml has: {', '.join(self.sections)}")
        return self.registry[name]

    def section(self, name: str) -> Section:
        self.experiment(name)
        return self.sections[name]

    def variants(self, experiment: str) -> list[str]:
        return list(self.section(experiment).variants)

    def settings(self, experiment: str, variant: str) -> BaseModel:
        """A variant's (or a reference configuration's) settings."""
        return self.section(experiment).settings(variant)

    def describe(self, experiment: str, variant: str) -> dict:
        """{"method", "dataset", "subset"} of a variant: the run's identity in tables and MLflow."""
        exp, section = self.experiment(experiment), self.section(experiment)
        settings, coords = section.settings(variant), section.coords.get(variant, {})
        if exp.describe is not None:
            return exp.describe(variant, settings, coords)
        (dataset, subset), *_ = exp.data(settings)
        return {"method": coords.get("method", variant), "dataset": dataset, "subset": subset}

    def data_of(self, experiment: str, variant: str) -> list[tuple[str, str | None]]:
        return self.experiment(experiment).data(self.settings(experiment, variant))

    def tuning_of(self, experiment: str, variant: str) -> str | None:
        exp = self.experiment(experiment)
        return exp.tuning(variant, self.settings(experiment, variant)) if exp.tuning else None

    def tuning_jobs(self, experiment: str) -> list[str]:
        jobs = [self.tuning_of(experiment, v) for v in self.variants(experiment)]
        return list(dict.fromkeys(j for j in jobs if j is not None))

    def identity(self, experiment: str, variant: str) -> dict:
        """What a run of the variant depends on (its config hash and config.json): the experiment's choice."""
        exp, settings = self.experiment(experiment), self.settings(experiment, variant)
        return exp.identity(settings) if exp.identity else settings.model_dump(mode="json")

    def run_config(self, experiment: str, variant: str, config: dict | None = None) -> dict:
        """The config a run records (config.json's run.config, its config hash): the profile, whether the data
        are synthetic, the speed options that change numbers, and `config` (default: the variant's identity)."""
        config = self.identity(experiment, variant) if config is None else config
        return {"profile": self.profile, "synthetic": self.synthetic, "speed": self.speed.identity(), **config}

    def check_variant(self, experiment: str, variant: str) -> None:
        self.section(experiment).settings(variant)

    def check_seeds(self, seeds: list[int]) -> None:
        unknown = sorted(set(seeds) - set(self.seeds))
        if unknown:
            raise ConfigError(f"seeds {unknown} are not in params.yaml seeds {self.seeds}")

    # ---- paths and plain data ----------------------------------------------------------------------------------
    def data_root(self) -> Path:
        return Path(self.data.root)

    def prepared_dir(self, dataset: str) -> Path:
        """Prepared arrays of a dataset. The path is the same in every profile (so both orchestrators see one
        DAG); its meta.json says whether it is synthetic, and training refuses data of the wrong kind."""
        return self.data_root() / "prepared" / dataset

    def subsets_dir(self, dataset: str) -> Path:
        return self.data_root() / "subsets" / dataset

    def mirror(self) -> Path | None:
        m = os.environ.get("PIPELINE_DATA_MIRROR") or self.data.mirror
        return Path(m) if m else None

    def dump(self) -> dict:
        """Every key as resolved for the active profile: the shared settings and each section as merged."""
        return {**self.shared.model_dump(mode="json"), **{n: s.raw for n, s in self.sections.items()}}


# ---- loading --------------------------------------------------------------------------------------------------
def resolve(raw: dict[str, Any], profile: str | None = None) -> dict[str, Any]:
    """Apply the active profile's overrides to every section; returns plain data (no validation yet)."""
    if not isinstance(raw, dict):
        raise ConfigError("the top level must be a mapping")
    raw = dict(raw)
    if profile is not None:
        raw["profile"] = profile
    active = raw.get("profile")
    if active not in PROFILES:
        raise ConfigError(f"profile: {active!r} is not one of {', '.join(PROFILES)}")
    for section, body in raw.items():
        if isinstance(body, dict) and "profiles" in body and section != "profiles":
            body = dict(body)
            overrides = body.pop("profiles") or {}
            if not isinstance(overrides, dict):
                raise ConfigError(f"{section}.profiles: must be a mapping of profile -> overrides")
            for name, override in overrides.items():
                if name not in PROFILES:
                    raise ConfigError(f"{section}.profiles.{name}: {name!r} is not one of {', '.join(PROFILES)}")
                if override is not None and not isinstance(override, dict):
                    raise ConfigError(f"{section}.profiles.{name}: must be a mapping of overrides")
            raw[section] = merge(body, overrides.get(active) or {})
    return raw


def _one_line(err: ValidationError, profile: str, source: str) -> str:
    first = err.errors()[0]
    path = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    elif first["type"] == "missing":
        msg = "required key is missing"
    more = len(err.errors()) - 1
    tail = f" (+{more} more error{'s' if more > 1 else ''})" if more else ""
    return f"{source}: {path}: {msg} [profile {profile}]{tail}"


def _check_synthetic_subsets(params: Params) -> None:
    """Under a synthetic profile every subset fits the synthetic training set (classes x train_per_class)."""
    images = params.data.synthetic.images
    for name, ds in params.data.datasets.items():
        if ds.kind in ("cifar10", "cifar100") and ds.subsets:  # the kinds a synthetic stand-in replaces
            classes = images.classes(ds.kind)
            try:
                subset_sizes(ds.subsets, classes * images.train_per_class, classes, name)
            except PipelineError as err:
                raise ConfigError(f"data.datasets.{name}.subsets: {err} (synthetic: {classes} classes x "
                                  f"data.synthetic.images.train_per_class {images.train_per_class})") from None


def _check_references(params: Params) -> None:
    """Every dataset and subset a variant reads exists in data.datasets with a kind its experiment trains on, and
    every tuning job a variant reads is a variant that tunes itself."""
    datasets = params.data.datasets
    for name in params.experiments:
        exp, section = params.experiment(name), params.section(name)
        for variant, settings in {**section.variants, **section.references}.items():
            where = f"{name} variant {variant!r}"
            for dataset, subset in exp.data(settings):
                if dataset not in datasets:
                    raise ConfigError(f"{where}: dataset {dataset!r} is not a key of data.datasets "
                                      f"({', '.join(datasets)})")
                if datasets[dataset].kind not in exp.data_kinds:
                    raise ConfigError(f"{where}: {dataset!r} is a {datasets[dataset].kind} dataset; {name} trains on "
                                      f"{' or '.join(exp.data_kinds)} data")
                if subset not in (None, "full") and subset not in datasets[dataset].subsets:
                    known = ", ".join(dict.fromkeys(["full", *datasets[dataset].subsets]))
                    raise ConfigError(f"{where}: subset {subset!r} is not in data.datasets.{dataset}.subsets ({known})")
            if exp.check is not None:
                exp.check(params, variant, settings)
            if variant in section.variants and (job := params.tuning_of(name, variant)) is not None:
                if job not in section.variants or params.tuning_of(name, job) != job:
                    raise ConfigError(f"{where}: reads the tuning of {job!r}, which is not a variant that tunes "
                                      f"itself; name the tuned variant")


def _validate_one(raw: dict[str, Any], profile: str | None, source: str, base: Path) -> Params:
    try:
        resolved = resolve(raw, profile)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    active = resolved["profile"]
    shared_raw = {k: v for k, v in resolved.items() if k in Shared.model_fields}
    try:
        shared = Shared.model_validate(shared_raw)
    except ValidationError as err:
        raise ConfigError(_one_line(err, active, source)) from None
    missing = [p for p in PROFILES if p not in shared.profiles]
    if missing:
        raise ConfigError(f"{source}: profiles: {', '.join(missing)} missing (every profile needs its entry)")
    experiments = registry.load(tuple(shared.plugins), base)
    sections = {}
    for key, body in resolved.items():
        if key in Shared.model_fields:
            continue
        if key not in experiments:
            raise ConfigError(f"{source}: {key}: unknown key (neither a setting nor an experiment; experiments: "
                              f"{', '.join(experiments)}) [profile {active}]")
        try:
            sections[key] = resolve_section(key, body, experiments[key].settings)
        except ConfigError as err:
            raise ConfigError(f"{source}: {err} [profile {active}]") from None
    params = Params(shared, sections, experiments)
    try:
        if params.synthetic:
            _check_synthetic_subsets(params)
        _check_references(params)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err} [profile {active}]") from None
    return params


def validate(raw: dict[str, Any], profile: str | None = None, source: str = "params.yaml",
             base: str | os.PathLike = ".") -> Params:
    """Validate plain params data (e.g. Snakemake's `config`); `source` names the file in error messages and `base`
    is the folder plug-in paths are relative to.

    Every profile is validated, not only the active one, so that a typo in the quick or paper overrides stops a
    smoke run too, instead of surfacing hours later; the active profile's Params is returned."""
    params = _validate_one(raw, profile, source, Path(base))
    for other in PROFILES:
        if other != params.profile:
            _validate_one(raw, other, source, Path(base))
    return params


def check_overrides(config: dict, raw: dict) -> None:
    """Snakemake's `--config` may set `profile` only (the Snakefile passes it to every job as PIPELINE_PROFILE);
    any other key would change the plan but not what the jobs read from params.yaml: one line naming it."""
    for key in sorted(set(config) | set(raw)):
        if key != "profile" and config.get(key) != raw.get(key):
            raise ConfigError(f"{key}: differs from params.yaml (--config or --configfile): only `profile` can be "
                              f"set on Snakemake's command line, the jobs read params.yaml; edit params.yaml instead")


def load(path: str | os.PathLike = DEFAULT_PARAMS, profile: str | None = None) -> Params:
    """Read and validate params.yaml. `profile` (or PIPELINE_PROFILE) overrides the file's `profile:`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such params file")
    raw = read_yaml(path)
    return validate(raw, profile or os.environ.get("PIPELINE_PROFILE"), source=str(path), base=path.parent)
