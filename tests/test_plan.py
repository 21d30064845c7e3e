"""The cost plan (pipeline/plan.py, `python -m pipeline plan`): its jobs are the DAG's, its FLOPs are the ones real
runs record, its GPU-hours and wall-clock scale as stated, and a bad device or a plug-in without a cost hook is
handled in one line.

The FLOP checks prepare the smoke profile's synthetic data with the pipeline's own stages (so the sizes the plan
reads from params are the sizes the runs train on) and train one tiny variant of each experiment in process."""
from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pipeline import config, dag, plan
from pipeline.data.stages import prepare_dataset, write_subsets
from pipeline.experiments.optimizers.cost import held_out
from pipeline.experiments.optimizers.tune import validation_split
from pipeline.train.jobs import Inputs, Job

ROOT = Path(__file__).resolve().parents[1]


def smoke(raw: dict, tmp: Path) -> dict:
    """The smoke profile, one seed, data under tmp, each experiment cut to a few seconds of training."""
    raw = copy.deepcopy(raw)
    raw.update(seeds=[0], profile="smoke")
    raw["data"]["root"] = str(tmp / "data")
    raw["block_size"]["profiles"]["smoke"]["train"].update(train_tokens=4000)
    raw["growth"]["profiles"]["smoke"]["train"].update(epochs=4, samples_per_epoch=100, batch_size=16)
    raw["growth"]["profiles"]["smoke"]["schedule"]["num_growths"] = 3
    raw["edba"]["profiles"]["smoke"]["edba"]["window"] = 1000  # the batch never changes: drawn = the baseline's
    return raw


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """(params, {dataset: prepared folder}, subsets folder of cifar10), written by the pipeline's stages."""
    tmp = tmp_path_factory.mktemp("plan")
    p = config.validate(smoke(yaml.safe_load((ROOT / "params.yaml").read_text()), tmp), base=ROOT)
    folders = {d: p.prepared_dir(d) for d in ("ptb", "cifar10")}
    for d, folder in folders.items():
        prepare_dataset(p, d, folder)
    write_subsets(p, "cifar10", folders["cifar10"], p.subsets_dir("cifar10"))
    return p, folders, p.subsets_dir("cifar10")


def run(prepared, tmp_path, experiment: str, variant: str) -> dict:
    p, folders, subsets = prepared
    inputs = Inputs.from_paths(data=list(folders.values()), subsets=[subsets])
    job = Job(p, experiment, variant, 0, inputs, tmp_path / variant, tmp_path / "ckpt", torch.device("cpu"))
    return p.experiment(experiment).module("train").train(job)


def cost(p, experiment: str, variant: str, kind: str = "train") -> plan.Cost:
    return p.experiment(experiment).cost(p.settings(experiment, variant), plan.data_sizes(p), kind)


# ---- the jobs are the DAG's ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("profile", ["smoke", "paper"])
def test_jobs_are_the_dags_training_and_tuning_stages(raw_params, profile):
    p = config.validate(raw_params, profile, base=ROOT)
    rows = {(r.experiment, r.kind): r for r in plan.estimate(p)}
    stages = [(s.name, s.cmd.split()) for s in dag.stages(p)]
    count = lambda kind, exp: sum(name.startswith(f"{kind}_") and cmd[4] == exp for name, cmd in stages)
    for exp in p.experiments:
        assert rows[exp, "train"].jobs == count("train", exp) > 0
        assert rows[exp, "train"].runs == len(p.variants(exp)) * len(p.seeds)  # whatever the seeds per job
        assert (rows[exp, "tune"].jobs if count("tune", exp) else 0) == count("tune", exp)
    assert all(not r.missing for r in rows.values())  # every built-in experiment has an estimate for each job


# ---- the FLOPs are the ones a run records ----------------------------------------------------------------------------
@pytest.mark.parametrize("experiment, variant", [("block_size", "doubling"), ("growth", "grow_vt_lr-cifar10"),
                                                 ("growth", "fixed_small-cifar10"), ("edba", "baseline-cifar10-p10")])
def test_a_runs_recorded_flops_are_the_plans(prepared, tmp_path, experiment, variant):
    metrics = run(prepared, tmp_path, experiment, variant)
    assert metrics["train_flops"] == cost(prepared[0], experiment, variant).train_flops


def test_edba_is_planned_as_if_every_sample_were_kept(prepared, tmp_path):
    """Two-pass EDBA costs 1 selection + 3 training passes per kept sample: the plan counts all as kept (4/3 of the
    baseline), a run records between that and 1 + 3 x the smallest candidate fraction."""
    p = prepared[0]
    planned, baseline = cost(p, "edba", "edba-cifar10-p10"), cost(p, "edba", "baseline-cifar10-p10")
    assert 3 * planned.train_flops == 4 * baseline.train_flops
    recorded = run(prepared, tmp_path, "edba", "edba-cifar10-p10")["train_flops"]
    smallest = p.settings("edba", "edba-cifar10-p10").edba.min_subset_frac
    assert (1 + 3 * smallest) / 4 * planned.train_flops <= recorded <= planned.train_flops


def test_the_tuning_split_is_the_tune_stages(prepared):
    labels = np.random.default_rng(0).permutation(np.r_[np.repeat(np.arange(7), 37), np.repeat([7, 8, 9], 36)])
    fit, validation = validation_split(labels, 0.1, seed=0)  # a class-balanced 367: 7 classes of 37, 3 of 36
    assert held_out(367, 10, 0.1) == len(validation) == 40
    planned = cost(prepared[0], "optimizers", "momentum", "tune")
    assert planned.runs == prepared[0].settings("optimizers", "momentum").tuning.points and planned.train_flops > 0


def test_the_papers_reading_is_cheaper_only_where_the_project_chose_more(raw_params):
    p = config.validate(raw_params, "paper", base=ROOT)
    rows = {(r.experiment, r.kind): r for r in plan.estimate(p)}
    assert rows["edba", "train"].paper_flops < rows["edba", "train"].train_flops  # 50,000 samples per subset epoch
    assert all(r.paper_flops == r.train_flops for k, r in rows.items() if k[0] != "edba")


# ---- throughput and wall-clock ------------------------------------------------------------------------------------
def test_gpu_hours_scale_as_one_over_efficiency_and_wall_clock_as_one_over_gpus():
    assert plan.throughput("h100", "fp32", 0.2) == pytest.approx(2 * plan.throughput("h100", "fp32", 0.1))
    assert plan.throughput("a100", "bf16", 1.0) == 312e12
    jobs = [3600.0] * 12
    assert plan.wall_clock(jobs, 1, 1) == pytest.approx(12 * 3600)
    for gpus in (2, 3, 4, 6, 12):
        assert plan.wall_clock(jobs, gpus, 1) == pytest.approx(12 * 3600 / gpus)
    assert plan.wall_clock(jobs, 2, 2) == pytest.approx(plan.wall_clock(jobs, 2, 1))  # sharing adds no throughput
    assert plan.wall_clock([5.0, 1.0, 1.0], 4, 1) == 5.0  # the longest job bounds it


def test_the_printed_plan_follows_the_options(raw_params):
    p = config.validate(raw_params, "paper", base=ROOT)
    rows = plan.estimate(p)
    text = plan.render(p, rows, plan.throughput("h100", "fp32", 0.1), "h100", gpus=1)
    faster = plan.render(p, rows, plan.throughput("h100", "fp32", 0.2), "h100", gpus=4)
    total = lambda t: float(next(l for l in t.splitlines() if l.startswith("total")).split()[-1].replace(",", ""))
    assert total(text) == pytest.approx(2 * total(faster), rel=0.01)
    for exp in p.experiments:
        assert any(line.startswith(exp) for line in text.splitlines())
    assert "under the papers' reading" in text and "one job per seed" in text


def pipeline_cli(*args, cwd=ROOT) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PIPELINE_PROFILE"}
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, cwd=cwd, env=env)


@pytest.mark.parametrize("args, message", [(["--device", "b200"], "--device b200: unknown accelerator; known: h100"),
                                           (["--device", "v100", "--precision", "bf16"], "no published bf16 peak"),
                                           (["--efficiency", "0"], "--efficiency 0.0: a fraction of peak")])
def test_a_bad_option_is_one_line(args, message):
    out = pipeline_cli("plan", *args)
    assert out.returncode == 2 and message in out.stderr and len(out.stderr.strip().splitlines()) == 1


# ---- a plug-in without the hook --------------------------------------------------------------------------------------
TOY = {
    "__init__.py": """
        from pipeline.registry import Experiment
        from pipeline.schemas.base import IMAGE_KINDS, PositiveFloat, Strict, Target


        class Settings(Strict):
            dataset: str
            subset: str
            target: Target
            lr: PositiveFloat


        EXPERIMENT = Experiment(name="toy", settings=Settings, data_kinds=IMAGE_KINDS)
        """,
}


@pytest.fixture
def toy(tmp_path):
    folder = tmp_path / "toy"
    folder.mkdir()
    for name, text in TOY.items():
        (folder / name).write_text(textwrap.dedent(text).lstrip())
    yield folder
    for name in [m for m in sys.modules if m == "toy" or m.startswith("toy.")]:
        del sys.modules[name]


def test_a_plugin_without_a_cost_hook_shows_n_a(raw_params, toy):
    raw = {**raw_params, "plugins": [str(toy)], "toy": {
        "target": {"metric": "test_acc", "value": 0.2, "mode": "max"}, "lr": 0.1, "dataset": "cifar10",
        "variants": {"a": {"subset": "n100"}, "b": {"subset": "p10"}}}}
    p = config.validate(raw, "smoke", base=ROOT)
    rows = {r.experiment: r for r in plan.estimate(p)}
    assert rows["toy"].missing == rows["toy"].jobs == 2 and rows["toy"].job_flops == []
    text = plan.render(p, list(rows.values()), 1e12, "test")
    toy_line = next(line for line in text.splitlines() if line.startswith("toy"))
    assert toy_line.split()[3:] == ["n/a", "n/a", "n/a"]
    assert "2 job(s) have no estimate" in text


def test_calibration_times_a_real_step_of_every_experiment(raw_params):
    p = config.validate(raw_params, "smoke", base=ROOT)
    first = plan.calibrate(p, repeats=1)
    assert first.probe.startswith(f"{p.experiments[0]}/{p.variants(p.experiments[0])[0]} on cpu")
    for exp in p.experiments:
        c = plan.calibrate(p, exp, repeats=1)
        assert c.flops_per_s > 0 and c.flops_per_step == cost(p, exp, p.variants(exp)[0], "step").train_flops
