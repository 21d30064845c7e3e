"""params.yaml fuzzed: random deletes, renames, retypes, out-of-range values, duplicate keys and broken YAML. Every
mutation is either accepted or refused with one ConfigError line naming a key or the file; nothing else escapes.

The seed is fixed, so a failure reproduces: `python -m pytest tests/test_params_fuzz.py` (MUTATIONS per run; set
PIPELINE_FUZZ_MUTATIONS for a longer run by hand).
"""
from __future__ import annotations

import copy
import os
import random
import subprocess
import sys

import pytest
import yaml

from pipeline import config

MUTATIONS = int(os.environ.get("PIPELINE_FUZZ_MUTATIONS", "60"))
MIN_DEEP_RUNS = 8  # the deep fuzz trains at least this many variant runs (CI: about a minute)
ODD_VALUES = [None, True, False, 0, -1, 1e30, 10**30, float("inf"), float("nan"), -0.5, 1.5, "", "x;rm -rf /",
              [], {}, [1, 2], {"a": 1}, "1", 3.7]


def paths(node, prefix=()):
    """Every key path of a nested mapping (lists are leaves)."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield prefix + (k,)
            yield from paths(v, prefix + (k,))


def parent(raw, path):
    node = raw
    for k in path[:-1]:
        node = node[k]
    return node


def mutate(raw: dict, rng: random.Random) -> tuple[dict, str]:
    raw = copy.deepcopy(raw)
    path = rng.choice(list(paths(raw)))
    node, key = parent(raw, path), path[-1]
    kind = rng.choice(["delete", "rename", "retype", "scale", "odd"])
    if kind == "delete":
        del node[key]
    elif kind == "rename":
        node[f"{key}x"] = node.pop(key)
    elif kind == "retype":
        value = node[key]
        node[key] = str(value) if not isinstance(value, str) else rng.choice([1, 0.5, True, [value]])
    elif kind == "scale" and isinstance(node[key], (int, float)) and not isinstance(node[key], bool):
        node[key] = node[key] * rng.choice([-1, 0, 10**6, 1e-9])
    else:
        node[key] = rng.choice(ODD_VALUES)
    return raw, f"{kind} {'.'.join(map(str, path))}"


def test_random_mutations_are_accepted_or_refused_in_one_line(raw_params):
    rng = random.Random(20261206)
    accepted = refused = 0
    for _ in range(MUTATIONS):
        raw, what = mutate(raw_params, rng)
        try:
            config.validate(raw)
            accepted += 1
        except config.ConfigError as err:
            message = str(err)
            assert "\n" not in message and message.startswith("params.yaml: "), (what, message)
            refused += 1
        # anything else (a traceback) fails the test with the mutation in its message
    assert refused > 0 and accepted + refused == MUTATIONS


@pytest.mark.parametrize("text, expected", [
    ("profile: smoke\nseeds: [0, 1]\nseeds: [7]\n", ":3:1: not valid YAML: duplicate key 'seeds' (first on line 2)"),
    ("profile: smoke\nseeds: [0, 1\n", ":3:1: not valid YAML: expected ',' or ']'"),
    ("profile: smoke\n  seeds: 1\n", ":2:8: not valid YAML: mapping values are not allowed here"),
])
def test_broken_yaml_names_the_file_line_and_column(tmp_path, root, text, expected):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    out = subprocess.run([sys.executable, "-m", "pipeline", "check", "--params", str(path)], capture_output=True,
                         text=True, cwd=root)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert out.stderr.startswith(f"error: {path}{expected}")


@pytest.mark.parametrize("edit, expected", [
    (lambda r: r["optimizers"]["train"].update(weight_decay=float("inf")), "optimizers.train.weight_decay: Input "
                                                                           "should be a finite number"),
    (lambda r: r["optimizers"]["train"].update(weight_decay=float("nan")), "optimizers.train.weight_decay"),
    (lambda r: r["edba"]["train"].update(augment=1), "edba.train.augment: Input should be a valid boolean"),
    (lambda r: r["edba"]["train"].update(epochs=True), "edba.train.epochs: Input should be a valid integer"),
    (lambda r: r["edba"]["train"].update(epochs=1e30), "edba.train.epochs: Input should be a valid integer"),
    (lambda r: r["edba"]["train"].update(lr="0.1"), "edba.train.lr: Input should be a valid number"),
    (lambda r: r["optimizers"]["variants"].update({"x;touch INJECTED;": {"optimizer": "sgd"}}),
     "optimizers.variants: 'x;touch INJECTED;' is not a valid variant name"),
    (lambda r: r["data"]["datasets"].update({"c 10": r["data"]["datasets"]["cifar10"]}), "is letters, digits or _"),
    (lambda r: r["optimizers"]["profiles"]["smoke"]["model"].update(widths=[]),
     "optimizers.model: widths: resnet20 has 3 width groups, got 0 widths"),
    (lambda r: r["data"]["synthetic"]["text"].update(valid_tokens=1),
     "data.synthetic.text.valid_tokens: Input should be greater than or equal to 2"),
    (lambda r: r["edba"]["train"].update(batch_size=10**30), "edba.train.batch_size: Input should be less than or equal"),
    (lambda r: r["edba"]["profiles"]["smoke"]["model"].update(depth=8_000_000),
     "edba.model.depth: Input should be less than or equal to 1202"),
    (lambda r: r["optimizers"]["profiles"]["quick"]["tuning"].update(step_decades=1e6),
     "tuning: the lr grid of sgd spans 0.3 x 10^+-1e+06, outside [1e-12, 1e6]"),
    (lambda r: r["data"]["synthetic"]["text"].update(train_tokens=20),
     "data.synthetic.text.train_tokens: 20 tokens are too few for block_size variant 'fixed16'"),
])
def test_values_a_stage_would_crash_on_are_refused_by_check(raw_params, edit, expected):
    edit(raw_params)
    with pytest.raises(config.ConfigError) as info:
        config.validate(raw_params)
    assert expected in str(info.value) and "\n" not in str(info.value)


def changed_variants(before: config.Params, after: config.Params) -> list[tuple[str, str]]:
    """(experiment, variant) whose resolved settings differ between two params (or that only `after` has)."""
    out = []
    for exp in after.experiments:
        for v in after.variants(exp):
            old = before.settings(exp, v).model_dump() if exp in before.experiments and v in before.variants(exp) \
                else None
            if old != after.settings(exp, v).model_dump():
                out.append((exp, v))
    return out


@pytest.mark.slow
def test_accepted_mutations_do_not_crash_the_stages_they_change(raw_params, tmp_path):
    """Every accepted mutation's changed smoke variants train one seed (after their tuning job) on data prepared
    under the mutated params: an accepted value must not crash a stage. PIPELINE_FUZZ_DEEP mutations (default 40),
    and more (up to 5x) until at least MIN_DEEP_RUNS variant runs have trained: most mutations are refused or change
    no smoke variant, so the count a fixed seed reaches would otherwise move with every key added to params.yaml."""
    from pipeline.data.stages import prepare_dataset, write_subsets
    from pipeline.train.jobs import Inputs, Job

    rng, base = random.Random(7), config.validate(raw_params)
    trained = 0
    mutations, i = int(os.environ.get("PIPELINE_FUZZ_DEEP", "40")), -1
    while (i := i + 1) < mutations or (trained < MIN_DEEP_RUNS and i < 5 * mutations):
        raw, what = mutate(raw_params, rng)
        try:
            params = config.validate(raw)
        except config.ConfigError:
            continue
        work = tmp_path / f"m{i}"
        datasets = sorted({d for e, v in changed_variants(base, params) for d, _ in params.data_of(e, v)})
        for d in datasets:
            prepare_dataset(params, d, work / "prepared" / d)
            if params.data.datasets[d].subsets:
                write_subsets(params, d, work / "prepared" / d, work / "subsets" / d)
        for exp, variant in changed_variants(base, params):
            inputs = Inputs.from_paths(data=[work / "prepared" / d for d, _ in params.data_of(exp, variant)],
                                       subsets=[work / "subsets" / d for d, _ in params.data_of(exp, variant)
                                                if params.data.datasets[d].subsets])
            module = params.experiment(exp)
            if (job := params.tuning_of(exp, variant)) is not None:
                out = work / "tuning" / f"{job}.json"
                if not out.exists():
                    module.module("tune").tune(Job(params, exp, job, None, inputs, out.with_suffix(""),
                                                   work / "ckpt"), out)
                inputs = Inputs(inputs.data, inputs.subsets, {job: out})
            module.module("train").train(Job(params, exp, variant, params.seeds[0], inputs,
                                             work / "runs" / exp / variant, work / "ckpt"))
            trained += 1
        # any exception above (a crash, or a one-line error after `check` accepted the value) fails: `what` says which
    print(f"deep fuzz: {trained} variant runs trained for the accepted mutations of {i} drawn")
    assert trained >= min(MIN_DEEP_RUNS, mutations)


@pytest.mark.slow
def test_accepted_mutations_plan_every_profile_without_crashing(raw_params):
    """The quick and paper profiles cannot be trained here (real data, GPU-hours), so their accepted mutations go
    as far as this machine can take them: the DAG both orchestrators run, dvc.yaml, every variant's resolved
    settings file, and the cost plan, which builds every model at its real size to count its FLOPs.
    PIPELINE_FUZZ_PLANS mutations (default 120)."""
    from pipeline import dag, dvcfile, plan, resolved

    rng = random.Random(11)
    planned = 0
    for _ in range(int(os.environ.get("PIPELINE_FUZZ_PLANS", "120"))):
        raw, what = mutate(raw_params, rng)
        try:
            config.validate(raw)
        except config.ConfigError:
            continue
        for profile in ("quick", "paper"):
            params = config.validate(raw, profile)
            assert dag.stages(params) and dvcfile.dvc_yaml(params)["stages"], what
            for exp in params.experiments:
                for variant in params.variants(exp):
                    resolved.planned(params, exp, variant)
            rows = plan.estimate(params)
            assert all(r.train_flops >= 0 for r in rows), what
            planned += 1
        # any exception above fails the test; `what` names the mutation
    print(f"deep fuzz: {planned} quick/paper plans made for the accepted mutations")
    assert planned > 0
