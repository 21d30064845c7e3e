"""The only reader of params.yaml: merge the active profile into every section, validate, expose the grid.

    params.yaml --load()--> Params (typed, validated)  --> variants per experiment, paths, resolved sections

Profiles scale experiments, never the shape of the grid: a section's `profiles: {smoke: {...}, quick: {...},
paper: {...}}` holds overrides that are deep-merged into the section before validation. Any error (unknown key,
wrong type, impossible value) is raised as one `ConfigError` line naming the key path.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator

from .schemas.base import NonNegInt, Strict
from .schemas.block_size import BlockSize
from .schemas.data import Data
from .schemas.edba import Edba
from .schemas.growth import Growth
from .schemas.optimizers import Optimizers
from .errors import PipelineError
from .schemas.analysis import Analysis

PROFILES = ("smoke", "quick", "paper")
EXPERIMENTS = ("block_size", "edba", "growth", "optimizers")
DEFAULT_PARAMS = Path("params.yaml")


class ConfigError(PipelineError, ValueError):
    """A bad params.yaml: the message is one line naming the key path and what is wrong."""


class ProfileSettings(Strict):
    synthetic: bool  # True: every dataset is replaced by synthetic data the pipeline generates (no download)


class Tracking(Strict):
    uri: str | None = None  # None: sqlite:///mlflow.db at the repository root; MLFLOW_TRACKING_URI overrides
    experiment_prefix: str = ""  # prepended to MLflow experiment names, e.g. to separate profiles


class Params(Strict):
    profile: Literal["smoke", "quick", "paper"]
    seeds: list[NonNegInt] = Field(min_length=1)
    profiles: dict[Literal["smoke", "quick", "paper"], ProfileSettings]
    data: Data
    tracking: Tracking = Tracking()
    block_size: BlockSize
    edba: Edba
    growth: Growth
    optimizers: Optimizers
    analysis: Analysis

    @field_validator("seeds")
    @classmethod
    def _unique(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"seeds must be distinct, got {v}")
        return v

    # ---- derived facts used by the CLI, the Snakefile and the dvc.yaml generator --------------------------
    @property
    def synthetic(self) -> bool:
        return self.profiles[self.profile].synthetic

    def experiment(self, name: str):
        if name not in EXPERIMENTS:
            raise ConfigError(f"unknown experiment {name!r}; known: {', '.join(EXPERIMENTS)}")
        return getattr(self, name)

    def variants(self, experiment: str) -> list[str]:
        return list(self.experiment(experiment).variant_names())

    def check_variant(self, experiment: str, variant: str) -> None:
        names = self.variants(experiment)
        # reference configurations (runnable by name, not in the grid) where a section defines them
        names += list(getattr(self.experiment(experiment), "reference_names", list)())
        if variant not in names:
            raise ConfigError(f"{experiment}: unknown variant {variant!r}; known: {', '.join(names)}")

    def check_seeds(self, seeds: list[int]) -> None:
        unknown = sorted(set(seeds) - set(self.seeds))
        if unknown:
            raise ConfigError(f"seeds {unknown} are not in params.yaml seeds {self.seeds}")

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


# ---- loading --------------------------------------------------------------------------------------------------
def _deep_merge(base: dict, override: dict, path: str) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value, f"{path}.{key}")
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve(raw: dict[str, Any], profile: str | None = None) -> dict[str, Any]:
    """Apply the active profile's overrides to every section; returns plain data (no validation yet)."""
    if not isinstance(raw, dict):
        raise ConfigError("params.yaml: the top level must be a mapping")
    raw = copy.deepcopy(raw)
    if profile is not None:
        raw["profile"] = profile
    active = raw.get("profile")
    if active not in PROFILES:
        raise ConfigError(f"profile: {active!r} is not one of {', '.join(PROFILES)}")
    for section, body in raw.items():
        if isinstance(body, dict) and "profiles" in body and section != "profiles":
            overrides = body.pop("profiles") or {}
            if not isinstance(overrides, dict):
                raise ConfigError(f"{section}.profiles: must be a mapping of profile -> overrides")
            for name in overrides:
                if name not in PROFILES:
                    raise ConfigError(f"{section}.profiles.{name}: {name!r} is not one of {', '.join(PROFILES)}")
            raw[section] = _deep_merge(body, overrides.get(active) or {}, f"{section}.profiles.{active}")
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


def _check_references(params: Params, source: str) -> None:
    """Every dataset and subset an experiment names exists in data.datasets and has a kind it can train on."""
    for exp in EXPERIMENTS:
        section = params.experiment(exp)
        for key, dataset, subset in section.data_references():
            where = f"{source}: {key}"
            if dataset not in params.data.datasets:
                raise ConfigError(f"{where}: {dataset!r} is not a key of data.datasets "
                                  f"({', '.join(params.data.datasets)}) [profile {params.profile}]")
            ds = params.data.datasets[dataset]
            if ds.kind not in section.DATA_KINDS:
                raise ConfigError(f"{where}: {dataset!r} is a {ds.kind} dataset; {exp} trains on "
                                  f"{' or '.join(section.DATA_KINDS)} data [profile {params.profile}]")
            if subset is not None and subset != "full" and subset not in ds.subsets:
                known = ", ".join(dict.fromkeys(["full", *ds.subsets]))
                raise ConfigError(f"{where}: subset {subset!r} is not in data.datasets.{dataset}.subsets ({known}) "
                                  f"[profile {params.profile}]")


def _validate_one(raw: dict[str, Any], profile: str | None, source: str) -> Params:
    resolved = resolve(raw, profile)
    try:
        params = Params.model_validate(resolved)
    except ValidationError as err:
        raise ConfigError(_one_line(err, resolved["profile"], source)) from None
    missing = [p for p in PROFILES if p not in params.profiles]
    if missing:
        raise ConfigError(f"{source}: profiles: {', '.join(missing)} missing (every profile needs its entry)")
    _check_references(params, source)
    return params


def validate(raw: dict[str, Any], profile: str | None = None, source: str = "params.yaml") -> Params:
    """Validate plain params data (e.g. Snakemake's `config`); `source` names the file in error messages.

    Every profile is validated, not only the active one, so that a typo in the quick or paper overrides stops a
    smoke run too, instead of surfacing hours later; the active profile's Params is returned."""
    params = _validate_one(raw, profile, source)
    for other in PROFILES:
        if other != params.profile:
            _validate_one(raw, other, source)
    return params


def load(path: str | os.PathLike = DEFAULT_PARAMS, profile: str | None = None) -> Params:
    """Read and validate params.yaml. `profile` (or PIPELINE_PROFILE) overrides the file's `profile:`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such params file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    return validate(raw, profile or os.environ.get("PIPELINE_PROFILE"), source=str(path))
