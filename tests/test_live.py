"""Live MLflow logging (pipeline/live.py): a training run's epochs reach the store while it trains, a resumed run
replaces its live run, a store that is down never stops training, and the track stage's sync replaces the live
run with the run it logs from the files. On a sqlite store with PIPELINE_LIVE_TRACKING=on (the real server:
tests/test_tracking_server.py)."""
from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from pipeline import live, tracking
from pipeline.errors import PipelineError
from pipeline.train import engine
from test_growth_experiment import TIMING, params, run  # noqa: F401  (params is a fixture)

VARIANT = "grow_vt_lr-cifar10"


@pytest.fixture
def store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("PIPELINE_LIVE_TRACKING", "on")
    return uri


def live_runs(uri, deleted=False):
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("growth")
    view = ViewType.DELETED_ONLY if deleted else ViewType.ACTIVE_ONLY
    runs = client.search_runs([exp.experiment_id], run_view_type=view) if exp else []
    return [r for r in runs if live.LIVE_TAG in r.data.tags]


def curve(uri, run_id, key):
    from mlflow.tracking import MlflowClient

    return sorted((m.step, m.value, m.timestamp) for m in MlflowClient(uri).get_metric_history(run_id, key))


def rows(tmp_path, name="runs"):
    with open(tmp_path / name / VARIANT / "seed0" / "history.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("mode,uri,on", [("auto", "http://mlflow.example:5000", True), ("auto", "sqlite:///x.db", False),
                                         ("on", "sqlite:///x.db", True), ("off", "https://mlflow.example", False)])
def test_live_logging_is_on_for_a_server_by_default(monkeypatch, mode, uri, on):
    monkeypatch.setenv("PIPELINE_LIVE_TRACKING", mode)
    assert live.enabled(uri) is on
    monkeypatch.setenv("PIPELINE_LIVE_TRACKING", "yes")
    with pytest.raises(PipelineError, match="PIPELINE_LIVE_TRACKING='yes': must be one of auto, on, off"):
        live.enabled(uri)


def test_every_epoch_reaches_the_store_while_the_run_trains(params, tmp_path, store, monkeypatch):
    seen = []  # the live run's epochs, read from the store right after each epoch's end
    real_end_epoch = engine.Run.end_epoch

    def end_epoch_and_look(self, row, objects, done=False):
        real_end_epoch(self, row, objects, done)
        (only,) = live_runs(store)
        seen.append((only.info.status, [s for s, _, _ in curve(store, only.info.run_id, "train_loss")]))

    monkeypatch.setattr(engine.Run, "end_epoch", end_epoch_and_look)
    run(params, tmp_path, VARIANT)
    assert seen == [("RUNNING", [1]), ("RUNNING", [1, 2]), ("RUNNING", [1, 2, 3]), ("RUNNING", [1, 2, 3, 4])]
    (only,) = live_runs(store)
    assert only.info.status == "FINISHED" and only.data.tags[live.LIVE_TAG] == f"smoke/growth/{VARIANT}/seed0"
    recorded = json.loads((tmp_path / "runs" / VARIANT / "seed0" / "config.json").read_text())["run"]["config"]
    assert only.data.params["train.lr"] == str(recorded["train"]["lr"]) and only.data.params["method"] == "grow_vt_lr"
    history = rows(tmp_path)
    assert curve(store, only.info.run_id, "test_acc") == [
        (int(r["epoch"]), pytest.approx(float(r["test_acc"])), round(float(r["time"]) * 1000)) for r in history]
    # the sync logs the run from its files and deletes the live one; a rerun of the sync changes nothing
    for _ in range(2):
        receipt = tracking.sync_runs(store, "growth", [(f"smoke/growth/{VARIANT}/seed0", tmp_path / "runs" / VARIANT / "seed0")])
        assert live_runs(store) == [] and len(live_runs(store, deleted=True)) == 1
    assert receipt["live_replaced"] == 0 and len(receipt["runs"]) == 1 and not receipt["runs"][0]["new"]


def test_a_resumed_run_replaces_its_live_run_and_numbers_do_not_change(params, tmp_path, store, monkeypatch,
                                                                       killed_after):
    monkeypatch.setenv("PIPELINE_LIVE_TRACKING", "off")
    reference = run(params, tmp_path, VARIANT, name="quiet")
    monkeypatch.setenv("PIPELINE_LIVE_TRACKING", "on")
    with killed_after(2):
        run(params, tmp_path, VARIANT)
    (first,) = live_runs(store)
    assert first.info.status == "RUNNING" and [s for s, _, _ in curve(store, first.info.run_id, "test_acc")] == [1, 2]
    resumed = run(params, tmp_path, VARIANT)
    (second,) = live_runs(store)
    assert second.info.run_id != first.info.run_id and second.info.status == "FINISHED"
    assert [s for s, _, _ in curve(store, second.info.run_id, "test_acc")] == [1, 2, 3, 4]  # each epoch once
    assert {k: v for k, v in resumed.items() if k not in TIMING} == {k: v for k, v in reference.items()
                                                                     if k not in TIMING}


def test_a_store_that_is_down_never_stops_training(params, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.delenv("PIPELINE_LIVE_TRACKING", raising=False)  # auto: a server
    metrics = run(params, tmp_path, VARIANT)
    assert metrics["epochs"] == 4 and not metrics["diverged"]
    warnings = [line for line in capsys.readouterr().out.splitlines() if "live MLflow logging" in line]
    assert len(warnings) == 1 and "http://127.0.0.1:9" in warnings[0] and "the track stage will sync" in warnings[0]


def test_a_process_that_dies_marks_its_live_run_killed(tmp_path, root):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    script = (
        "from mlflow.tracking import MlflowClient\n"
        "from pipeline import live, tracking\n"
        f"uri = {uri!r}\n"
        "log = live.LiveLog(uri, lambda c: tracking.experiment_id(c, uri, 'growth'), 'smoke/growth/v/seed0', 'v')\n"
        "log.log([{'epoch': 1, 'train_loss': 2.0, 'time': 1700000000.0}])\n"
        "raise SystemExit('died mid-run')\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True)
    assert done.returncode == 1 and "died mid-run" in done.stderr
    (only,) = live_runs(uri)
    assert only.info.status == "KILLED" and curve(uri, only.info.run_id, "train_loss") == [(1, 2.0, 1700000000000)]


WRITER = """
import sys
from pipeline import live, tracking
uri, seed = sys.argv[1], int(sys.argv[2])
log = live.LiveLog(uri, lambda c: tracking.experiment_id(c, uri, "growth"), f"smoke/growth/v/seed{seed}", "v",
                   lock=tracking.store_lock(uri))
history = []
for epoch in range(1, 21):
    history.append({"epoch": epoch, "train_loss": 1.0 / epoch, "time": 1700000000.0 + epoch})
    log.log(history)
log.close("FINISHED")
"""


@pytest.mark.slow  # four processes that each import MLflow
def test_jobs_logging_live_to_one_sqlite_file_lose_nothing(tmp_path, root):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, uri, str(k)], cwd=root, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for k in range(4)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4 and not any("warning" in o for o in outs), outs
    runs = live_runs(uri)
    assert sorted(r.data.tags[live.LIVE_TAG] for r in runs) == [f"smoke/growth/v/seed{k}" for k in range(4)]
    for r in runs:
        assert r.info.status == "FINISHED" and [s for s, _, _ in curve(uri, r.info.run_id, "train_loss")] == \
            list(range(1, 21))
