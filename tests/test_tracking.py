"""MLflow sync: every run exactly once, also when 16 jobs sync at the same time; a rerun adds nothing."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pipeline import config

SYNC_ONE = """
import sys
from pathlib import Path
from pipeline.tracking import sync_runs
uri, run_dir = sys.argv[1], Path(sys.argv[2])
sync_runs(uri, "concurrency", [(f"concurrency/{run_dir.parent.name}/{run_dir.name}", run_dir)])
"""


def fake_run(root, variant, seed, final=0.5, profile="smoke"):
    d = root / variant / f"seed{seed}"
    d.mkdir(parents=True, exist_ok=True)
    metrics = {"experiment": "concurrency", "variant": variant, "seed": seed, "profile": profile, "method": variant,
               "dataset": "toy", "subset": None, "metric": "test_acc", "mode": "max", "final": final, "best": final,
               "diverged": False, "train_seconds": 1.0, "extra": {"kept": 0.5}}
    (d / "metrics.json").write_text(json.dumps(metrics))
    (d / "history.csv").write_text("epoch,train_loss,test_acc\n1,2.0,0.3\n2,1.5,%s\n" % final)
    (d / "config.json").write_text(json.dumps({"run": {"config": {"lr": 0.1, "model": {"depth": 20}}},
                                               "environment": {"git_commit": "abc"}}))
    return d


def runs_in(uri, experiment):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], max_results=1000) if exp else []


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


def test_rerun_adds_nothing_and_changed_files_replace_the_run(tmp_path, raw_params, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    params = config.validate(raw_params)
    from pipeline.tracking import sync_experiment

    for seed in range(3):
        fake_run(tmp_path / "runs", "a", seed)
    first = sync_experiment(params, "concurrency", tmp_path / "runs", tmp_path / "receipt.json")
    again = sync_experiment(params, "concurrency", tmp_path / "runs", tmp_path / "receipt.json")
    assert [r["run_id"] for r in again] == [r["run_id"] for r in first] and not any(r["new"] for r in again)
    assert len(runs_in(params.tracking.uri or f"sqlite:///{tmp_path / 'mlflow.db'}", "concurrency")) == 3
    (tmp_path / "runs" / "a" / "seed1" / "history.csv").write_text("epoch,train_loss,test_acc\n1,2.0,0.9\n")
    third = sync_experiment(params, "concurrency", tmp_path / "runs", tmp_path / "receipt.json")
    assert [r["new"] for r in third] == [False, True, False]
    runs = runs_in(f"sqlite:///{tmp_path / 'mlflow.db'}", "concurrency")
    assert len(runs) == 3
    assert json.loads((tmp_path / "receipt.json").read_text())["runs"][1]["run_id"] == third[1]["run_id"]
    assert third[1]["run_key"] == "smoke/concurrency/a/seed1"


def test_another_profile_adds_runs_and_keeps_the_old_ones(tmp_path, raw_params, monkeypatch):
    """results/runs holds one profile at a time; MLflow keeps every profile's runs side by side."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    params = config.validate(raw_params)
    from pipeline.tracking import sync_experiment

    for seed in range(2):
        fake_run(tmp_path / "runs", "a", seed, final=0.5)
    smoke = sync_experiment(params, "concurrency", tmp_path / "runs", tmp_path / "receipt.json")
    for seed in range(2):  # the same cells rerun on the quick profile overwrite the run files
        fake_run(tmp_path / "runs", "a", seed, final=0.8, profile="quick")
    quick = sync_experiment(params, "concurrency", tmp_path / "runs", tmp_path / "receipt.json")
    assert all(r["new"] for r in quick) and {r["run_id"] for r in quick}.isdisjoint(r["run_id"] for r in smoke)
    runs = runs_in(uri, "concurrency")
    by_profile = {p: sorted(r.data.metrics["test_acc"] for r in runs if r.data.tags["profile"] == p)
                  for p in ("smoke", "quick")}
    assert by_profile == {"smoke": [0.5, 0.5], "quick": [0.8, 0.8]}


def test_a_sync_killed_midway_is_replaced_by_the_next(tmp_path, raw_params, monkeypatch):
    """A sync that dies while logging a run (here: its artifacts) leaves a half-logged MLflow run; the next sync
    must not take it for the finished one but replace it with a complete run."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    params = config.validate(raw_params)
    from mlflow.tracking import MlflowClient
    from pipeline.tracking import sync_experiment

    fake_run(tmp_path / "runs", "a", 0)
    real = MlflowClient.log_artifact
    monkeypatch.setattr(MlflowClient, "log_artifact", lambda *a, **k: (_ for _ in ()).throw(OSError("killed")))
    with pytest.raises(OSError, match="killed"):
        sync_experiment(params, "concurrency", tmp_path / "runs", tmp_path / "receipt.json")
    monkeypatch.setattr(MlflowClient, "log_artifact", real)
    again = sync_experiment(params, "concurrency", tmp_path / "runs", tmp_path / "receipt.json")
    assert again[0]["new"] is True
    runs = runs_in(uri, "concurrency")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED" and runs[0].info.run_id == again[0]["run_id"]
    assert len(MlflowClient(uri).list_artifacts(again[0]["run_id"])) == 3


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
    runs = client.search_runs(ids, max_results=5000)
    assert len(runs) == expected == sum(len(params.variants(e)) for e in params.experiments)
    assert len({r.data.tags["harness.run_key"] for r in runs}) == expected
