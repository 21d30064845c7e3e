"""The pipeline's stages as data: one list that both orchestrators are checked against.

    stages(params) -> [Stage(name, cmd, deps, outs, params), ...]

`dvc.yaml` is written from this list (`python -m pipeline dvc-yaml`, committed; a test fails when it is stale),
and the Snakefile's rules produce the very same commands and outputs (a test compares the two). The list does
not depend on the profile: the grid and every path are the same in smoke, quick and paper, so switching the
profile reruns stages but never changes the DAG.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .config import EXPERIMENTS, Params

RUNS = "results/runs"
TUNING = "results/tuning"
TRACKING = "results/tracking"
TABLES = "results/tables"
ANALYSIS = "results/analysis"
FIGURES = "figures"
REPORT = "report"
CODE = "pipeline"  # every stage depends on the package: a code change reruns what it may affect


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
                             deps=[CODE] + tune_inputs(params, exp, name), outs=[tuning_file(exp, name)],
                             params=common + [exp]))
        runs = []
        for variant in section.variant_names():
            target = run_dir(exp, variant)
            runs.append(target)
            out.append(Stage(f"train_{exp}_{variant}",
                             f"python -m pipeline train {exp} {variant} --seeds {seeds_arg(params)} --out {target}",
                             deps=[CODE] + train_inputs(params, exp, variant), outs=[target],
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
