"""Which device a job trains on: CUDA when present, else CPU; `--device` overrides.

GPU packing: k training jobs may share one GPU (k = PIPELINE_JOBS_PER_GPU, default 1; outside the runs'
identity: it changes where a job runs, never its numbers). Each job claims one of the machine's G x k slots
with a lock file (pipeline-gpu<i>-slot<j>.lock in PIPELINE_GPU_LOCK_DIR), held for the life of the process; the
operating system releases it when the process ends, a crash or a kill included. Slot j of GPU i is taken in the
order (slot 0 of every GPU, then slot 1, ...), so jobs spread over the GPUs before they share one, and never more
than k share a GPU. With `snakemake --resources gpu_slots=G*k` (the rules ask for one slot each; the profile
profiles/default sets that) Snakemake starts no more jobs than there are slots. With one GPU and k = 1 nothing is
claimed: the job takes the GPU, as before packing existed.
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


def jobs_per_gpu() -> int:
    """k, the training jobs that may share one GPU: PIPELINE_JOBS_PER_GPU (default 1)."""
    raw = os.environ.get("PIPELINE_JOBS_PER_GPU", "1")
    if not raw.isdigit() or int(raw) < 1:
        raise DeviceError(f"PIPELINE_JOBS_PER_GPU={raw!r}: expected a whole number >= 1")
    return int(raw)


def slots(gpus: int, per_gpu: int) -> list[tuple[int, int]]:
    """The claim order of the (gpu, slot) pairs: every GPU's slot 0 first, then slot 1, ... (the cost plan's
    concurrency is len(slots(...)))."""
    return [(gpu, slot) for slot in range(per_gpu) for gpu in range(gpus)]


def _claim_gpu(count: int, per_gpu: int = 1, wait_seconds: float = 24 * 3600) -> int:
    """Claim a free (GPU, slot) among count x per_gpu, waiting for one; returns the GPU's index."""
    from filelock import FileLock, Timeout

    deadline = time.monotonic() + wait_seconds
    while True:
        for gpu, slot in slots(count, per_gpu):
            lock = FileLock(str(LOCK_DIR / f"pipeline-gpu{gpu}-slot{slot}.lock"))
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue
            _held.append(lock)
            return gpu
        if time.monotonic() > deadline:
            raise RuntimeError(f"no free GPU slot among {count} GPU(s) x {per_gpu} after {wait_seconds:.0f} s "
                               f"(locks in {LOCK_DIR})")
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
        count, per_gpu = torch.cuda.device_count(), jobs_per_gpu()
        index = _claim_gpu(count, per_gpu) if count * per_gpu > 1 else 0
        return torch.device("cuda", index)
    return torch.device("cpu")


def synchronize(device) -> None:
    """Wait for queued GPU work, so a clock read after it measures finished work."""
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.synchronize(device)
