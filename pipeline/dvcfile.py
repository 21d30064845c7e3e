"""dvc.yaml, written from pipeline.dag's groups: one `foreach` stage per kind of job, the grid as its items.

    dvc_yaml(params) -> the document: stages (a foreach per group, items one line each), metrics, plots
    render(doc) -> the text of dvc.yaml (`python -m pipeline dvc-yaml`; a test fails when the file is stale)

`metrics:` and `plots:` point at what the analyze stage writes for DVC (pipeline/analysis/dvc_outputs.py), so
`dvc metrics show/diff`, `dvc plots show/diff` and `dvc exp show` show results, not only hashes.
"""
from __future__ import annotations

import yaml

from .config import Params
from .dag import ANALYSIS, groups

HEADER = """\
# Written by `python -m pipeline dvc-yaml` from pipeline/dag.py (the stages) and params.yaml (the grid: the items
# of each foreach); do not edit by hand. Each job depends on its variant's resolved settings (results/settings/),
# so an edit reruns the variants it changes. `dvc repro` runs it all; `dvc repro train_edba` one experiment's
# training; `dvc metrics show`, `dvc plots show` the results.
"""


class _Flow(dict):
    """A mapping written on one line (a foreach item)."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Flow, lambda d, data: d.represent_mapping("tag:yaml.org,2002:map", data, flow_style=True))


def _body(group) -> dict:
    body: dict = {"cmd": group.cmd}
    for key in ("deps", "params", "outs"):
        if getattr(group, key):
            body[key] = list(getattr(group, key))
    return body


def dvc_yaml(params: Params) -> dict:
    stages = {}
    for group in groups(params):
        if group.items is None:
            stages[group.name] = _body(group)
        elif isinstance(group.items, dict):
            stages[group.name] = {"foreach": {k: _Flow(v) for k, v in group.items.items()}, "do": _body(group)}
        else:
            stages[group.name] = {"foreach": list(group.items), "do": _body(group)}
    plots = []
    for exp in params.experiments:
        variants = params.variants(exp)
        metric = params.settings(exp, variants[0]).target.metric
        plots.append({f"{ANALYSIS}/curves/{exp}.csv": {"x": "epoch", "y": variants, "title": f"{exp}: {metric}",
                                                       "x_label": "epoch", "y_label": f"{metric} (mean of seeds)"}})
    return {"stages": stages, "metrics": [f"{ANALYSIS}/summary", f"{ANALYSIS}/metrics"], "plots": plots}


def render(doc: dict) -> str:
    return HEADER + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=10_000, default_flow_style=None)
