"""The pipeline's stages as data: one list that both orchestrators are checked against.

    stages(params) -> [Stage(name, cmd, deps, outs, params), ...]

`dvc.yaml` is written from this list (`python -m pipeline dvc-yaml`, committed; a test fails when it is stale),
and the Snakefile's rules produce the very same commands and outputs (a test compares the two). The list does
not depend on the profile: the grid and every path are the same in smoke, quick and paper, so switching the
profile reruns stages but never changes the DAG.

What reruns a stage: DVC hashes a stage's `deps` (data and code) and `params` keys itself. Snakemake sees only
file inputs, so every rule carries its stage's entry of `fingerprints(params)` as a Snakemake param: a digest of
the stage's params keys as resolved for the active profile (so `PIPELINE_PROFILE` counts too) and of its code
deps. When it differs from the one recorded at the last run, Snakemake reruns the job ("params have changed"),
as DVC would.
"""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from .config import EXPERIMENTS, Params

RUNS = "results/runs"
TUNING = "results/tuning"
TRACKING = "results/tracking"
TABLES = "results/tables"
ANALYSIS = "results/analysis"
FIGURES = "figures"
REPORT = "report"
CODE = "pipeline"  # every stage depends on the code it runs: a change there reruns it
# what a tuning or training job imports (not analysis, report or tracking: editing those reruns no training)
TRAIN_CODE = [f"{CODE}/{p}" for p in ("__main__.py", "config.py", "dag.py", "device.py", "errors.py", "seeding.py",
                                      "schemas", "data", "models", "methods", "train", "experiments")]


@dataclass
class Stage:
    name: str
    cmd: str
    deps: list[str] = field(default_factory=list)
    outs: list[str] = field(default_factory=list)
    params: list[str] = field(default_factory=list)  # params.yaml keys the stage reads (DVC reruns on change)


def seeds_arg(params: Params) -> str:
    return ",".join(str(s) for s in params.seeds)


def datasets_used(params: Params) -> list[str]:
    used: list[str] = []
    for exp in EXPERIMENTS:
        section = params.experiment(exp)
        for variant in section.variant_names():
            used += [d for d in section.variant_datasets(variant) if d not in used]
    return used


def data_inputs(params: Params, datasets: list[str]) -> list[str]:
    """Prepared dirs of the datasets plus their subset dirs (image datasets with subsets)."""
    paths = []
    for d in datasets:
        paths.append(str(params.prepared_dir(d)))
        if params.data.datasets[d].subsets:
            paths.append(str(params.subsets_dir(d)))
    return paths


def tuning_file(experiment: str, name: str) -> str:
    return f"{TUNING}/{experiment}/{name}.json"


def run_dir(experiment: str, variant: str) -> str:
    return f"{RUNS}/{experiment}/{variant}"


def train_inputs(params: Params, experiment: str, variant: str) -> list[str]:
    section = params.experiment(experiment)
    return data_inputs(params, section.variant_datasets(variant)) + [
        tuning_file(experiment, t) for t in section.variant_tuning(variant)]


def tune_inputs(params: Params, experiment: str, name: str) -> list[str]:
    section = params.experiment(experiment)
    return data_inputs(params, section.tuning_datasets(name))


def stages(params: Params) -> list[Stage]:
    out: list[Stage] = []
    common = ["profile", "profiles"]
    for d in datasets_used(params):
        prepared = str(params.prepared_dir(d))
        out.append(Stage(f"prepare_{d}", f"python -m pipeline prepare {d} --out {prepared}",
                         deps=[f"{CODE}/data"], outs=[prepared], params=common + ["data"]))
        if params.data.datasets[d].subsets:
            subsets = str(params.subsets_dir(d))
            out.append(Stage(f"subsets_{d}", f"python -m pipeline subsets {d} --prepared {prepared} --out {subsets}",
                             deps=[f"{CODE}/data", prepared], outs=[subsets], params=["seeds", f"data.datasets.{d}"]))
    receipts = []
    for exp in EXPERIMENTS:
        section = params.experiment(exp)
        for name in section.tuning_names():
            out.append(Stage(f"tune_{exp}_{name}", f"python -m pipeline tune {exp} {name} --out {tuning_file(exp, name)}",
                             deps=TRAIN_CODE + tune_inputs(params, exp, name), outs=[tuning_file(exp, name)],
                             params=common + [exp]))
        runs = []
        for variant in section.variant_names():
            target = run_dir(exp, variant)
            runs.append(target)
            out.append(Stage(f"train_{exp}_{variant}",
                             f"python -m pipeline train {exp} {variant} --seeds {seeds_arg(params)} --out {target}",
                             deps=TRAIN_CODE + train_inputs(params, exp, variant), outs=[target],
                             params=common + ["seeds", exp]))
        receipt = f"{TRACKING}/{exp}.json"
        receipts.append(receipt)
        out.append(Stage(f"track_{exp}", f"python -m pipeline track {exp} --runs {RUNS}/{exp} --out {receipt}",
                         deps=[f"{CODE}/tracking.py"] + runs, outs=[receipt], params=["tracking"]))
    all_runs = [s.outs[0] for s in out if s.name.startswith("train_")]
    out.append(Stage("collect", f"python -m pipeline collect --runs {RUNS} --out {TABLES}",
                     deps=[f"{CODE}/analysis"] + all_runs, outs=[TABLES]))
    out.append(Stage("analyze", f"python -m pipeline analyze --tables {TABLES} --out {ANALYSIS}",
                     deps=[f"{CODE}/analysis", TABLES], outs=[ANALYSIS], params=["profile", "analysis"]))
    out.append(Stage("figures", f"python -m pipeline figures --tables {TABLES} --analysis {ANALYSIS} --out {FIGURES}",
                     deps=[f"{CODE}/analysis", TABLES, ANALYSIS], outs=[FIGURES], params=["profile", "analysis"]))
    out.append(Stage("report", f"python -m pipeline report --analysis {ANALYSIS} --figures {FIGURES} --out {REPORT}",
                     deps=[f"{CODE}/report", ANALYSIS, FIGURES] + receipts, outs=[REPORT], params=["profile", "analysis"]))
    return out


ROOT = Path(__file__).resolve().parents[1]  # the directory holding the package: code paths are relative to it


@functools.cache
def _code_digest(path: str) -> str:
    """sha256 of a code file, or of every file under a code directory (relative paths and contents; no bytecode)."""
    top = ROOT / path
    files = [top] if top.is_file() else sorted(
        f for f in top.rglob("*") if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc")
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(ROOT).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def train_code_digest() -> str:
    """One digest of the code every tuning and training job runs (TRAIN_CODE): part of a run's identity."""
    blob = json.dumps({d: _code_digest(d) for d in TRAIN_CODE}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _resolved(resolved: dict, key: str):
    """The value of a dotted params key in `params.model_dump()` (the active profile's overrides merged in)."""
    for part in key.split("."):
        resolved = resolved[part]
    return resolved


def fingerprints(params: Params) -> dict[str, str]:
    """Stage name -> digest of what the stage reads besides its data inputs: its params keys, resolved for the
    active profile, and its code deps. The Snakefile's rules carry theirs as a param (see the module docstring)."""
    resolved = params.model_dump(mode="json")
    out = {}
    for s in stages(params):
        code = {d: _code_digest(d) for d in s.deps if d == CODE or d.startswith(CODE + "/")}
        values = {k: _resolved(resolved, k) for k in s.params}
        blob = json.dumps({"params": values, "code": code}, sort_keys=True)
        out[s.name] = hashlib.sha256(blob.encode()).hexdigest()[:16]
    return out


def dvc_yaml(params: Params) -> dict:
    """The dvc.yaml document for `stages(params)` (DVC runs stages one at a time; Snakemake runs them in parallel)."""
    doc = {}
    for s in stages(params):
        body: dict = {"cmd": s.cmd}
        if s.deps:
            body["deps"] = s.deps
        if s.params:
            body["params"] = s.params
        body["outs"] = s.outs
        doc[s.name] = body
    return {"stages": doc}
