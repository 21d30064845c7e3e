"""Shared fixtures: the repository's params.yaml as a dict, and a helper to validate modified copies."""
from __future__ import annotations

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
