"""The experiments: every package that defines one, found the same way whether built in or brought by a user.

    pipeline/experiments/<name>/          the built-in ones (every sub-package holding an __init__.py)
    params.yaml `plugins: [folder, ...]`  a method package outside pipeline/ (paths relative to params.yaml)
    entry points, group "pipeline.experiments"   an installed package (`[project.entry-points."pipeline.experiments"]`)

An experiment package is a folder:

    <name>/__init__.py   EXPERIMENT = Experiment(name=..., settings=Settings, ...)   torch-free: read at start-up
           schema.py     Settings, the pydantic model of one variant's complete configuration (types and ranges)
           train.py      train(job) -> metrics
           tune.py       tune(job, out): where the experiment tunes something first (Experiment.tuning says what)
           tables.py     tables(ctx) -> [table]: the tables it adds to the report (optional)
           figures.py    CURVES, FIGURES: the figures it adds besides its learning curves (optional)
           claims.yaml   the claims ledger entries and comparisons of the experiment (optional)
           choices.md    the report's "our choice" lines of the experiment (optional)

An experiment runs when params.yaml has a section of its name; the section's grammar is pipeline/variants.py.
The host (config, dag, analysis, report) knows no experiment by name: it loops over `load(...)`.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from pathlib import Path
from typing import Callable

from pydantic import BaseModel

from .errors import ConfigError

BUILTIN = Path(__file__).with_name("experiments")
ENTRY_POINT_GROUP = "pipeline.experiments"


def default_data(settings: BaseModel) -> list[tuple[str, str | None]]:
    """The (dataset, subset) a variant reads: its `dataset` setting, and its `subset` when it has one."""
    return [(settings.dataset, getattr(settings, "subset", None))]


@dataclass(frozen=True)
class Experiment:
    """One experiment: what the host needs to validate its section, lay out its jobs and report its runs."""

    name: str  # its params.yaml section and results/runs/<name>/
    settings: type[BaseModel]  # one variant's complete configuration (pydantic, torch-free)
    data_kinds: tuple[str, ...]  # kinds of data.datasets entries it trains on (e.g. cifar10, cifar100, imagefolder)
    # (settings) -> [(dataset, subset or None)] the variant reads; the subset None or "full": the whole training set
    data: Callable[[BaseModel], list[tuple[str, str | None]]] = default_data
    # (variant, settings, coords) -> {"method", "dataset", "subset"}: the run's identity in tables and MLflow;
    # None: the grid's `method` axis (else the variant's name), and the first (dataset, subset) of `data`
    describe: Callable[[str, BaseModel, dict], dict] | None = None
    # (variant, settings) -> the tuning job whose result the variant reads (None: no tuning). A tuning job is named
    # after the variant whose settings it tunes; the package then has tune.py with tune(job, out).
    tuning: Callable[[str, BaseModel], str | None] | None = None
    # (settings) -> what the run's result depends on (its config hash, config.json); default: all of the settings
    identity: Callable[[BaseModel], dict] | None = None
    # (params, variant, settings) -> None: checks across sections (e.g. a batch against the data's size), raising a
    # one-line pipeline.errors.ConfigError, so that nothing the stages would refuse passes `check`
    check: Callable[[object, str, BaseModel], None] | None = None
    # (settings, sizes, kind) -> pipeline.plan.Cost or None: the analytic FLOPs of one run ("train"), of the tuning
    # job named after the variant ("tune") or of one training step ("step", for --calibrate), for `python -m
    # pipeline plan`; sizes: {dataset: plan.DataSize}. Import torch inside. None: the plan shows n/a
    cost: Callable[[BaseModel, dict, str], object] | None = None
    package: str = ""  # filled in when loaded: the package's module name
    folder: Path = field(default=Path())  # filled in when loaded: the package's folder (its code digest)

    def module(self, name: str):
        """A sub-module of the package (train, tune, tables, figures): imported only by the stage that needs it."""
        return importlib.import_module(f"{self.package}.{name}")

    def file(self, name: str) -> Path | None:
        """A file of the package (claims.yaml, choices.md), or None when it has none."""
        path = self.folder / name
        return path if path.is_file() else None

    def has_module(self, name: str) -> bool:
        return (self.folder / f"{name}.py").is_file()


def _from_module(module, where: str) -> Experiment:
    exp = getattr(module, "EXPERIMENT", None)
    if not isinstance(exp, Experiment):
        raise ConfigError(f"{where}: defines no EXPERIMENT = pipeline.registry.Experiment(...)")
    if not exp.name.isidentifier():
        raise ConfigError(f"{where}: experiment name {exp.name!r} must be a Python identifier")
    return replace(exp, package=module.__name__, folder=Path(module.__file__).resolve().parent)


def _import_folder(folder: Path, where: str):
    """Import a package folder outside pipeline/ under its own name (so its relative imports work)."""
    init = folder / "__init__.py"
    if not init.is_file():
        raise ConfigError(f"{where}: {folder} is not a Python package folder (no __init__.py)")
    name = folder.name
    if not name.isidentifier():
        raise ConfigError(f"{where}: folder name {name!r} must be a Python identifier (it is the package's name)")
    loaded = sys.modules.get(name)
    if loaded is not None:
        if Path(getattr(loaded, "__file__", "") or "").resolve() != init.resolve():
            raise ConfigError(f"{where}: a package named {name!r} is already imported from elsewhere; "
                              f"rename the folder")
        return loaded
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[name]
        raise ConfigError(f"{where}: importing {init} failed: {type(err).__name__}: {err}") from None
    return module


@functools.cache
def _builtin() -> tuple[Experiment, ...]:
    found = []
    for folder in sorted(p for p in BUILTIN.iterdir() if (p / "__init__.py").is_file()):
        module = importlib.import_module(f"pipeline.experiments.{folder.name}")
        found.append(_from_module(module, f"pipeline/experiments/{folder.name}"))
    return tuple(found)


@functools.cache
def _entry_points() -> tuple[Experiment, ...]:
    found = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        where = f"entry point {ep.name!r} ({ep.value})"
        try:
            obj = ep.load()
        except Exception as err:
            raise ConfigError(f"{where}: cannot be loaded: {type(err).__name__}: {err}") from None
        found.append(obj if isinstance(obj, Experiment) and obj.package else _from_module(
            sys.modules[obj.__module__] if isinstance(obj, Experiment) else obj, where))
    return tuple(found)


def load(plugins: tuple[str, ...] = (), base: Path = Path(".")) -> dict[str, Experiment]:
    """Every known experiment by name: built-in, then `plugins` folders (relative to `base`), then entry points.
    Two experiments of one name are an error naming both."""
    out: dict[str, Experiment] = {}
    sources: dict[str, str] = {}

    def add(exp: Experiment, where: str) -> None:
        if exp.name in out:
            raise ConfigError(f"{where}: experiment {exp.name!r} is already defined by {sources[exp.name]}")
        out[exp.name], sources[exp.name] = exp, where

    for exp in _builtin():
        add(exp, f"pipeline/experiments/{exp.name}")
    for i, entry in enumerate(plugins):
        where = f"plugins[{i}]"
        if not isinstance(entry, str) or not entry:
            raise ConfigError(f"{where}: must be a folder path, got {entry!r}")
        folder = (Path(base) / entry).resolve()
        add(_from_module(_import_folder(folder, where), f"{where} ({entry})"), f"{where} ({entry})")
    for exp in _entry_points():
        add(exp, f"entry point of {exp.package}")
    return out
