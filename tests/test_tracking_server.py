"""A team tracking server, for real: PostgreSQL from the distribution's packages (a throwaway cluster in a temporary
directory) behind `mlflow server` on 127.0.0.1. The harness syncs into it through MLFLOW_TRACKING_URI from 16
processes at once and then reruns `python -m pipeline track`; the MLflow client then sees every run once, its
metrics, the parents and the artifacts. Also: a sqlite store moved to another folder serves its artifacts through
`mlflow server` started there. Needs root (PostgreSQL runs as the `postgres` user) and apt; skips otherwise."""
from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from pipeline.tracking import sync_runs
from test_growth_experiment import params, run  # noqa: F401  (params is a fixture: tiny images, the smoke grid)
from test_tracking import T0, fake_run, runs_in

pytestmark = pytest.mark.slow  # PostgreSQL + two MLflow servers + 16 processes: about 2 minutes on 2 cores

SYNC_ONE = """
import sys
from pathlib import Path
from pipeline.tracking import sync_runs
uri, run_dir = sys.argv[1], Path(sys.argv[2])
sync_runs(uri, "concurrency", [(f"smoke/concurrency/{run_dir.parent.name}/{run_dir.name}", run_dir)])
"""  # the run key `python -m pipeline track concurrency` gives it, so that its rerun below finds these runs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bin() -> Path:
    """/usr/lib/postgresql/<version>/bin (the package's own; /usr/local/bin may hold links to it), installing the
    `postgresql` package with apt-get when it is missing; skips when that cannot be done."""
    def found():
        return sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found():
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            pytest.skip("PostgreSQL is not installed and cannot be (needs root and apt-get)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "postgresql"]
        if subprocess.run(install, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
            out = subprocess.run(install, env=env, capture_output=True, text=True)
            if out.returncode != 0 or not found():
                pytest.skip(f"apt-get could not install postgresql: {out.stderr.strip()[-300:]}")
    return Path(found()[-1]).parent


@contextlib.contextmanager
def postgres():
    """A PostgreSQL cluster on a free port of 127.0.0.1, trust authentication; yields its SQLAlchemy URI."""
    if os.geteuid() != 0:
        pytest.skip("starting PostgreSQL as the `postgres` user needs root")
    pytest.importorskip("psycopg2", reason="psycopg2-binary (the test extra: pip install -e '.[test]')")
    bin_dir, port = postgres_bin(), free_port()
    home = Path(tempfile.mkdtemp(prefix="pipeline-pg-"))  # not under pytest's tmp_path: `postgres` must enter it
    shutil.chown(home, "postgres", "postgres")
    data = home / "data"

    def as_postgres(*cmd):
        out = subprocess.run(["runuser", "-u", "postgres", "--", *map(str, cmd)], capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, f"{cmd[0]}: {out.stdout[-1500:]}{out.stderr[-1500:]}"

    try:
        as_postgres(bin_dir / "initdb", "-D", data, "-A", "trust", "-U", "mlflow")
        as_postgres(bin_dir / "pg_ctl", "-D", data, "-l", home / "server.log", "-w", "-o",
                    f"-p {port} -k {home} -c listen_addresses=127.0.0.1", "start")
        as_postgres(bin_dir / "createdb", "-h", "127.0.0.1", "-p", port, "-U", "mlflow", "mlflow")
        yield f"postgresql://mlflow@127.0.0.1:{port}/mlflow"
    finally:
        if data.exists():
            subprocess.run(["runuser", "-u", "postgres", "--", str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast",
                            "-w", "stop"], capture_output=True, timeout=120)
        shutil.rmtree(home, ignore_errors=True)


@contextlib.contextmanager
def mlflow_server(backend: str, cwd: Path, *args: str):
    """`mlflow server` on a free port of 127.0.0.1, one worker, answering /health; yields its URL."""
    port = free_port()
    log = open(cwd / f"mlflow-server-{port}.log", "w")
    cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", backend, "--host",
           "127.0.0.1", "--port", str(port), "--workers", "1", *args]
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, f"mlflow server exited: {Path(log.name).read_text()[-2000:]}"
            with contextlib.suppress(OSError):
                if urllib.request.urlopen(f"{url}/health", timeout=2).read() == b"OK":
                    break
            assert time.monotonic() < deadline, f"mlflow server not up in 180 s: {Path(log.name).read_text()[-2000:]}"
            time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # its own session: the server and its uvicorn workers
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def test_a_team_server_holds_every_run_once_with_metrics_parents_and_artifacts(tmp_path, root, params, monkeypatch):
    from mlflow.tracking import MlflowClient

    finals = {i: round(0.5 + 0.01 * i, 2) for i in range(16)}
    dirs = [fake_run(tmp_path / "runs", f"v{i % 4}", i, final=finals[i]) for i in range(16)]
    with postgres() as backend, mlflow_server(backend, tmp_path, "--artifacts-destination",
                                              str(tmp_path / "artifacts")) as url:
        env = {**os.environ, "MLFLOW_TRACKING_URI": url}
        procs = [subprocess.Popen([sys.executable, "-c", SYNC_ONE, url, str(d)], cwd=root, env=env) for d in dirs]
        assert [p.wait(timeout=300) for p in procs] == [0] * 16
        rerun = subprocess.run([sys.executable, "-m", "pipeline", "track", "concurrency", "--runs", tmp_path / "runs",
                                "--out", tmp_path / "receipt.json"], cwd=root, env=env, capture_output=True, text=True)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        receipt = json.loads((tmp_path / "receipt.json").read_text())
        assert receipt["tracking_uri"] == url and len(receipt["runs"]) == 16 and len(receipt["parents"]) == 4
        assert not any(r["new"] for r in receipt["runs"] + receipt["parents"])  # the rerun added nothing

        client = MlflowClient(url)
        runs, parents = runs_in(url, "concurrency"), runs_in(url, "concurrency", parents=True)
        assert sorted(r.data.tags["harness.run_key"] for r in runs) == \
            sorted(f"smoke/concurrency/{d.parent.name}/{d.name}" for d in dirs)
        for r in runs:
            seed = int(r.data.tags["seed"])
            assert r.data.metrics["test_acc"] == finals[seed] and r.data.metrics["best_test_acc"] == finals[seed]
            assert (r.info.start_time, r.info.end_time) == (int((T0 + seed) * 1000), int((T0 + seed + 60) * 1000))
            assert r.data.params["seed"] == str(seed) and "seed" not in r.data.metrics
        one = next(r for r in runs if r.data.tags["seed"] == "5")
        curve = sorted((m.step, m.timestamp, m.value) for m in client.get_metric_history(one.info.run_id, "test_acc"))
        assert curve == [(1, int((T0 + 35) * 1000), 0.3), (2, int((T0 + 64.5) * 1000), finals[5])]
        assert sorted(p.data.tags["variant"] for p in parents) == ["v0", "v1", "v2", "v3"]
        for p in parents:
            seeds = [i for i in range(16) if f"v{i % 4}" == p.data.tags["variant"]]
            assert p.data.metrics["seeds"] == 4
            assert p.data.metrics["test_acc_mean"] == pytest.approx(statistics.fmean(finals[i] for i in seeds))
            assert p.data.metrics["test_acc_std"] == pytest.approx(statistics.stdev(finals[i] for i in seeds))
            nested = [r for r in runs if r.data.tags["mlflow.parentRunId"] == p.info.run_id]
            assert sorted(int(r.data.tags["seed"]) for r in nested) == seeds
        got = client.download_artifacts(one.info.run_id, "metrics.json", str(tmp_path))
        assert Path(got).read_bytes() == (tmp_path / "runs" / "v1" / "seed5" / "metrics.json").read_bytes()
        assert list((tmp_path / "artifacts").rglob(f"{one.info.run_id}/artifacts/metrics.json"))  # where the server keeps them
        experiment = client.get_experiment_by_name("concurrency")
        assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"

        # a training run logs its epochs live to the server (on by default for a server), and the sync replaces it
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        monkeypatch.delenv("PIPELINE_LIVE_TRACKING", raising=False)
        metrics = run(params, tmp_path, "grow_vt_lr-cifar10")
        growth = client.get_experiment_by_name("growth").experiment_id
        (watched,) = client.search_runs([growth], filter_string="tags.`harness.live_key` LIKE '%'")
        assert watched.info.status == "FINISHED" and watched.data.tags["mlflow.runName"].endswith("(live)")
        steps = sorted(m.step for m in client.get_metric_history(watched.info.run_id, "test_acc"))
        assert steps == [1, 2, 3, 4] and metrics["epochs"] == 4
        key, folder = "smoke/growth/grow_vt_lr-cifar10/seed0", tmp_path / "runs" / "grow_vt_lr-cifar10" / "seed0"
        assert sync_runs(url, "growth", [(key, folder)])["live_replaced"] == 1
        (synced,) = client.search_runs([growth], filter_string=f"tags.`harness.run_key` = '{key}'")
        assert synced.info.status == "FINISHED" and client.get_run(watched.info.run_id).info.lifecycle_stage == "deleted"


def test_a_moved_sqlite_store_serves_its_artifacts(tmp_path):
    """The default store after `mv repo moved`: `mlflow server` (as `mlflow ui`) started in the moved folder, with
    its default artifacts destination, serves every run's files."""
    from mlflow.tracking import MlflowClient

    from pipeline.tracking import sync_runs

    d = fake_run(tmp_path / "runs", "a", 0)
    (tmp_path / "repo").mkdir()
    synced = sync_runs(f"sqlite:///{tmp_path / 'repo' / 'mlflow.db'}", "concurrency", [("smoke/concurrency/a/seed0", d)])
    shutil.move(tmp_path / "repo", tmp_path / "moved")
    with mlflow_server("sqlite:///mlflow.db", tmp_path / "moved") as url:
        got = MlflowClient(url).download_artifacts(synced["runs"][0]["run_id"], "history.csv", str(tmp_path))
        assert Path(got).read_bytes() == (d / "history.csv").read_bytes()
