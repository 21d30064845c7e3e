"""Live MLflow logging while a run trains (optional): each epoch's history row goes to the tracking store as the
epoch ends, so a team can watch long runs in the MLflow UI. The run files and the `track` stage's sync
(pipeline/tracking.py) stay the source of truth: the sync deletes a run key's live runs when it logs that run.

    PIPELINE_LIVE_TRACKING   auto (default): on when the tracking URI (MLFLOW_TRACKING_URI, else params
                             tracking.uri) is an http(s) server; on: any store (a sqlite file too); off: never.

    live = LiveLog.for_run(uri, experiment, run_key, name)   None when live logging is off; `experiment(client)`
                                         gives the MLflow experiment's id (pipeline.tracking.experiment_id)
    live.log(history)                    at every epoch end: creates the run at the first call, sends new rows
    live.close(status)                   FINISHED, FAILED (diverged) or KILLED (the process ended without finishing)

A live run is tagged `harness.live_key` = the run key "<profile>/<experiment>/<variant>/seed<k>" and named
"<variant>/seed<k> [profile] (live)"; the sync's own searches never see it. A resumed run replaces the key's
earlier live runs with one that holds the history so far. A store that is down or refuses never stops training:
one warning line, and live logging is off for the rest of that run (a hung server costs one request's 10 s
timeout x 3 tries at most, HTTP_DEFAULTS). MLflow is imported only when it is on.
"""
from __future__ import annotations

import atexit
import contextlib
import os
from typing import Callable

from .mlflow_rows import ms, row_metrics, search_all

LIVE_TAG = "harness.live_key"
MODES = ("auto", "on", "off")
# our choice: MLflow's own defaults (120 s timeout, 7 retries with backoff 2) could stall an epoch for minutes
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "10", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
                 "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


def enabled(uri: str) -> bool:
    """Whether a run logs live to `uri` (PIPELINE_LIVE_TRACKING; a bad value is a one-line error)."""
    from .errors import PipelineError

    mode = os.environ.get("PIPELINE_LIVE_TRACKING", "auto")
    if mode not in MODES:
        raise PipelineError(f"PIPELINE_LIVE_TRACKING={mode!r}: must be one of {', '.join(MODES)}")
    return mode == "on" or (mode == "auto" and uri.startswith(("http://", "https://")))


class LiveLog:
    """One training run's live MLflow run (see the module docstring)."""

    def __init__(self, uri: str, experiment: Callable, run_key: str, name: str, say=print, lock=None,
                 params: dict[str, str] | None = None):
        self.uri, self.experiment, self.run_key, self.name, self.say = uri, experiment, run_key, name, say
        self.params = params or {}  # the run's settings, as the sync logs them (filter the live runs by lr, ...)
        self.lock = lock if lock is not None else contextlib.nullcontext()  # a sqlite store: the sync's file lock
        self.client = self.run_id = None
        self.sent = 0  # history rows logged so far
        self.off = False
        atexit.register(self._at_exit)

    @classmethod
    def for_run(cls, uri: str, experiment: Callable, run_key: str, name: str, say=print, lock=None,
                params: dict[str, str] | None = None) -> "LiveLog | None":
        return cls(uri, experiment, run_key, name, say, lock, params) if enabled(uri) else None

    def log(self, history: list[dict]) -> None:
        """Send the rows of `history` not sent yet (all of them at the first call: a resumed run's earlier epochs)."""
        if self.off or len(history) <= self.sent:
            return
        self._guard(self._send, history)

    def close(self, status: str) -> None:
        if self.run_id is not None and not self.off:
            self._guard(lambda: self.client.set_terminated(self.run_id, status))
        self.off = True
        atexit.unregister(self._at_exit)

    # ---- the store ------------------------------------------------------------------------------------------
    def _send(self, history: list[dict]) -> None:
        if self.run_id is None:
            self._open()
        metrics = [m for row in history[self.sent:] for m in row_metrics(row, ms(float(row["time"])))]
        for i in range(0, len(metrics), 1000):  # MLflow accepts at most 1000 metrics per batch
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])
        self.sent = len(history)

    def _open(self) -> None:
        for name, value in HTTP_DEFAULTS.items():  # a slow server must not hold training up (yours win if set)
            os.environ.setdefault(name, value)
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(self.uri)
        experiment = self.experiment(self.client)
        for old in live_runs(self.client, experiment).get(self.run_key, []):
            self.client.delete_run(old.info.run_id)  # an interrupted attempt's: this one resends its epochs
        profile, _, variant, seed = self.run_key.split("/")
        tags = {LIVE_TAG: self.run_key, "variant": variant, "seed": seed.removeprefix("seed"), "profile": profile,
                "mlflow.runName": f"{self.name} (live)"}
        self.run_id = self.client.create_run(experiment, tags=tags).info.run_id
        from mlflow.entities import Param

        settings = [Param(k, v) for k, v in sorted(self.params.items())]
        for i in range(0, len(settings), 100):  # MLflow accepts at most 100 params per batch
            self.client.log_batch(self.run_id, params=settings[i:i + 100])

    def _guard(self, action, *args) -> None:
        try:
            with self.lock:  # sqlite takes one writer at a time: jobs (and a sync) never race on the file
                action(*args)
        except Exception as err:  # the store is down or refuses: training goes on, the sync logs the run later
            self.off = True
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            self.say(f"warning: live MLflow logging to {self.uri} is off for {self.run_key} "
                     f"({type(err).__name__}: {first}); the track stage will sync the run")

    def _at_exit(self) -> None:
        """The process ends without finish() (an exception, Ctrl-C): KILLED, quietly (a newer attempt may have
        replaced the run already)."""
        if not self.off and self.run_id is not None:
            try:
                with self.lock:
                    self.client.set_terminated(self.run_id, "KILLED")
            except Exception:  # noqa: BLE001  (at exit there is no one left to tell)
                pass


def live_runs(client, experiment: str) -> dict[str, list]:
    """Run key -> the experiment's live runs of that key."""
    out = {}
    for run in search_all(client, experiment, f"tags.`{LIVE_TAG}` LIKE '%'"):
        out.setdefault(run.data.tags[LIVE_TAG], []).append(run)
    return out


def drop_synced(client, experiment: str, ended: dict[str, float]) -> int:
    """Delete the live runs the sync has replaced: those of a synced run key (`ended`: run key -> the synced
    run's end, unix s) that started before that end (a later one belongs to a newer training of the key).
    Returns how many were deleted."""
    dropped = 0
    for key, runs in live_runs(client, experiment).items():
        for run in runs:
            if key in ended and run.info.start_time <= ended[key] * 1000:
                client.delete_run(run.info.run_id)
                dropped += 1
    return dropped
