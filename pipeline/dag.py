"""The pipeline's stages as data: one list that both orchestrators are checked against.

    stages(params) -> [Stage(name, cmd, deps, outs, params), ...]

`dvc.yaml` is written from this list (`python -m pipeline dvc-yaml`, committed; a test fails when it is stale),
and the Snakefile's rules produce the very same commands and outputs (a test compares the two). The list loops over
the experiments of params.yaml (pipeline/registry.py) and knows none by name. The grid and every path are the
same in smoke, quick and paper: switching the profile reruns stages but never changes what the runs are. Only
how a variant's seeds are split into training jobs follows the profile (`job_per`: one job trains every seed, or
one job per seed); each job's outputs are its seeds' folders results/runs/<experiment>/<variant>/seed<k> either
way. dvc.yaml is written for params.yaml's own profile. Every command names the paths it reads (`--data`,
`--subsets`, `--tuning`), so the commands show the real data flow; training code never imports this module.

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
SETTINGS = "results/settings"
BENCHMARKS = "results/benchmarks"  # Snakemake's benchmark files of the tuning and training jobs (none under DVC)
CODE = shown(Path(__file__).resolve().parent)  # "pipeline": every stage depends on the code it runs


@dataclass
class Stage:
    name: str  # a job: "<group>@<key>" for one item of a group of several, else the group's name
    cmd: str
    deps: list[str] = field(default_factory=list)  # a folder stands for every output under it (DVC's reading;
    # the Snakefile's rules list those outputs: the seed folders of results/runs)
    outs: list[str] = field(default_factory=list)
    params: list[str] = field(default_factory=list)  # params.yaml keys the stage reads (DVC reruns on change)


@dataclass
class Group:
    """Stages that differ only by their item: dvc.yaml's `foreach` (written once, `${item.<field>}`, `${key}`)."""

    name: str
    cmd: str
    deps: list[str] = field(default_factory=list)
    outs: list[str] = field(default_factory=list)
    params: list[str] = field(default_factory=list)
    items: dict[str, dict[str, str]] | list[str] | None = None  # key -> fields, or plain values (`${item}`)

    def stages(self) -> list[Stage]:
        if self.items is None:
            return [Stage(self.name, self.cmd, list(self.deps), list(self.outs), list(self.params))]
        pairs = self.items.items() if isinstance(self.items, dict) else ((v, v) for v in self.items)
        return [Stage(f"{self.name}@{key}", *(_fill(x, key, item) for x in (self.cmd, self.deps, self.outs,
                                                                            self.params))) for key, item in pairs]


def _fill(template, key: str, item):
    """`template` (a string or a list of them) with ${key}, ${item} or ${item.<field>} replaced."""
    if isinstance(template, list):
        return [_fill(t, key, item) for t in template]
    out = template.replace("${key}", key)
    if isinstance(item, dict):
        for name, value in item.items():
            out = out.replace("${item.%s}" % name, str(value))
        return out
    return out.replace("${item}", str(item))


def seed_groups(params: Params) -> list[list[int]]:
    """The seeds of each training job of a variant: all of them in one job, or one job per seed (`job_per`)."""
    return [[s] for s in params.seeds] if params.job_per == "seed" else [list(params.seeds)]


def seeds_arg(seeds: list[int]) -> str:
    return ",".join(str(s) for s in seeds)


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
    """A variant's folder; each seed's run is its sub-folder seed<k> (a training job's outputs)."""
    return f"{RUNS}/{experiment}/{variant}"


def seed_dir(experiment: str, variant: str, seed: int) -> str:
    return f"{run_dir(experiment, variant)}/seed{seed}"


def job_key(variant: str, seeds: list[int], params: Params) -> str:
    """A training job's key in its group: the variant, with _seed<k> when each seed is a job (job_per: seed)."""
    return variant + (f"_seed{seeds[0]}" if params.job_per == "seed" else "")


def train_stage(experiment: str, variant: str, seeds: list[int], params: Params) -> str:
    """A training job's stage name, train_<experiment>@<job key> (dvc.yaml: `dvc repro train_edba@edba-cifar10-p1`)."""
    return f"train_{experiment}@{job_key(variant, seeds, params)}"


def run_dirs(params: Params, experiment: str) -> list[str]:
    """Every seed folder of the experiment: the outputs of its training jobs."""
    return [seed_dir(experiment, v, s) for v in params.variants(experiment) for s in params.seeds]


def settings_file(experiment: str, variant: str) -> str:
    """The resolved settings a variant's jobs read (written by the `settings` stage; pipeline/resolved.py)."""
    return f"{SETTINGS}/{experiment}/{variant}.json"


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


def _job_fields(params: Params, experiment: str, variant: str, tuning: bool) -> tuple[dict, str]:
    """The fields of a job's item ({"data": ..., "subsets": ..., "tuning": ...}; a second path of a kind is
    "data_2", ...) and its shape, e.g. "data+subsets+tuning": the jobs of one shape share a dvc.yaml template."""
    fields, shape = {}, []
    for kind, paths in job_inputs(params, experiment, variant, tuning).items():
        for i, path in enumerate(paths):
            fields[kind if i == 0 else f"{kind}_{i + 1}"] = path
            shape.append(kind if i == 0 else f"{kind}_{i + 1}")
    return fields, "+".join(shape)


def _job_groups(params: Params, experiment: str, verb: str, jobs: dict[str, tuple[str, list[int] | None]],
                tuning: bool) -> list[Group]:
    """The tune or train jobs of an experiment as groups (one per input shape): key -> (variant, seeds)."""
    code = train_code(params.experiment(experiment))
    shapes: dict[str, Group] = {}
    for key, (variant, seeds) in jobs.items():
        fields, shape = _job_fields(params, experiment, variant, tuning)
        if shape not in shapes:
            name = f"{verb}_{experiment}" + (f"_{len(shapes) + 1}" if shapes else "")
            args = " ".join(f"--{k.split('_')[0]} ${{item.{k}}}" for k in fields)
            inputs = [f"${{item.{k}}}" for k in fields]
            settings = f"{SETTINGS}/{experiment}/${{item.variant}}.json"
            if verb == "tune":
                group = Group(name, f"python -m pipeline tune {experiment} ${{item.variant}} {args} "
                                    f"--out {TUNING}/{experiment}/${{item.variant}}.json",
                              deps=code + inputs + [settings], outs=[f"{TUNING}/{experiment}/${{item.variant}}.json"])
            else:
                per_seed = params.job_per == "seed"
                seed_outs = ["${item.seeds}"] if per_seed else [str(s) for s in params.seeds]
                group = Group(name, f"python -m pipeline train {experiment} ${{item.variant}} --seeds ${{item.seeds}} "
                                    f"{args} --out {RUNS}/{experiment}/${{item.variant}}",
                              deps=code + inputs + [settings],
                              outs=[f"{RUNS}/{experiment}/${{item.variant}}/seed{s}" for s in seed_outs])
            group.items = {}
            shapes[shape] = group
        item = {"variant": variant, **({"seeds": seeds_arg(seeds)} if seeds is not None else {}), **fields}
        shapes[shape].items[key] = item
    return list(shapes.values())


def groups(params: Params) -> list[Group]:
    """The pipeline's stages as dvc.yaml groups them (a `foreach` per kind of job); `stages` expands them."""
    used = datasets_used(params)
    with_subsets = [d for d in used if params.data.datasets[d].subsets]
    out = [Group("prepare", "python -m pipeline prepare ${item} --out data/prepared/${item}",
                 deps=[f"{CODE}/data"], outs=["data/prepared/${item}"], params=["profile", "profiles", "data"],
                 items=used)]
    if with_subsets:
        out.append(Group("subsets", "python -m pipeline subsets ${item} --prepared data/prepared/${item} "
                                    "--out data/subsets/${item}",
                         deps=[f"{CODE}/data", "data/prepared/${item}"], outs=["data/subsets/${item}"],
                         params=["seeds", "data.datasets.${item}"], items=with_subsets))
    # every variant's resolved settings, one file each, rewritten only when they change: a job depends on its own
    # file, so editing one variant reruns that variant only (params.yaml is a dependency, not `params`: its
    # hundreds of keys would be hundreds of `dvc exp show` columns)
    out.append(Group("settings", f"python -m pipeline settings --out {SETTINGS}",
                     deps=["params.yaml", f"{CODE}/config.py", f"{CODE}/variants.py", f"{CODE}/schemas"],
                     outs=[SETTINGS]))
    for exp in params.experiments:
        out += _job_groups(params, exp, "tune", {n: (n, None) for n in params.tuning_jobs(exp)}, tuning=False)
        jobs = {job_key(v, seeds, params): (v, seeds) for v in params.variants(exp) for seeds in seed_groups(params)}
        out += _job_groups(params, exp, "train", jobs, tuning=True)
    out.append(Group("track", f"python -m pipeline track ${{item}} --runs {RUNS}/${{item}} "
                              f"--out {TRACKING}/${{item}}.json",
                     deps=[f"{CODE}/tracking.py", f"{RUNS}/${{item}}"], outs=[f"{TRACKING}/${{item}}.json"],
                     params=["tracking"], items=list(params.experiments)))
    receipts = [f"{TRACKING}/{e}.json" for e in params.experiments]
    report_code = [f"{CODE}/analysis"] + [shown(params.experiment(e).folder) for e in params.experiments]
    out.append(Group("collect", f"python -m pipeline collect --runs {RUNS} --out {TABLES}",
                     deps=[f"{CODE}/analysis", RUNS], outs=[TABLES]))
    out.append(Group("analyze", f"python -m pipeline analyze --tables {TABLES} --out {ANALYSIS}",
                     deps=report_code + [TABLES], outs=[ANALYSIS], params=["profile", "analysis"]))
    out.append(Group("figures", f"python -m pipeline figures --tables {TABLES} --analysis {ANALYSIS} --out {FIGURES}",
                     deps=report_code + [TABLES, ANALYSIS], outs=[FIGURES], params=["profile", "analysis"]))
    out.append(Group("report", f"python -m pipeline report --analysis {ANALYSIS} --figures {FIGURES} "
                               f"--benchmarks {BENCHMARKS} --out {REPORT}",
                     deps=[f"{CODE}/report"] + report_code[1:] + [ANALYSIS, FIGURES] + receipts, outs=[REPORT],
                     params=["profile", "analysis"]))
    return out


def stages(params: Params) -> list[Stage]:
    """Every job of the pipeline, one Stage each (what Snakemake runs; the plan counts them)."""
    return [s for g in groups(params) for s in g.stages()]


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
    """First output of each job -> digest of what it reads besides its data inputs: its params keys resolved for
    the active profile, the resolved settings of the variant it runs (its settings file, as planned), and its code
    deps. The Snakefile's rules carry theirs as a param (see the module docstring)."""
    from .resolved import planned

    resolved, digests, folders = params.dump(), {}, _code_folders(params)
    everything = {f"{e}/{v}": planned(params, e, v) for e in params.experiments for v in params.variants(e)}
    out = {}
    for s in stages(params):
        code = {d: digests.get(d) or digests.setdefault(d, code_digest(d)) for d in s.deps if _is_code(d, folders)}
        values = {k: _resolved(resolved, k) for k in s.params}
        reads = {d: everything[d[len(SETTINGS) + 1:-len(".json")]] for d in s.deps if d.startswith(SETTINGS + "/")}
        if s.outs == [SETTINGS]:
            reads = everything
        blob = json.dumps({"params": values, "settings": reads, "code": code}, sort_keys=True, default=str)
        out[s.outs[0]] = hashlib.sha256(blob.encode()).hexdigest()[:16]  # (the settings rule: "results/settings")
    return out
