"""Which device a job trains on: CUDA when present, else CPU; `--device` overrides.

On a multi-GPU machine each job claims one free GPU with a lock file (one per GPU index), held for the life of
the process, so `snakemake --cores N --resources gpu=G` runs G training jobs at once, one per GPU.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from .errors import PipelineError

LOCK_DIR = Path(os.environ.get("PIPELINE_GPU_LOCK_DIR", tempfile.gettempdir()))
_held: list = []  # lock objects kept alive for the whole process


class DeviceError(PipelineError, ValueError):
    """A `--device` this machine cannot train on: one line naming it."""


def _claim_gpu(count: int, wait_seconds: float = 24 * 3600) -> int:
    from filelock import FileLock, Timeout

    deadline = time.monotonic() + wait_seconds
    while True:
        for index in range(count):
            lock = FileLock(str(LOCK_DIR / f"pipeline-gpu{index}.lock"))
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue
            _held.append(lock)
            return index
        if time.monotonic() > deadline:
            raise RuntimeError(f"no free GPU among {count} after {wait_seconds:.0f} s (locks in {LOCK_DIR})")
        time.sleep(2.0)


def select_device(override: str | None = None):
    """The torch.device to train on. `override`: "cpu", "cuda", "cuda:1", ... (None: automatic)."""
    import torch

    if override:
        try:
            device = torch.device(override)
        except RuntimeError:
            raise DeviceError(f"--device {override}: not a device name (cpu, cuda, cuda:N)") from None
        if device.type not in ("cpu", "cuda"):
            raise DeviceError(f"--device {override}: the harness trains on cpu or cuda only")
        if device.type == "cuda" and not torch.cuda.is_available():
            raise DeviceError(f"--device {override}: CUDA is not available on this machine")
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"--device {override}: this machine has {torch.cuda.device_count()} GPU(s)")
        return device
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        index = _claim_gpu(count) if count > 1 else 0
        return torch.device("cuda", index)
    return torch.device("cpu")


def synchronize(device) -> None:
    """Wait for queued GPU work, so a clock read after it measures finished work."""
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.synchronize(device)
