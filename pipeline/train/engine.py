"""A run's life: resume from its checkpoint, time the training, record each epoch, write the run files.

    results/runs/<experiment>/<variant>/seed<k>/      (declared output: metrics.json, history.csv, config.json)
    results/checkpoints/<experiment>/<variant>/seed<k>/<config-hash>.pt   (outside the outputs: survives reruns)

The loops (pipeline/train/lm.py, image.py) own the training step; `Run` owns everything around it:
- `resume(objects)`: restores every stateful object (model, optimizer, scheduler, generators, method state) and
  the global torch RNG from the last checkpoint written for the same resolved config, so a killed job that is
  rerun continues where it stopped and, on CPU, ends bit-identical to an uninterrupted run;
- `training()`: a context manager that times training only (CUDA synchronised before the clock is read);
- `end_epoch(row, objects)`: appends one history row (with `time`, the wall clock at its end, unix seconds) and
  writes the checkpoint atomically (temp file + rename);
- `finish(...)`: writes metrics.json, history.csv and config.json.
A NaN or inf loss ends the run with `diverged: true`; the job still exits 0 so the rest of the DAG goes on.
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import platform
import subprocess
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..device import synchronize
from ..schemas.speed import Speed
from .progress import Progress

CHECKPOINT_FORMAT = 1  # bump when the checkpoint layout changes: older checkpoints are then ignored


@dataclass
class RunSpec:
    """Who a run is and how it is judged; all of it goes into metrics.json and config.json."""

    experiment: str
    variant: str
    seed: int
    profile: str
    method: str
    dataset: str
    subset: str | None
    metric: str  # the eval metric the run is judged on, a history column (e.g. "test_acc", "test_ppl")
    mode: str  # "max" or "min"
    target: dict  # {"metric", "value", "mode"}: time-to-target threshold
    config: dict = field(default_factory=dict)  # the fully resolved experiment config of this variant
    inputs: dict = field(default_factory=dict)  # sha256 of the data files read + the training code's digest

    def config_hash(self) -> str:
        blob = json.dumps({k: v for k, v in asdict(self).items()}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


class Diverged(Exception):
    """Raised by a loop when the loss is NaN or inf."""


def check_finite(loss: torch.Tensor) -> None:
    if not torch.isfinite(loss).all():
        raise Diverged(f"non-finite loss {loss.detach().float().cpu().tolist()}")


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def git_dirty() -> bool | None:
    """True when tracked files differ from the commit (the commit alone then does not name the code run)."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                             text=True, timeout=10)
        return bool(out.stdout.strip()) if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


# the libraries whose versions a run records (read from package metadata: nothing is imported)
LIBRARIES = ("torch", "numpy", "pytorch-optimizer", "pydantic", "pyyaml")


def library_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def environment(device) -> dict:
    import numpy

    return {
        "git_commit": git_commit(),
        "git_dirty": git_dirty(),
        "libraries": library_versions(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if getattr(device, "type", "") == "cuda" else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        # CPU: deterministic kernels without the switch (see seeding.seed_global); CUDA: the switch, warn-only,
        # since some kernels the models use (adaptive pooling's backward) have no deterministic CUDA version
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "hostname": platform.node(),
    }


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    write(tmp)
    os.replace(tmp, path)


class Run:
    def __init__(self, spec: RunSpec, run_dir: Path, checkpoint_dir: Path, device, log=print,
                 speed: Speed | None = None):
        self.spec, self.run_dir, self.device, self.log = spec, Path(run_dir), device, log
        self.speed = speed if speed is not None else Speed()  # how the loops use the device (train/speed.py)
        self.checkpoint_path = Path(checkpoint_dir) / f"{spec.config_hash()}.pt"
        self.history: list[dict] = []
        self.train_seconds = 0.0  # training time only, summed over epochs (evaluation excluded)
        self.started_at = time.time()  # wall clock (unix s) of the run's first start, kept across resumes
        self.epoch = 0  # completed epochs
        self.done = False  # the checkpoint says the run already finished (or diverged)
        self.diverged = False
        self.distinct_samples: int | None = None  # distinct training samples (images) or token positions used
        self.extra: dict[str, Any] = {}  # experiment-specific final numbers, copied into metrics.json
        self.total_epochs: int | None = None  # set by the loop; shown in the progress display
        self.progress = Progress(f"{spec.experiment}/{spec.variant}/seed{spec.seed}")  # bar or log lines, ETA
        self.live = None  # a pipeline.live.LiveLog: each epoch's row sent to MLflow as it ends (off by default)

    # ---- resume ---------------------------------------------------------------------------------------------
    def resume(self, objects: dict[str, Any]) -> int:
        """Load the last checkpoint of this exact config into `objects`; returns the number of completed epochs."""
        if not self.checkpoint_path.exists():
            return 0
        state = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
        if state.get("format") != CHECKPOINT_FORMAT or state.get("config_hash") != self.spec.config_hash():
            self.log(f"{self.checkpoint_path}: written by another config or format; starting afresh")
            return 0
        for name, obj in objects.items():
            obj.load_state_dict(state["objects"][name])
        torch.set_rng_state(state["torch_rng"])
        if torch.cuda.is_available() and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.history, self.train_seconds = state["history"], state["train_seconds"]
        self.started_at = state.get("started_at", self.started_at)
        self.epoch, self.done, self.diverged = state["epoch"], state["done"], state["diverged"]
        self.extra, self.distinct_samples = state["extra"], state["distinct_samples"]
        self.log(f"resumed {self.spec.experiment}/{self.spec.variant}/seed{self.spec.seed} after epoch {self.epoch}")
        return self.epoch

    # ---- timing ---------------------------------------------------------------------------------------------
    @contextmanager
    def training(self):
        """Time a stretch of training; evaluation must happen outside this block."""
        synchronize(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            self.train_seconds += time.perf_counter() - start

    # ---- per-epoch bookkeeping --------------------------------------------------------------------------------
    def end_epoch(self, row: dict, objects: dict[str, Any], done: bool = False) -> None:
        """Record one epoch (1-based `epoch` is added) and checkpoint every stateful object atomically."""
        self.epoch += 1
        row = {"epoch": self.epoch, **{k: _plain(v) for k, v in row.items()}, "elapsed_seconds": self.train_seconds,
               "time": round(time.time(), 3)}
        self.history.append(row)
        self.done = done
        self.save_checkpoint(objects)
        self.progress.epoch_done(row, self.epoch, self.total_epochs, self.train_seconds, done)
        if self.live is not None:
            self.live.log(self.history)

    def within_epoch(self, done: int, total: int, unit: str) -> None:
        """Called by a loop after each step: progress within a long epoch (pipeline/train/progress.py)."""
        self.progress.within_epoch(self.epoch + 1, self.total_epochs, done, total, unit)

    def save_checkpoint(self, objects: dict[str, Any]) -> None:
        state = {
            "format": CHECKPOINT_FORMAT,
            "config_hash": self.spec.config_hash(),
            "epoch": self.epoch,
            "done": self.done,
            "diverged": self.diverged,
            "history": self.history,
            "train_seconds": self.train_seconds,
            "started_at": self.started_at,
            "extra": self.extra,
            "distinct_samples": self.distinct_samples,
            "objects": {name: obj.state_dict() for name, obj in objects.items()},
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }
        _atomic_write(self.checkpoint_path, lambda tmp: torch.save(state, tmp))

    def mark_diverged(self, reason: str, objects: dict[str, Any]) -> None:
        self.log(f"{self.spec.experiment}/{self.spec.variant}/seed{self.spec.seed}: diverged ({reason})")
        self.diverged, self.done = True, True
        self.save_checkpoint(objects)

    # ---- run files --------------------------------------------------------------------------------------------
    def finish(self, env: dict) -> dict:
        """Write metrics.json, history.csv and config.json; returns the metrics."""
        metrics = self.summary()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.run_dir / "history.csv", lambda tmp: _write_csv(tmp, self.history))
        config = {"run": asdict(self.spec), "config_hash": self.spec.config_hash(), "environment": env}
        _atomic_write(self.run_dir / "config.json", lambda tmp: tmp.write_text(json.dumps(config, indent=2, default=str)))
        # metrics.json last: its presence means the run's files are complete
        _atomic_write(self.run_dir / "metrics.json", lambda tmp: tmp.write_text(json.dumps(metrics, indent=2)))
        if self.live is not None:
            self.live.close("FAILED" if self.diverged else "FINISHED")
        return metrics

    def summary(self) -> dict:
        s = self.spec
        values = [(r["epoch"], r[s.metric]) for r in self.history if _finite(r.get(s.metric))]
        better = max if s.mode == "max" else min
        best_epoch, best = better(values, key=lambda ev: ev[1]) if values else (None, None)
        t = s.target
        hit = next((r for r in self.history if _finite(r.get(t["metric"])) and
                    (r[t["metric"]] >= t["value"] if t["mode"] == "max" else r[t["metric"]] <= t["value"])), None)
        last = self.history[-1] if self.history else {}
        return {
            "experiment": s.experiment, "variant": s.variant, "seed": s.seed, "profile": s.profile,
            "method": s.method, "dataset": s.dataset, "subset": s.subset,
            "metric": s.metric, "mode": s.mode,
            "final": values[-1][1] if values and not self.diverged else None,
            "best": best, "best_epoch": best_epoch,
            "target": t,
            "epochs_to_target": hit["epoch"] if hit else None,
            "seconds_to_target": hit["elapsed_seconds"] if hit else None,
            "train_seconds": self.train_seconds,
            "train_flops": last.get("flops"),
            "distinct_samples": self.distinct_samples,
            "diverged": self.diverged,
            "epochs": self.epoch,
            "started_at": round(self.started_at, 3), "ended_at": round(time.time(), 3),  # wall clock, unix s
            "extra": self.extra,
        }


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _plain(v):
    if isinstance(v, torch.Tensor):
        return v.item()
    return v


def _write_csv(path: Path, rows: list[dict]) -> None:
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns or ["epoch"])
        writer.writeheader()
        writer.writerows(rows)


class GeneratorState:
    """Adapts a torch.Generator to the state_dict protocol of the checkpoint."""

    def __init__(self, generator: torch.Generator):
        self.generator = generator

    def state_dict(self):
        return {"state": self.generator.get_state()}

    def load_state_dict(self, state):
        self.generator.set_state(state["state"])


class TensorState:
    """Adapts a tensor updated in place (e.g. the seen-samples mask) to the state_dict protocol."""

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor

    def state_dict(self):
        return {"tensor": self.tensor.cpu()}

    def load_state_dict(self, state):
        self.tensor.copy_(state["tensor"])
