"""MLflow tracking as an idempotent sync of the run files (the files stay the source of truth).

    results/runs/<experiment>/<variant>/seed<k>/  --sync_experiment-->  MLflow experiment "<prefix><experiment>":
                                                                         a parent run per variant, its seeds nested

- Store: MLFLOW_TRACKING_URI, else params `tracking.uri` (e.g. a team server, `http://host:5000`), else the
  embedded sqlite store `mlflow.db` at the repository root.
- A run looks like the training run it records: the run's own start and end (metrics.json `started_at`, `ended_at`;
  older runs: file mtime); each history.csv column is a metric, step = epoch, at the epoch's wall-clock `time` (so
  `test_acc`'s last point is the final value); other numbers keep their names (`best_test_acc`, `train_seconds`,
  ...); who the run is (seed, variant, method, dataset, subset, profile) is params and tags.
- A parent run per (profile, variant) carries its seeds' final metric (`<metric>_mean`, `_std`, `seeds`); each
  seed's run points at it with `mlflow.parentRunId`.
- Artifacts (the three files): with sqlite they are copied to `mlartifacts/` beside the store and recorded as
  `mlflow-artifacts:/...`, which `mlflow ui` serves from its `--artifacts-destination` (default ./mlartifacts): no
  absolute path is stored, so the folder can move. A server stores them where it is configured to.
- Experiments carry `mlflow.experimentKind = custom_model_development` (model training, not GenAI); MLflow 3.17's
  UI picks its landing page from the browser's workflow switch, so the sync prints the training-runs link.
- Identity: a run carries `harness.run_key` = "<profile>/<experiment>/<variant>/seed<k>" and `harness.content_hash`
  (of its files and SYNC_FORMAT), set last; a parent, `harness.parent_key` and a hash of its seeds'. A sync skips
  what is unchanged, replaces what changed (the old run goes to MLflow's trash) and creates the rest: a rerun adds
  nothing. A profile switch adds the new profile's runs and keeps the old (filter `tags.profile = 'quick'`).
- Concurrency: every write happens under one file lock per store (per machine, for a server): jobs finishing at
  once lose nothing and never race on sqlite.
- Runs logged live while training (pipeline/live.py, on for a server) are deleted once their files are synced.
MLflow costs seconds to import: only this stage imports it, and training jobs where live logging is on.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import statistics
from pathlib import Path
from urllib.parse import urlparse

from filelock import FileLock

from .config import Params
from .errors import PipelineError, check_writable
from .live import drop_synced
from .mlflow_rows import ms, number, row_metrics, search_all

RUN_FILES = ("metrics.json", "history.csv", "config.json")
SYNC_FORMAT = 2  # bump when what a run looks like in MLflow changes: the next sync then replaces older runs
MAX_PARAM_LENGTH = 500  # MLflow's limit on a param value
ARTIFACTS = "mlartifacts"  # `mlflow ui`/`mlflow server`'s default --artifacts-destination, beside the sqlite store
KIND = ("mlflow.experimentKind", "custom_model_development")  # MLflow 3's experiment type: model training
WHO = ("experiment", "variant", "seed", "method", "dataset", "subset", "profile")  # params and tags, not metrics
SUMMARY = ("best_epoch", "epochs_to_target", "seconds_to_target", "train_seconds", "train_flops",
           "distinct_samples", "epochs")  # metrics.json numbers logged under their own names


class TrackingError(PipelineError, RuntimeError):
    """Run files that cannot be synced: the message is one line naming the run directory."""


def tracking_uri(params: Params | None = None) -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI") or (params.tracking.uri if params else None)
    return uri or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def store_lock(uri: str) -> FileLock:
    if uri.startswith("sqlite:///"):
        return FileLock(uri[len("sqlite:///"):] + ".lock")
    digest = hashlib.sha256(uri.encode()).hexdigest()[:12]
    return FileLock(str(Path(os.environ.get("TMPDIR", "/tmp")) / f"pipeline-mlflow-{digest}.lock"))


def _store_error(err: Exception) -> bool:
    """An error of the tracking store itself (database, REST), not of the harness."""
    return type(err).__module__.split(".")[0] in ("sqlalchemy", "mlflow", "alembic", "sqlite3", "requests", "psycopg2")


def content_hash(run_dir: Path) -> str:
    h = hashlib.sha256(f"sync format {SYNC_FORMAT}\0".encode())
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


# ---- the store: experiments, artifacts, searches ---------------------------------------------------------------
def _sqlite_dir(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///"):]).parent if uri.startswith("sqlite:///") else None


def experiment_id(client, uri: str, name: str) -> str:
    """The experiment `name`, created as a model-training experiment; on sqlite its artifact location is the
    proxied `mlflow-artifacts:/<name>`, never an absolute path."""
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is None:
        location = f"mlflow-artifacts:/{re.sub(r'[^A-Za-z0-9._-]', '_', name)}" if _sqlite_dir(uri) else None
        try:
            return client.create_experiment(name, artifact_location=location, tags=dict([KIND]))
        except MlflowException as err:  # another machine, syncing to the same server, created it meanwhile
            if err.error_code != "RESOURCE_ALREADY_EXISTS" or not (exp := client.get_experiment_by_name(name)):
                raise
    if KIND[0] not in exp.tags:  # created before the harness set the type (a type chosen in the UI stays)
        client.set_experiment_tag(exp.experiment_id, *KIND)
    return exp.experiment_id


def local_artifact_dir(uri: str, artifact_uri: str) -> Path | None:
    """Where a sqlite store's proxied artifacts (`mlflow-artifacts:/<path>`) lie: <store's folder>/mlartifacts/<path>,
    as `mlflow ui` started in that folder resolves them; None for any other store or URI."""
    root, parsed = _sqlite_dir(uri), urlparse(artifact_uri)
    return root / ARTIFACTS / parsed.path.lstrip("/") if root and parsed.scheme == "mlflow-artifacts" else None


def _store_artifacts(client, uri: str, run, run_dir: Path) -> None:
    local = local_artifact_dir(uri, run.info.artifact_uri)
    for name in RUN_FILES:
        if local is None:  # a server (its own artifact store) or an experiment with a plain location
            client.log_artifact(run.info.run_id, str(run_dir / name))
        else:
            local.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(run_dir / name, local / name)


def _search(client, experiment: str, tag: str, value: str) -> list:
    """Every active run of the experiment whose tag `tag` equals `value` (all pages)."""
    return search_all(client, experiment, f"tags.`{tag}` = '{value}'")


def ui_link(uri: str, experiment: str) -> str:
    """The experiment's training-runs page (MLflow 3's UI otherwise opens on GenAI traces)."""
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    return f"{base}/#/experiments/{experiment}/runs?workflowType=machine_learning"


# ---- one run ----------------------------------------------------------------------------------------------------
def run_times(run_dir: Path, metrics: dict) -> tuple[float, float]:
    """(start, end) in unix seconds: metrics.json's `started_at` / `ended_at`; for runs written before the engine
    recorded them, metrics.json's mtime as the end and the end minus the training seconds as the start."""
    end = number(metrics.get("ended_at")) or (run_dir / "metrics.json").stat().st_mtime
    start = number(metrics.get("started_at")) or end - (number(metrics.get("train_seconds")) or 0.0)
    return start, end


def _epoch_metrics(run_dir: Path, start: float, end: float) -> list:
    """A Metric per history.csv cell: step = epoch, timestamp = the epoch's `time` (else, for older runs, the start
    plus the training seconds so far)."""
    out = []
    with open(run_dir / "history.csv", newline="") as f:
        for row in csv.DictReader(f):
            elapsed = number(row.get("elapsed_seconds"))
            out += row_metrics(row, ms(number(row.get("time")) or (min(start + elapsed, end) if elapsed is not None
                                                                     else end)))
    return out


def _final_metrics(m: dict, curves: set[str], step: int, stamp: int) -> list:
    """The run's own numbers under their names, at its last epoch; the eval metric only when history.csv has no
    curve of it (else the curve's last point is the final value)."""
    from mlflow.entities import Metric

    name = m["metric"]
    values = {} if name in curves else {name: m.get("final")}
    values.update({f"best_{name}": m.get("best"), **{k: m.get(k) for k in SUMMARY}})
    for key, value in (m.get("extra") or {}).items():
        values[f"extra.{key}" if key in values or key in curves else key] = value
    return [Metric(k, v, stamp, step) for k, value in values.items() if (v := number(value)) is not None]


def _params(m: dict, config: dict) -> dict[str, str]:
    params = flatten(config.get("run", {}).get("config", {}))
    params.update(flatten(config.get("environment", {}), "env."))
    params.update(flatten({k: v for k, v in (m.get("extra") or {}).items() if number(v) is None}, "extra."))
    for key in (*WHO, "metric", "mode"):
        params.setdefault(key, str(m.get(key))[:MAX_PARAM_LENGTH])
    params.setdefault("config_hash", str(config.get("config_hash")))
    return params


def _log_run(client, uri: str, experiment: str, run_dir: Path, run_key: str, digest: str) -> str:
    from mlflow.entities import Param

    m = json.loads((run_dir / "metrics.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    start, end = run_times(run_dir, m)
    tags = {"harness.run_key": run_key, "harness.variant_key": run_key.rsplit("/", 1)[0],
            **{k: str(m[k]) for k in WHO}, "diverged": str(m["diverged"]),
            "git_commit": str(config.get("environment", {}).get("git_commit")),
            "mlflow.runName": f"{m['variant']}/seed{m['seed']} [{m['profile']}]"}
    run = client.create_run(experiment, start_time=ms(start), tags=tags)
    run_id = run.info.run_id
    params = [Param(k, v) for k, v in sorted(_params(m, config).items())]
    for i in range(0, len(params), 100):  # MLflow accepts at most 100 params per batch
        client.log_batch(run_id, params=params[i:i + 100])
    metrics = _epoch_metrics(run_dir, start, end)
    last = max([x.step for x in metrics] + [int(number(m.get("epochs")) or 0)])
    metrics += _final_metrics(m, {x.key for x in metrics}, last, ms(end))
    for i in range(0, len(metrics), 1000):  # MLflow accepts at most 1000 metrics per batch
        client.log_batch(run_id, metrics=metrics[i:i + 1000])
    _store_artifacts(client, uri, run, run_dir)
    # the hash last: a sync killed before this line leaves a run without it, which the next sync replaces
    client.set_tag(run_id, "harness.content_hash", digest)
    client.set_terminated(run_id, "FAILED" if m["diverged"] else "FINISHED", end_time=ms(end))
    return run_id


# ---- a variant's parent run ---------------------------------------------------------------------------------------
def _log_parent(client, experiment: str, variant_key: str, seeds: list, digest: str) -> str:
    """A parent run spanning its seeds' runs, with the variant's shared params and its seeds' final metric."""
    from mlflow.entities import Metric, Param

    first = seeds[0].data
    metric = first.params.get("metric")
    finals = [s.data.metrics[metric] for s in seeds
              if s.data.tags.get("diverged") != "True" and metric in s.data.metrics]
    start = min(s.info.start_time for s in seeds)
    end = max(s.info.end_time or s.info.start_time for s in seeds)
    tags = {k: first.tags[k] for k in WHO if k in first.tags and k != "seed"}
    tags.update({"harness.parent_key": variant_key, "mlflow.runName": f"{tags.get('variant')} [{tags.get('profile')}]"})
    run_id = client.create_run(experiment, start_time=start, tags=tags).info.run_id
    shared = {k: v for k, v in first.params.items() if k != "seed" and all(s.data.params.get(k) == v for s in seeds)}
    params = [Param(k, v) for k, v in sorted(shared.items())]
    for i in range(0, len(params), 100):
        client.log_batch(run_id, params=params[i:i + 100])
    seconds = [s.data.metrics["train_seconds"] for s in seeds if "train_seconds" in s.data.metrics]
    values = {"seeds": len(seeds), "seeds_diverged": sum(s.data.tags.get("diverged") == "True" for s in seeds),
              f"{metric}_mean": statistics.fmean(finals) if finals else None,
              f"{metric}_std": statistics.stdev(finals) if len(finals) > 1 else None,  # sample std, finished seeds
              "train_seconds_mean": statistics.fmean(seconds) if seconds else None}
    client.log_batch(run_id, metrics=[Metric(k, float(v), end, 0) for k, v in values.items() if v is not None])
    client.set_tag(run_id, "harness.content_hash", digest)  # last, as for a seed's run
    client.set_terminated(run_id, "FINISHED", end_time=end)
    return run_id


def _sync_parent(client, experiment: str, variant_key: str) -> dict | None:
    """Exactly one parent per variant, over every completely logged seed run in the store (also those another
    job synced), and every such seed nested under it."""
    seeds = [r for r in _search(client, experiment, "harness.variant_key", variant_key)
             if "harness.content_hash" in r.data.tags]
    parents = _search(client, experiment, "harness.parent_key", variant_key)
    digest = hashlib.sha256("\n".join(sorted(f"{s.info.run_id}:{s.data.tags['harness.content_hash']}"
                                             for s in seeds)).encode()).hexdigest()
    keep = next((p.info.run_id for p in parents if p.data.tags.get("harness.content_hash") == digest), None)
    new = keep is None and bool(seeds)
    if new:
        keep = _log_parent(client, experiment, variant_key, seeds, digest)
    for seed in seeds:
        if seed.data.tags.get("mlflow.parentRunId") != keep:
            client.set_tag(seed.info.run_id, "mlflow.parentRunId", keep)
    for stale in (p.info.run_id for p in parents if p.info.run_id != keep):
        client.delete_run(stale)  # its seeds changed: replaced by the parent above
    return {"variant_key": variant_key, "run_id": keep, "seeds": len(seeds), "new": new} if seeds else None


# ---- the sync -------------------------------------------------------------------------------------------------------
def sync_runs(uri: str, experiment_name: str, runs: list[tuple[str, Path]]) -> dict:
    """Make MLflow hold exactly one run per run key with the current files, nested under one parent per variant;
    returns {"experiment_id", "runs": one receipt row per run, "parents": one row per variant}."""
    from mlflow.tracking import MlflowClient

    rows = []
    with store_lock(uri):
        client = MlflowClient(uri)
        experiment = experiment_id(client, uri, experiment_name)
        for run_key, run_dir in runs:
            digest = content_hash(run_dir)
            found = _search(client, experiment, "harness.run_key", run_key)
            keep = next((r.info.run_id for r in found if r.data.tags.get("harness.content_hash") == digest), None)
            for stale in (r.info.run_id for r in found if r.info.run_id != keep):
                client.delete_run(stale)  # files changed since the last sync (or a duplicate): replace
            run_id = keep or _log_run(client, uri, experiment, run_dir, run_key, digest)
            rows.append({"run_key": run_key, "run_id": run_id, "content_hash": digest, "new": keep is None})
        variants = dict.fromkeys(key.rsplit("/", 1)[0] for key, _ in runs)
        parents = [p for key in variants if (p := _sync_parent(client, experiment, key))]
        ended = {key: run_times(d, json.loads((d / "metrics.json").read_text()))[1] for key, d in runs}
        live = drop_synced(client, experiment, ended)  # the runs logged live while they trained: replaced now
    return {"experiment_id": experiment, "runs": rows, "parents": parents, "live_replaced": live}


def sync_experiment(params: Params, experiment: str, runs_root: Path, out: Path) -> list[dict]:
    """Sync every run of one experiment and write the receipt (run key -> MLflow run id)."""
    dirs = run_dirs(runs_root)
    runs = [(f"{json.loads((d / 'metrics.json').read_text())['profile']}/{experiment}/{d.parent.name}/{d.name}", d)
            for d in dirs]
    uri = tracking_uri(params)
    out = Path(out)
    check_writable(out.parent, "the receipt")  # before MLflow is written to: a receipt that cannot be written would leave it half-done
    try:
        synced = sync_runs(uri, f"{params.tracking.experiment_prefix}{experiment}", runs)
    except Exception as err:  # MLflow's store errors (sqlalchemy, REST) are long and never name the store
        if isinstance(err, PipelineError) or not _store_error(err):
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TrackingError(f"{uri.removeprefix('sqlite:///')}: the MLflow store cannot be used "
                            f"({type(err).__name__}: {first[:200]})") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"tracking_uri": uri, **synced}, indent=2))
    receipt, store = synced["runs"], _sqlite_dir(uri)
    new = sum(r["new"] for r in receipt)
    serve = (f"`mlflow ui --backend-store-uri {uri} --artifacts-destination {store / ARTIFACTS}`, then "
             if store else "")
    print(f"{experiment}: {len(receipt)} runs in MLflow ({new} new) under {len(synced['parents'])} variant runs "
          f"at {uri.removeprefix('sqlite:///')}; UI: {serve}{ui_link(uri, synced['experiment_id'])}")
    return receipt
