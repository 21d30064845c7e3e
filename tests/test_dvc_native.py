"""DVC's and Snakemake's own verbs: per-variant settings files (one edit reruns one variant, the changed keys
printed), metrics and curves for `dvc metrics`/`dvc plots`, Snakemake's benchmark files in the report, and DVC
running a real grid end to end."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import yaml

from pipeline import config, dag, dvcfile, resolved
from pipeline.analysis import dvc_outputs
from pipeline.report.benchmarks import job_costs


def test_changes_name_each_key_that_differs():
    recorded = {"train": {"epochs": 2, "lr": 0.1}, "model": {"widths": [4, 8]}, "lr": 0.3}
    now = {"train": {"epochs": 3, "lr": 0.1}, "model": {"widths": [4, 8]}, "speed": {"autocast": "fp32"}}
    assert resolved.changes(recorded, now) == ['train.epochs 2 -> 3', 'speed.autocast (new) "fp32"']
    assert resolved.changes(now, now) == []


def edited(raw: dict) -> dict:
    raw = copy.deepcopy(raw)
    raw["optimizers"]["variants"]["sgd"] = {**raw["optimizers"]["variants"]["sgd"], "model": {"dropout": 0.1}}
    return raw


def test_one_variants_edit_changes_only_its_settings_and_its_jobs(raw_params):
    before, after = config.validate(raw_params), config.validate(edited(raw_params))
    changed = {f"{e}/{v}" for e in before.experiments for v in before.variants(e)
               if resolved.planned(before, e, v) != resolved.planned(after, e, v)}
    assert changed == {"optimizers/sgd"}
    old, new = dag.fingerprints(before), dag.fingerprints(after)
    rerun = {out for out in old if old[out] != new[out]}
    assert rerun == {"results/settings", "results/tuning/optimizers/sgd.json", "results/runs/optimizers/sgd/seed0"}


def test_settings_files_are_rewritten_only_when_they_change(tmp_path, raw_params):
    params, out, runs = config.validate(raw_params), tmp_path / "settings", tmp_path / "runs"
    assert resolved.write(params, out, runs) == []  # no runs yet: nothing to compare with
    sgd = out / "optimizers" / "sgd.json"
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.json")}
    assert len(stamps) == sum(len(params.variants(e)) for e in params.experiments)
    (out / "optimizers" / "gone.json").write_text("{}")  # a variant no longer in the grid
    seed = runs / "optimizers" / "sgd" / "seed0"
    seed.mkdir(parents=True)
    run_config = {**resolved.planned(params, "optimizers", "sgd"), "lr": 0.3}  # what a job records (+ tuned lr)
    (seed / "config.json").write_text(json.dumps({"run": {"config": run_config}}))
    time.sleep(0.01)
    lines = resolved.write(config.validate(edited(raw_params)), out, runs)
    assert lines == ["optimizers/sgd: model.dropout 0.0 -> 0.1"]
    assert not (out / "optimizers" / "gone.json").exists()
    assert [p for p, t in stamps.items() if p.stat().st_mtime_ns != t] == [sgd]


def test_dvc_yaml_is_short_and_declares_metrics_and_plots(root, raw_params):
    text = (root / "dvc.yaml").read_text()
    assert len(text.splitlines()) < 200
    doc = yaml.safe_load(text)
    assert doc["metrics"] == ["results/analysis/summary", "results/analysis/metrics"]
    params = config.validate(raw_params)
    plotted = {next(iter(p)) for p in doc["plots"]}
    assert plotted == {f"results/analysis/curves/{e}.csv" for e in params.experiments}
    assert doc == dvcfile.dvc_yaml(params)


def tiny_tables():
    final = pl.DataFrame({"experiment": ["e"] * 4, "variant": ["a", "a", "b", "b"], "seed": [0, 1, 0, 1],
                          "final": [0.5, 0.7, 0.2, None], "target_metric": ["test_acc"] * 4})
    summary = pl.DataFrame({"experiment": ["e", "e"], "variant": ["a", "a"], "metric": ["test_acc"] * 2,
                            "quantity": ["final", "train_seconds"], "n_runs": [2, 2], "mean": [0.6, 3.0],
                            "ci_lo": [0.4, 2.0], "ci_hi": [0.8, 4.0]})
    history = pl.DataFrame({"experiment": ["e"] * 6, "variant": ["a", "a", "a", "a", "b", "b"],
                            "seed": [0, 0, 1, 1, 0, 0], "diverged": [False] * 6, "epoch": [1, 2, 1, 2, 1, 2],
                            "test_acc": [0.1, 0.5, 0.3, 0.7, None, 0.2]})
    return final, summary, history


def test_metrics_files_hold_the_mean_its_interval_and_every_seed(tmp_path):
    final, summary, _ = tiny_tables()
    assert dvc_outputs.variant_metrics(summary, final, "e", "a") == {
        "test_acc": 0.6, "test_acc_ci_lo": 0.4, "test_acc_ci_hi": 0.8, "n_runs": 2, "train_seconds": 3.0,
        "seeds": {"0": 0.5, "1": 0.7}}
    written = dvc_outputs.write_metrics(summary, final, tmp_path)
    assert sorted(p.name for p in written) == ["a.json", "b.json"]
    assert json.loads((tmp_path / "metrics" / "e" / "b.json").read_text())["seeds"] == {"0": 0.2, "1": None}


def test_curves_are_the_mean_of_seeds_per_evaluated_epoch():
    final, _, history = tiny_tables()
    table = dvc_outputs.curves(history, final, "e")
    assert table.columns == ["epoch", "a", "b"]
    assert table.to_dicts() == [{"epoch": 1, "a": pytest.approx(0.2), "b": None},
                                {"epoch": 2, "a": pytest.approx(0.6), "b": 0.2}]


def test_benchmark_files_become_runtime_and_memory_per_experiment(tmp_path):
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    folder = tmp_path / "train" / "edba"
    folder.mkdir(parents=True)
    (folder / "a.tsv").write_text(header + "10.0\t0:00:10\t500.5\t900\t400\t450\t0\t1\t90\t9.0\n")
    (folder / "b.tsv").write_text(header + "30.0\t0:00:30\t700.0\t900\t400\t450\t0\t1\t95\t28.0\n")
    (tmp_path / "tune" / "optimizers").mkdir(parents=True)
    (tmp_path / "tune" / "optimizers" / "sgd.tsv").write_text(header + "2.5\t0:00:02\tNA\tNA\tNA\tNA\t0\t0\t0\t2.0\n")
    assert job_costs(tmp_path) == [
        {"rule": "train", "experiment": "edba", "jobs": 2, "wall_s": 40.0, "mean_s": 20.0, "max_s": 30.0,
         "cpu_s": 37.0, "max_rss_mb": 700.0},
        {"rule": "tune", "experiment": "optimizers", "jobs": 1, "wall_s": 2.5, "mean_s": 2.5, "max_s": 2.5,
         "cpu_s": 2.0, "max_rss_mb": None}]
    assert job_costs(tmp_path / "missing") == []


def run(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("PIPELINE_PROFILE", None)
    out = subprocess.run(args, capture_output=True, text=True, cwd=cwd, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout + out.stderr


@pytest.mark.slow
def test_dvc_takes_over_a_snakemake_workspace_and_reruns_one_edited_variant(tmp_path, raw_params, root):
    """A toy grid built by Snakemake; `dvc commit -f` (the README's take-over step) makes `dvc status` clean; an
    edit of one variant then reruns that variant only under `dvc repro`, which prints the key that changed; the
    metrics and plots DVC declares are there for `dvc metrics show` and `dvc plots show`."""
    from test_plugins import toy_params, write_toy

    write_toy(tmp_path / "methods" / "toy")
    work = tmp_path / "work"
    work.mkdir()
    for name in ("Snakefile", "workflow", "envs"):
        (work / name).symlink_to(root / name)
    raw = toy_params(raw_params, "../methods/toy", only_toy=True)
    (work / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    run([sys.executable, "-m", "pipeline", "dvc-yaml"], work)
    run(["git", "init", "-q"], work)
    run([sys.executable, "-m", "dvc", "init", "-q"], work)
    run([sys.executable, "-m", "snakemake", "--cores", "2"], work)
    assert "changed" in run([sys.executable, "-m", "dvc", "status"], work)  # DVC has no record of these runs
    run([sys.executable, "-m", "dvc", "commit", "-f", "-q"], work)
    assert "up to date" in run([sys.executable, "-m", "dvc", "status"], work)
    shown = run([sys.executable, "-m", "dvc", "metrics", "show"], work)
    assert "results/analysis/metrics/toy/fast-cifar10-n100.json" in shown and "test_acc" in shown
    assert "index.html" in run([sys.executable, "-m", "dvc", "plots", "show"], work)

    raw["toy"]["grid"]["axes"]["method"]["fast"] = {"lr": 0.2}
    (work / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    log = run([sys.executable, "-m", "dvc", "repro"], work)
    assert "toy/fast-cifar10-n100: lr 0.1 -> 0.2" in log
    assert "Running stage 'train_toy@fast-cifar10-n100'" in log
    assert "Running stage 'train_toy@slow-cifar10-n100'" not in log


def test_an_experiment_summary_counts_its_runs_and_its_claims_by_verdict():
    final, _, _ = tiny_tables()
    final = final.with_columns(diverged=pl.Series([False, False, False, True]))
    claims = pl.DataFrame({"experiment": ["e"] * 5 + ["other"],
                           "verdict": ["reproduced", "not reproduced", "inconclusive", "inconclusive",
                                       "not comparable (profile smoke)", "reproduced"]})
    assert dvc_outputs.experiment_summary(claims, final, "e") == {
        "runs": 4, "diverged": 1, "claims": 5, "reproduced": 1, "not_reproduced": 1, "inconclusive": 2,
        "not_judged": 1}
