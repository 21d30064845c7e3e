"""GPU packing: k training jobs share one GPU through lock-file slots (pipeline/device.py); no GPU needed to test."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter

import pytest
import torch

from pipeline import device


@pytest.fixture
def locks(tmp_path, monkeypatch):
    monkeypatch.setattr(device, "LOCK_DIR", tmp_path)
    held = []
    monkeypatch.setattr(device, "_held", held)
    yield tmp_path
    for lock in held:
        lock.release()


def test_never_more_than_k_jobs_on_a_gpu(locks):
    claims = [device._claim_gpu(2, per_gpu=3, wait_seconds=0) for _ in range(6)]
    assert claims == [0, 1, 0, 1, 0, 1]  # spread over the GPUs before sharing one
    assert max(Counter(claims).values()) == 3
    with pytest.raises(RuntimeError, match="no free GPU slot among 2 GPU"):
        device._claim_gpu(2, per_gpu=3, wait_seconds=0)
    device._held.pop(0).release()  # the first job on GPU 0 ends: its slot is free again
    assert device._claim_gpu(2, per_gpu=3, wait_seconds=0) == 0


def test_a_killed_job_frees_its_slot(locks):
    claim = ("import sys, time; from pathlib import Path; from pipeline import device; "
             "device.LOCK_DIR = Path(sys.argv[1]); print(device._claim_gpu(1, per_gpu=2), flush=True); "
             "time.sleep(600)")
    jobs = [subprocess.Popen([sys.executable, "-c", claim, str(locks)], stdout=subprocess.PIPE, text=True)
            for _ in range(2)]
    try:
        assert [j.stdout.readline().strip() for j in jobs] == ["0", "0"]  # both slots of GPU 0 taken
        with pytest.raises(RuntimeError, match="no free GPU slot"):
            device._claim_gpu(1, per_gpu=2, wait_seconds=0)
        jobs[0].kill()  # SIGKILL: no clean-up code runs
        jobs[0].wait()
        deadline = time.monotonic() + 10
        while True:  # the kernel releases the dead process's lock
            try:
                assert device._claim_gpu(1, per_gpu=2, wait_seconds=0) == 0
                break
            except RuntimeError:
                assert time.monotonic() < deadline, "the killed job's slot was never freed"
                time.sleep(0.1)
    finally:
        for j in jobs:
            j.kill()
            j.wait()


def test_one_gpu_and_k_1_claims_nothing(locks, monkeypatch):
    """k = 1 on a one-GPU machine is the behaviour before packing existed: no lock, the job takes cuda:0."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.delenv("PIPELINE_JOBS_PER_GPU", raising=False)
    assert device.select_device() == torch.device("cuda", 0)
    assert not list(locks.iterdir()) and not device._held


def test_k_4_on_one_gpu_claims_a_slot(locks, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("PIPELINE_JOBS_PER_GPU", "4")
    assert [device.select_device() for _ in range(4)] == [torch.device("cuda", 0)] * 4
    assert sorted(p.name for p in locks.glob("*.lock")) == [f"pipeline-gpu0-slot{j}.lock" for j in range(4)]
    with pytest.raises(RuntimeError, match="no free GPU slot among 1 GPU"):
        device._claim_gpu(1, per_gpu=4, wait_seconds=0)


@pytest.mark.parametrize("raw", ["0", "-1", "two", ""])
def test_a_bad_jobs_per_gpu_is_one_line(monkeypatch, raw):
    monkeypatch.setenv("PIPELINE_JOBS_PER_GPU", raw)
    with pytest.raises(device.DeviceError, match="PIPELINE_JOBS_PER_GPU"):
        device.jobs_per_gpu()


def test_the_claim_order_is_the_slot_list():
    assert device.slots(2, 2) == [(0, 0), (1, 0), (0, 1), (1, 1)]
    assert len(device.slots(1, 4)) == 4


def test_with_k_4_on_one_gpu_the_plan_and_the_claims_agree(locks):
    """The cost plan runs as many jobs at once as there are slots to claim: 4 on one GPU with k = 4."""
    from pipeline.plan import wall_clock

    granted = 0
    while True:
        try:
            device._claim_gpu(1, per_gpu=4, wait_seconds=0)
            granted += 1
        except RuntimeError:
            break
    assert granted == 4
    # five one-hour jobs: four share the GPU (each at a quarter of it: 4 h), the fifth starts when one ends
    assert wall_clock([3600.0] * granted, gpus=1, per_gpu=4) == 4 * 3600.0
    assert wall_clock([3600.0] * (granted + 1), gpus=1, per_gpu=4) == 8 * 3600.0
    assert wall_clock([3600.0] * 2, gpus=1, per_gpu=1) == 2 * 3600.0  # k = 1: one after the other
