"""MLflow tracking as an idempotent sync of the run files (the files stay the source of truth).

    results/runs/<experiment>/<variant>/seed<k>/  --sync_experiment-->  MLflow experiment "<prefix><experiment>"
                                                                         one run per (variant, seed)

- Store: MLFLOW_TRACKING_URI, else params `tracking.uri`, else the embedded sqlite store `mlflow.db` at the
  repository root, so `mlflow ui --backend-store-uri sqlite:///mlflow.db` shows every run.
- Identity: each MLflow run carries the tag `harness.run_key` = "<profile>/<experiment>/<variant>/seed<k>" and
  `harness.content_hash` = sha256 of its three files, set only after everything else was logged. A sync skips runs whose hash is already there, replaces
  runs whose files changed (the old MLflow run is deleted, i.e. moved to MLflow's trash, not purged), and creates
  the rest: rerunning never duplicates. The profile (read from the run's metrics.json) is part of the key, so
  switching profiles, which rewrites results/runs, adds the new profile's runs and keeps the old ones in MLflow
  (metrics, params and the three files as artifacts): filter with `tags.profile = 'quick'`.
- Concurrency: every write happens under one file lock per store, so many jobs finishing at once (or several
  `track` stages run in parallel by Snakemake) lose nothing and never race on sqlite.
MLflow costs seconds to import, so only this stage imports it; training jobs never do.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path

from filelock import FileLock

from .config import Params
from .errors import PipelineError, check_writable

RUN_FILES = ("metrics.json", "history.csv", "config.json")
MAX_PARAM_LENGTH = 500  # MLflow's limit on a param value


class TrackingError(PipelineError, RuntimeError):
    """Run files that cannot be synced: the message is one line naming the run directory."""


def tracking_uri(params: Params | None = None) -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI") or (params.tracking.uri if params else None)
    return uri or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def _lock_for(uri: str) -> FileLock:
    if uri.startswith("sqlite:///"):
        return FileLock(uri[len("sqlite:///"):] + ".lock")
    digest = hashlib.sha256(uri.encode()).hexdigest()[:12]
    return FileLock(str(Path(os.environ.get("TMPDIR", "/tmp")) / f"pipeline-mlflow-{digest}.lock"))


def _store_error(err: Exception) -> bool:
    """An error of the tracking store itself (database, REST), not of the harness."""
    return type(err).__module__.split(".")[0] in ("sqlalchemy", "mlflow", "alembic", "sqlite3", "requests")


def _store_name(uri: str) -> str:
    return uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else uri


def content_hash(run_dir: Path) -> str:
    h = hashlib.sha256()
    for name in RUN_FILES:
        h.update(name.encode() + b"\0" + (run_dir / name).read_bytes())
    return h.hexdigest()


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    """{"a": {"b": 1}} -> {"a.b": "1"}; values cut to MLflow's param length."""
    out: dict[str, str] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = str(value)[:MAX_PARAM_LENGTH]
    return out


def run_dirs(runs_root: Path) -> list[Path]:
    """Every complete run directory (<variant>/seed<k> with all three files) under an experiment's runs."""
    if not Path(runs_root).is_dir():
        raise TrackingError(f"{runs_root}: no such runs directory; train the experiment first")
    found = []
    for d in sorted(Path(runs_root).glob("*/seed*")):
        missing = [f for f in RUN_FILES if not (d / f).exists()]
        if missing:
            raise TrackingError(f"{d}: incomplete run, missing {', '.join(missing)}; rerun its training job")
        found.append(d)
    return found


def _history_metrics(run_dir: Path, timestamp: int):
    from mlflow.entities import Metric

    metrics = []
    with open(run_dir / "history.csv", newline="") as f:
        for row in csv.DictReader(f):
            step = int(row["epoch"])
            for key, value in row.items():
                if key == "epoch" or value in ("", None):
                    continue
                try:
                    metrics.append(Metric(key, float(value), timestamp, step))
                except ValueError:
                    continue
    return metrics


def _log_run(client, experiment_id: str, run_dir: Path, run_key: str, digest: str) -> str:
    from mlflow.entities import Metric, Param

    metrics = json.loads((run_dir / "metrics.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    tags = {"harness.run_key": run_key,
            "experiment": metrics["experiment"], "variant": metrics["variant"], "method": metrics["method"],
            "dataset": metrics["dataset"], "subset": str(metrics["subset"]), "seed": str(metrics["seed"]),
            "profile": metrics["profile"], "diverged": str(metrics["diverged"]),
            "git_commit": str(config.get("environment", {}).get("git_commit")),
            "mlflow.runName": f"{metrics['variant']}/seed{metrics['seed']} [{metrics['profile']}]"}
    run = client.create_run(experiment_id, tags=tags)
    run_id = run.info.run_id
    ts = run.info.start_time
    params = flatten(config.get("run", {}).get("config", {}))
    params.update(flatten(config.get("environment", {}), "env."))
    items = [Param(k, v) for k, v in sorted(params.items())]
    for i in range(0, len(items), 100):  # MLflow accepts at most 100 params per batch
        client.log_batch(run_id, params=items[i:i + 100])
    finals = [Metric(f"final.{k}", float(v), ts, 0) for k, v in metrics.items()
              if isinstance(v, (int, float)) and not isinstance(v, bool)]
    finals += [Metric(f"final.extra.{k}", float(v), ts, 0) for k, v in metrics.get("extra", {}).items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)]
    per_epoch = _history_metrics(run_dir, ts)
    all_metrics = finals + per_epoch
    for i in range(0, len(all_metrics), 1000):  # MLflow accepts at most 1000 metrics per batch
        client.log_batch(run_id, metrics=all_metrics[i:i + 1000])
    for name in RUN_FILES:
        client.log_artifact(run_id, str(run_dir / name))
    # the hash last: a sync killed before this line leaves a run without it, which the next sync replaces
    client.set_tag(run_id, "harness.content_hash", digest)
    client.set_terminated(run_id, "FAILED" if metrics["diverged"] else "FINISHED")
    return run_id


def sync_runs(uri: str, experiment_name: str, runs: list[tuple[str, Path]]) -> list[dict]:
    """Make MLflow hold exactly one run per run key with the current files; returns one receipt row per run."""
    import mlflow
    from mlflow.tracking import MlflowClient

    receipt = []
    with _lock_for(uri):
        mlflow.set_tracking_uri(uri)
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name(experiment_name)
        experiment_id = exp.experiment_id if exp else client.create_experiment(experiment_name)
        for run_key, run_dir in runs:
            digest = content_hash(run_dir)
            found = client.search_runs([experiment_id], filter_string=f"tags.`harness.run_key` = '{run_key}'")
            keep = next((r.info.run_id for r in found if r.data.tags.get("harness.content_hash") == digest), None)
            for stale in (r.info.run_id for r in found if r.info.run_id != keep):
                client.delete_run(stale)  # files changed since the last sync (or a duplicate): replace
            run_id = keep or _log_run(client, experiment_id, run_dir, run_key, digest)
            receipt.append({"run_key": run_key, "run_id": run_id, "content_hash": digest, "new": keep is None})
    return receipt


def sync_experiment(params: Params, experiment: str, runs_root: Path, out: Path) -> list[dict]:
    """Sync every run of one experiment and write the receipt (run key -> MLflow run id)."""
    dirs = run_dirs(runs_root)
    runs = [(f"{json.loads((d / 'metrics.json').read_text())['profile']}/{experiment}/{d.parent.name}/{d.name}", d)
            for d in dirs]
    uri = tracking_uri(params)
    out = Path(out)
    check_writable(out.parent, "the receipt")  # before MLflow is written to: a receipt that cannot be written would leave it half-done
    try:
        receipt = sync_runs(uri, f"{params.tracking.experiment_prefix}{experiment}", runs)
    except Exception as err:  # MLflow's store errors (sqlalchemy, REST) are long and never name the store
        if isinstance(err, PipelineError) or not _store_error(err):
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TrackingError(f"{_store_name(uri)}: the MLflow store cannot be used ({type(err).__name__}: "
                            f"{first[:200]})") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"tracking_uri": uri, "runs": receipt}, indent=2))
    new = sum(r["new"] for r in receipt)
    print(f"{experiment}: {len(receipt)} runs in MLflow ({new} new) at {uri}")
    return receipt
