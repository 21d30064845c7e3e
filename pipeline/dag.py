"""The pipeline's stages as data: one list that both orchestrators are checked against.

    stages(params) -> [Stage(name, cmd, deps, outs, params), ...]

`dvc.yaml` is written from this list (`python -m pipeline dvc-yaml`, committed; a test fails when it is stale),
and the Snakefile's rules produce the very same commands and outputs (a test compares the two). The list loops over
the experiments of params.yaml (pipeline/registry.py) and knows none by name. It does not depend on the profile:
the grid and every path are the same in smoke, quick and paper, so switching the profile reruns stages but never
changes the DAG. Every command names the paths it reads (`--data`, `--subsets`, `--tuning`), so the commands
show the real data flow; training code never imports this module.

What reruns a stage: DVC hashes a stage's `deps` (data and code) and `params` keys itself. Snakemake sees only
file inputs, so every rule carries its stage's entry of `fingerprints(params)` as a Snakemake param: a digest of
the stage's params keys as resolved for the active profile (so `PIPELINE_PROFILE` counts too) and of its code
deps. When it differs from the one recorded at the last run, Snakemake reruns the job ("params have changed"),
as DVC would.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from .code import code_digest, shown, train_code
from .config import Params

RUNS = "results/runs"
TUNING = "results/tuning"
TRACKING = "results/tracking"
TABLES = "results/tables"
ANALYSIS = "results/analysis"
FIGURES = "figures"
REPORT = "report"
CODE = shown(Path(__file__).resolve().parent)  # "pipeline": every stage depends on the code it runs


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
    """Every dataset some variant reads, in the order the experiments first read them."""
    used: list[str] = []
    for exp in params.experiments:
        for variant in params.variants(exp):
            used += [d for d, _ in params.data_of(exp, variant) if d not in used]
    return used


def tuning_file(experiment: str, name: str) -> str:
    return f"{TUNING}/{experiment}/{name}.json"


def run_dir(experiment: str, variant: str) -> str:
    return f"{RUNS}/{experiment}/{variant}"


def job_inputs(params: Params, experiment: str, variant: str, tuning: bool = True) -> dict[str, list[str]]:
    """{"data": prepared folders, "subsets": subset folders, "tuning": tuning files} a job of the variant reads."""
    reads = params.data_of(experiment, variant)
    job = params.tuning_of(experiment, variant) if tuning else None
    # a dataset's subsets folder whenever it has subsets, even for the whole set: which subset a variant reads may
    # change with the profile (optimizers: full in paper, n100 in smoke), the DAG must not
    return {"data": list(dict.fromkeys(str(params.prepared_dir(d)) for d, _ in reads)),
            "subsets": list(dict.fromkeys(str(params.subsets_dir(d)) for d, _ in reads
                                          if params.data.datasets[d].subsets)),
            "tuning": [tuning_file(experiment, job)] if job is not None else []}


def input_args(inputs: dict[str, list[str]]) -> str:
    """The command-line options of job_inputs: `--data X --subsets Y --tuning Z`."""
    return " ".join(f"--{kind} {path}" for kind, paths in inputs.items() for path in paths)


def train_inputs(params: Params, experiment: str, variant: str) -> list[str]:
    return [p for paths in job_inputs(params, experiment, variant).values() for p in paths]


def tune_inputs(params: Params, experiment: str, name: str) -> list[str]:
    return [p for paths in job_inputs(params, experiment, name, tuning=False).values() for p in paths]


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
    for exp in params.experiments:
        code = train_code(params.experiment(exp))
        for name in params.tuning_jobs(exp):
            inputs = job_inputs(params, exp, name, tuning=False)
            out.append(Stage(f"tune_{exp}_{name}",
                             f"python -m pipeline tune {exp} {name} {input_args(inputs)} "
                             f"--out {tuning_file(exp, name)}",
                             deps=code + tune_inputs(params, exp, name), outs=[tuning_file(exp, name)],
                             params=common + [exp]))
        runs = []
        for variant in params.variants(exp):
            target = run_dir(exp, variant)
            runs.append(target)
            inputs = input_args(job_inputs(params, exp, variant))
            out.append(Stage(f"train_{exp}_{variant}",
                             f"python -m pipeline train {exp} {variant} --seeds {seeds_arg(params)} {inputs} "
                             f"--out {target}",
                             deps=code + train_inputs(params, exp, variant), outs=[target],
                             params=common + ["seeds", exp]))
        receipt = f"{TRACKING}/{exp}.json"
        receipts.append(receipt)
        out.append(Stage(f"track_{exp}", f"python -m pipeline track {exp} --runs {RUNS}/{exp} --out {receipt}",
                         deps=[f"{CODE}/tracking.py"] + runs, outs=[receipt], params=["tracking"]))
    all_runs = [s.outs[0] for s in out if s.name.startswith("train_")]
    report_code = [f"{CODE}/analysis"] + [shown(params.experiment(e).folder) for e in params.experiments]
    out.append(Stage("collect", f"python -m pipeline collect --runs {RUNS} --out {TABLES}",
                     deps=[f"{CODE}/analysis"] + all_runs, outs=[TABLES]))
    out.append(Stage("analyze", f"python -m pipeline analyze --tables {TABLES} --out {ANALYSIS}",
                     deps=report_code + [TABLES], outs=[ANALYSIS], params=["profile", "analysis"]))
    out.append(Stage("figures", f"python -m pipeline figures --tables {TABLES} --analysis {ANALYSIS} --out {FIGURES}",
                     deps=report_code + [TABLES, ANALYSIS], outs=[FIGURES], params=["profile", "analysis"]))
    out.append(Stage("report", f"python -m pipeline report --analysis {ANALYSIS} --figures {FIGURES} --out {REPORT}",
                     deps=[f"{CODE}/report"] + report_code[1:] + [ANALYSIS, FIGURES] + receipts, outs=[REPORT],
                     params=["profile", "analysis"]))
    return out


def _code_folders(params: Params) -> set[str]:
    return {CODE, *(shown(params.experiment(e).folder) for e in params.experiments)}


def _is_code(dep: str, folders: set[str]) -> bool:
    return any(dep == f or dep.startswith(f + "/") for f in folders)


def _resolved(resolved: dict, key: str):
    """The value of a dotted params key in `params.dump()` (the active profile's overrides merged in)."""
    for part in key.split("."):
        resolved = resolved[part]
    return resolved


def fingerprints(params: Params) -> dict[str, str]:
    """Stage name -> digest of what the stage reads besides its data inputs: its params keys, resolved for the
    active profile, and its code deps. The Snakefile's rules carry theirs as a param (see the module docstring)."""
    resolved, digests, folders = params.dump(), {}, _code_folders(params)
    out = {}
    for s in stages(params):
        code = {d: digests.get(d) or digests.setdefault(d, code_digest(d)) for d in s.deps if _is_code(d, folders)}
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
