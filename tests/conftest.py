"""Shared fixtures: the repository's params.yaml as a dict, and a helper to validate modified copies."""
from __future__ import annotations

import contextlib
import copy
import os
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PIPELINE_GPU_LOCK_DIR", "/tmp")


@pytest.fixture
def raw_params() -> dict:
    """A fresh deep copy of params.yaml (the default profile: smoke)."""
    return copy.deepcopy(yaml.safe_load((ROOT / "params.yaml").read_text()))


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny test models run fastest on one thread (and do not fight over the two cores)."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def killed_after(monkeypatch):
    """`with killed_after(k): <train>`: the run stops with KeyboardInterrupt right after epoch k's checkpoint, as a
    killed job would (the block expects it); Run.end_epoch is itself again after the block."""
    from pipeline.train import engine

    real = engine.Run.end_epoch

    @contextlib.contextmanager
    def kill(epoch: int):
        def end_epoch_then_die(self, row, objects, done=False):
            real(self, row, objects, done)
            if self.epoch == epoch:
                raise KeyboardInterrupt(f"killed after epoch {epoch}'s checkpoint")

        monkeypatch.setattr(engine.Run, "end_epoch", end_epoch_then_die)
        try:
            with pytest.raises(KeyboardInterrupt):
                yield
        finally:
            monkeypatch.setattr(engine.Run, "end_epoch", real)

    return kill
