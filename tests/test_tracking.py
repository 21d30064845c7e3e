"""MLflow sync: every run exactly once, also when 16 jobs sync at the same time; a rerun adds nothing; a run looks
like the training run it records (its own times, named metrics, seeds nested under a parent per variant); the
sqlite store's folder can move."""
from __future__ import annotations

import csv
import json
import os
import shutil
import statistics
import subprocess
import sys

import pytest
import torch

from pipeline import config, tracking
from pipeline.train.engine import Run, RunSpec

SYNC_ONE = """
import sys
from pathlib import Path
from pipeline.tracking import sync_runs
uri, run_dir = sys.argv[1], Path(sys.argv[2])
sync_runs(uri, "concurrency", [(f"concurrency/{run_dir.parent.name}/{run_dir.name}", run_dir)])
"""
T0 = 1_700_000_000.0  # the fake runs' start (unix s); seed k starts k seconds later and runs 60 s


def fake_run(root, variant, seed, final=0.5, profile="smoke", times=True):
    """A run folder as the engine writes it; times=False: as written before it recorded wall-clock times."""
    d = root / variant / f"seed{seed}"
    d.mkdir(parents=True, exist_ok=True)
    metrics = {"experiment": "concurrency", "variant": variant, "seed": seed, "profile": profile, "method": variant,
               "dataset": "toy", "subset": None, "metric": "test_acc", "mode": "max", "final": final, "best": final,
               "best_epoch": 2, "epochs_to_target": 2, "seconds_to_target": 1.0, "train_seconds": 1.0,
               "train_flops": 4.0e9, "distinct_samples": 100, "diverged": False, "epochs": 2,
               "extra": {"kept": 0.5, "policy": "fixed"}}
    columns, rows = "epoch,train_loss,test_acc,elapsed_seconds", ["1,2.0,0.3,0.5", f"2,1.5,{final},1.0"]
    if times:
        metrics.update(started_at=T0 + seed, ended_at=T0 + seed + 60.0)
        columns, rows = columns + ",time", [f"{rows[0]},{T0 + seed + 30.0}", f"{rows[1]},{T0 + seed + 59.5}"]
    (d / "metrics.json").write_text(json.dumps(metrics))
    (d / "history.csv").write_text("\n".join([columns, *rows]) + "\n")
    (d / "config.json").write_text(json.dumps({"run": {"config": {"lr": 0.1, "model": {"depth": 20}}},
                                               "config_hash": f"hash{seed}", "environment": {"git_commit": "abc"}}))
    return d


def runs_in(uri, experiment, parents=False):
    """The live seed runs of an experiment (parents=True: its variants' parent runs instead)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000) if exp else []
    return [r for r in runs if ("harness.parent_key" in r.data.tags) == parents]


def sync(tmp_path, raw_params, monkeypatch, runs="runs", store="."):
    uri = f"sqlite:///{tmp_path / store / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri, tracking.sync_experiment(config.validate(raw_params), "concurrency", tmp_path / runs,
                                         tmp_path / "receipt.json")


@pytest.mark.slow  # 16 processes that each import MLflow: ~30-60 s on 2 cores (make test-all, CI)
def test_sixteen_concurrent_jobs_each_appear_exactly_once(tmp_path, root):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    dirs = [fake_run(tmp_path / "runs", f"v{i % 4}", i) for i in range(16)]
    procs = [subprocess.Popen([sys.executable, "-c", SYNC_ONE, uri, str(d)], cwd=root) for d in dirs]
    assert [p.wait(timeout=300) for p in procs] == [0] * 16
    runs = runs_in(uri, "concurrency")
    keys = sorted(r.data.tags["harness.run_key"] for r in runs)
    assert keys == sorted(f"concurrency/{d.parent.name}/{d.name}" for d in dirs)  # sync_runs takes keys as given
    one = next(r for r in runs if r.data.tags["harness.run_key"].endswith("v1/seed5"))
    assert one.data.params["model.depth"] == "20" and one.data.tags["seed"] == "5"
    assert one.data.metrics["test_acc"] == 0.5
    parents = runs_in(uri, "concurrency", parents=True)  # one per variant, over the 4 seeds 4 processes synced
    assert sorted((p.data.tags["variant"], p.data.metrics["seeds"]) for p in parents) == [(f"v{i}", 4) for i in range(4)]
    variant_of = {p.info.run_id: p.data.tags["variant"] for p in parents}
    assert all(variant_of[r.data.tags["mlflow.parentRunId"]] == r.data.tags["variant"] for r in runs)


def test_rerun_adds_nothing_and_changed_files_replace_the_run(tmp_path, raw_params, monkeypatch):
    for seed in range(3):
        fake_run(tmp_path / "runs", "a", seed)
    uri, first = sync(tmp_path, raw_params, monkeypatch)
    parent = runs_in(uri, "concurrency", parents=True)
    _, again = sync(tmp_path, raw_params, monkeypatch)
    assert [r["run_id"] for r in again] == [r["run_id"] for r in first] and not any(r["new"] for r in again)
    assert len(runs_in(uri, "concurrency")) == 3
    assert [p.info.run_id for p in runs_in(uri, "concurrency", parents=True)] == [parent[0].info.run_id]
    assert json.loads((tmp_path / "receipt.json").read_text())["parents"][0]["new"] is False
    fake_run(tmp_path / "runs", "a", 1, final=0.9)
    _, third = sync(tmp_path, raw_params, monkeypatch)
    assert [r["new"] for r in third] == [False, True, False]
    runs = runs_in(uri, "concurrency")
    assert len(runs) == 3
    assert json.loads((tmp_path / "receipt.json").read_text())["runs"][1]["run_id"] == third[1]["run_id"]
    assert third[1]["run_key"] == "smoke/concurrency/a/seed1"
    (new_parent,) = runs_in(uri, "concurrency", parents=True)  # the old parent replaced, every seed moved under it
    assert new_parent.info.run_id != parent[0].info.run_id
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {new_parent.info.run_id}
    assert new_parent.data.metrics["test_acc_mean"] == pytest.approx((0.5 + 0.9 + 0.5) / 3)


def test_a_run_looks_like_the_training_run(tmp_path, raw_params, monkeypatch):
    """Its own start and end, each epoch at its own time and step, metrics under their names, who it is as params
    and tags, and an experiment MLflow 3 treats as model training."""
    from mlflow.tracking import MlflowClient

    fake_run(tmp_path / "runs", "a", 3, final=0.75)
    uri, (row,) = sync(tmp_path, raw_params, monkeypatch)
    client = MlflowClient(uri)
    run = client.get_run(row["run_id"])
    assert (run.info.start_time, run.info.end_time) == (int((T0 + 3) * 1000), int((T0 + 63) * 1000))
    assert run.info.status == "FINISHED"
    curve = sorted((m.step, m.timestamp, m.value) for m in client.get_metric_history(row["run_id"], "test_acc"))
    assert curve == [(1, int((T0 + 33) * 1000), 0.3), (2, int((T0 + 62.5) * 1000), 0.75)]
    metrics = run.data.metrics
    assert metrics["test_acc"] == 0.75 and metrics["best_test_acc"] == 0.75 and metrics["train_flops"] == 4.0e9
    assert {"epochs_to_target", "seconds_to_target", "train_seconds", "best_epoch", "kept", "train_loss"} <= set(metrics)
    assert not [k for k in metrics if k.startswith("final") or k in ("seed", "time", "epoch")]
    assert {k: run.data.params[k] for k in ("seed", "variant", "method", "dataset", "profile", "extra.policy")} == \
        {"seed": "3", "variant": "a", "method": "a", "dataset": "toy", "profile": "smoke", "extra.policy": "fixed"}
    assert run.data.tags["seed"] == "3" and run.data.tags["variant"] == "a"
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_run_folders_without_wall_clock_times_still_sync(tmp_path, raw_params, monkeypatch):
    """Written before the engine recorded times: the end is metrics.json's mtime, the start that minus the training
    seconds, an epoch the start plus its training seconds so far."""
    from mlflow.tracking import MlflowClient

    d = fake_run(tmp_path / "runs", "a", 0, times=False)
    os.utime(d / "metrics.json", (T0 + 100, T0 + 100))
    uri, (row,) = sync(tmp_path, raw_params, monkeypatch)
    client = MlflowClient(uri)
    run = client.get_run(row["run_id"])
    assert (run.info.start_time, run.info.end_time) == (int((T0 + 99) * 1000), int((T0 + 100) * 1000))
    stamps = sorted((m.step, m.timestamp) for m in client.get_metric_history(row["run_id"], "train_loss"))
    assert stamps == [(1, int((T0 + 99.5) * 1000)), (2, int((T0 + 100) * 1000))]


def test_a_parent_per_variant_carries_its_seeds_mean_and_std(tmp_path, raw_params, monkeypatch):
    finals = {"a": [0.5, 0.6, 0.8], "b": [0.4, 0.4]}
    for variant, values in finals.items():
        for seed, final in enumerate(values):
            fake_run(tmp_path / "runs", variant, seed, final=final)
    uri, rows = sync(tmp_path, raw_params, monkeypatch)
    parents = {p.data.tags["variant"]: p for p in runs_in(uri, "concurrency", parents=True)}
    assert sorted(parents) == ["a", "b"]
    for variant, values in finals.items():
        p = parents[variant]
        assert p.data.metrics["test_acc_mean"] == pytest.approx(statistics.fmean(values))
        assert p.data.metrics["test_acc_std"] == pytest.approx(statistics.stdev(values))
        assert p.data.metrics["seeds"] == len(values) and p.data.metrics["seeds_diverged"] == 0
        assert (p.info.start_time, p.info.end_time) == (int(T0 * 1000), int((T0 + len(values) - 1 + 60) * 1000))
        assert p.data.params["model.depth"] == "20" and "seed" not in p.data.params  # what the seeds share
        assert p.data.tags["mlflow.runName"] == f"{variant} [smoke]"
    for r in runs_in(uri, "concurrency"):
        assert r.data.tags["mlflow.parentRunId"] == parents[r.data.tags["variant"]].info.run_id


def test_the_sqlite_store_folder_can_move(tmp_path, raw_params, monkeypatch):
    """No absolute path in the database: artifacts are `mlflow-artifacts:` URIs resolved against mlartifacts/ beside
    the store (what `mlflow ui` started there serves; tests/test_tracking_server.py reads them through a server)."""
    from mlflow.tracking import MlflowClient

    fake_run(tmp_path / "runs", "a", 0)
    (tmp_path / "repo").mkdir()
    uri, (row,) = sync(tmp_path, raw_params, monkeypatch, store="repo")
    assert str(tmp_path).encode() not in (tmp_path / "repo" / "mlflow.db").read_bytes()
    shutil.move(tmp_path / "repo", tmp_path / "moved")
    moved = f"sqlite:///{tmp_path / 'moved' / 'mlflow.db'}"
    run = MlflowClient(moved).get_run(row["run_id"])
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/concurrency/")
    folder = tracking.local_artifact_dir(moved, run.info.artifact_uri)
    assert folder.is_relative_to(tmp_path / "moved" / "mlartifacts")
    assert (folder / "metrics.json").read_bytes() == (tmp_path / "runs" / "a" / "seed0" / "metrics.json").read_bytes()


def test_another_profile_adds_runs_and_keeps_the_old_ones(tmp_path, raw_params, monkeypatch):
    """results/runs holds one profile at a time; MLflow keeps every profile's runs side by side."""
    for seed in range(2):
        fake_run(tmp_path / "runs", "a", seed, final=0.5)
    uri, smoke = sync(tmp_path, raw_params, monkeypatch)
    for seed in range(2):  # the same cells rerun on the quick profile overwrite the run files
        fake_run(tmp_path / "runs", "a", seed, final=0.8, profile="quick")
    _, quick = sync(tmp_path, raw_params, monkeypatch)
    assert all(r["new"] for r in quick) and {r["run_id"] for r in quick}.isdisjoint(r["run_id"] for r in smoke)
    runs = runs_in(uri, "concurrency")
    by_profile = {p: sorted(r.data.metrics["test_acc"] for r in runs if r.data.tags["profile"] == p)
                  for p in ("smoke", "quick")}
    assert by_profile == {"smoke": [0.5, 0.5], "quick": [0.8, 0.8]}
    assert sorted(p.data.tags["profile"] for p in runs_in(uri, "concurrency", parents=True)) == ["quick", "smoke"]


def test_a_sync_killed_midway_is_replaced_by_the_next(tmp_path, raw_params, monkeypatch):
    """A sync that dies while logging a run (here: its artifacts) leaves a half-logged MLflow run; the next sync
    must not take it for the finished one but replace it with a complete run."""
    from mlflow.tracking import MlflowClient

    fake_run(tmp_path / "runs", "a", 0)
    real = tracking._store_artifacts
    monkeypatch.setattr(tracking, "_store_artifacts", lambda *a, **k: (_ for _ in ()).throw(OSError("killed")))
    with pytest.raises(OSError, match="killed"):
        sync(tmp_path, raw_params, monkeypatch)
    monkeypatch.setattr(tracking, "_store_artifacts", real)
    uri, again = sync(tmp_path, raw_params, monkeypatch)
    assert again[0]["new"] is True
    runs = runs_in(uri, "concurrency")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED" and runs[0].info.run_id == again[0]["run_id"]
    folder = tracking.local_artifact_dir(uri, MlflowClient(uri).get_run(again[0]["run_id"]).info.artifact_uri)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "history.csv", "metrics.json"]


def test_incomplete_run_is_named(tmp_path, raw_params):
    from pipeline.tracking import TrackingError, run_dirs

    d = fake_run(tmp_path / "runs", "a", 0)
    (d / "history.csv").unlink()
    with pytest.raises(TrackingError, match="seed0: incomplete run, missing history.csv"):
        run_dirs(tmp_path / "runs")


def test_mlflow_holds_one_run_per_cell_of_the_grid(tmp_path, raw_params, monkeypatch):
    """Every (experiment, variant, seed) of params.yaml's grid becomes exactly one MLflow run (one seed here)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    raw_params["seeds"] = [0]
    params = config.validate(raw_params)
    from pipeline.tracking import sync_experiment

    expected = 0
    for experiment in params.experiments:
        for variant in params.variants(experiment):
            d = fake_run(tmp_path / "runs" / experiment, variant, 0)
            metrics = json.loads((d / "metrics.json").read_text())
            (d / "metrics.json").write_text(json.dumps({**metrics, "experiment": experiment}))
            expected += 1
        sync_experiment(params, experiment, tmp_path / "runs" / experiment, tmp_path / f"{experiment}.json")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    ids = [client.get_experiment_by_name(e).experiment_id for e in params.experiments]
    runs = [r for r in client.search_runs(ids, max_results=5000) if "harness.run_key" in r.data.tags]
    assert len(runs) == expected == sum(len(params.variants(e)) for e in params.experiments)
    assert len({r.data.tags["harness.run_key"] for r in runs}) == expected


def test_the_engine_records_wall_clock_times_and_a_resume_keeps_the_start(tmp_path):
    """metrics.json: started_at <= every epoch's `time` in history.csv <= ended_at (unix s); a run resumed from its
    checkpoint keeps the first start."""
    spec = RunSpec(experiment="unit", variant="tiny", seed=0, profile="smoke", method="m", dataset="toy", subset=None,
                   metric="test_acc", mode="max", target={"metric": "test_acc", "value": 0.5, "mode": "max"})
    run = Run(spec, tmp_path / "run", tmp_path / "ckpt", torch.device("cpu"), log=lambda s: None)
    run.end_epoch({"test_acc": 0.25}, {})
    first_start = run.started_at
    resumed = Run(spec, tmp_path / "run", tmp_path / "ckpt", torch.device("cpu"), log=lambda s: None)
    resumed.started_at += 5.0  # a later process
    resumed.resume({})
    resumed.end_epoch({"test_acc": 0.5}, {}, done=True)
    metrics = resumed.finish({})
    times = [float(r["time"]) for r in csv.DictReader(open(tmp_path / "run" / "history.csv"))]
    assert metrics["started_at"] == round(first_start, 3)
    assert metrics["started_at"] <= times[0] <= times[1] <= metrics["ended_at"]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == metrics
