"""The Slurm profile for real: a single-node Slurm on this machine runs a slice of the smoke DAG with every rule kind
through `snakemake --profile` (a copy of profiles/slurm), one job per seed, then its training jobs again packed two
to an allocation (the profile's GPU-packing recipe); both give the results of a local run.

Skips, with the reason, where a local Slurm cannot be started (no root, no packages, a real cluster's
configuration present); CI runs as root and runs it (tests/slurm_local.py installs slurm-wlm and munge).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from slurm_local import Unavailable, cluster

TIMING = {"train_seconds", "seconds_to_target", "started_at", "ended_at"}  # wall-clock: differs between any two runs


def slice_params(raw: dict) -> dict:
    """Two experiments (one with tuning jobs), two variants each, two seeds, one job per seed: every rule kind
    (prepare, subsets, tune, train on Slurm; settings, track, collect, analyze, figures, report on the submitting
    host)."""
    raw = {k: v for k, v in raw.items() if k not in ("edba", "growth")}
    raw["seeds"] = [0, 1]
    raw["profiles"]["smoke"]["job_per"] = "seed"
    for exp, keep in (("block_size", ("fixed16", "doubling")), ("optimizers", ("sgd", "momentum"))):
        for section in (raw[exp], *raw[exp].get("profiles", {}).values()):  # the variants and their scaling
            if "variants" in section:
                section["variants"] = {k: v for k, v in section["variants"].items() if k in keep}
    return raw


def workdir(root: Path, folder: Path, raw: dict) -> Path:
    folder.mkdir(parents=True)
    for name in ("Snakefile", "workflow", "envs", "profiles"):
        (folder / name).symlink_to(root / name)
    (folder / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return folder


def slurm_profile(root: Path, folder: Path) -> Path:
    """profiles/slurm as it is, but sized for this node: no GPU to ask for, one CPU and 1 GB a job."""
    profile = yaml.safe_load((root / "profiles" / "slurm" / "config.yaml").read_text())
    for resources in profile["set-resources"].values():
        resources.pop("gpu", None)
        resources.update(cpus_per_task=1, mem_mb=1000)
    profile["default-resources"].update(mem_mb=1000)
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(profile))
    return folder


def packed(profile: Path, k: int) -> Path:
    """The profile with the GPU-packing recipe of profiles/slurm/config.yaml's comments turned on: k training jobs
    per sbatch allocation (a Snakemake job group), the GPU asked once per group as a string resource."""
    cfg = yaml.safe_load((profile / "config.yaml").read_text())
    cfg.update({"groups": ["train=gpu_pack"], "group-components": [f"gpu_pack={k}"]})
    cfg["set-resources"]["train"]["gres"] = "gpu:0"  # `gpu:1` on a GPU cluster; this node has none to give
    folder = profile.parent / f"{profile.name}-packed"
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    return folder


def squeue() -> list[str]:
    """`<job id> <CPUs> <state>` of every job the controller remembers (MinJobAge keeps finished ones)."""
    out = subprocess.run(["squeue", "--states=all", "-h", "-o", "%i %C %T"], capture_output=True, text=True)
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def snakemake(args: list[str], cwd: Path, timeout: float) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("PIPELINE_PROFILE", None)
    out = subprocess.run([sys.executable, "-m", "snakemake", *args], capture_output=True, text=True, cwd=cwd,
                         env=env, timeout=timeout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout + out.stderr


def run_metrics(work: Path) -> dict[str, dict]:
    """results/runs/<experiment>/<variant>/seed<k>/metrics.json -> its contents without wall-clock timings."""
    out = {}
    for f in sorted((work / "results" / "runs").glob("*/*/seed*/metrics.json")):
        metrics = json.loads(f.read_text())
        out[str(f.parent.relative_to(work))] = {k: v for k, v in metrics.items() if k not in TIMING}
    return out


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_slurm_profile_runs_a_smoke_slice_like_a_local_run(tmp_path, root, raw_params):
    slurm_args = ["--slurm-no-account", "--slurm-status-command", "squeue",
                  "--slurm-init-seconds-before-status-checks", "2", "--slurm-logdir", str(tmp_path / "slurm-logs")]
    try:
        with cluster(tmp_path / "slurm"):
            raw = slice_params(raw_params)
            work = workdir(root, tmp_path / "on-slurm", raw)
            profile = slurm_profile(root, tmp_path / "profile")
            log = snakemake(["--profile", str(profile), *slurm_args], work, timeout=1500)
            jobs = squeue()
            # GPU packing on Slurm: the training jobs again, two to an allocation (profiles/slurm's recipe)
            packed_log = snakemake(["--profile", str(packed(profile, 2)), *slurm_args, "--forcerun", "train"], work,
                                   timeout=1500)
            groups = [j for j in squeue() if j not in jobs]
            packed_runs = run_metrics(work)
    except Unavailable as why:
        pytest.skip(f"no local Slurm: {why}")
    # 2 prepare + 1 subsets + 2 tune + 2 experiments x 2 variants x 2 seeds = 13 sbatch jobs, every one COMPLETED
    assert len(jobs) == 13 and all(j.endswith("COMPLETED") for j in jobs), jobs
    assert all(f"localrule {r}" in log for r in ("settings", "track", "collect", "analyze", "figures", "report"))
    # packed: the 8 training jobs in 4 allocations of 2 CPUs (one per job in the group), every one COMPLETED
    assert len(groups) == 4 and all(g.split()[1:] == ["2", "COMPLETED"] for g in groups), packed_log[-3000:]
    local = workdir(root, tmp_path / "local", raw)
    snakemake(["--profile", "profiles/local", "--cores", "2"], local, timeout=900)
    on_slurm, here = run_metrics(work), run_metrics(local)
    assert len(on_slurm) == 8 and on_slurm.keys() == here.keys()
    assert on_slurm == here  # every metric but wall-clock times identical: same seeds, same numbers
    assert packed_runs == here
    assert (work / "report" / "report.md").exists()
