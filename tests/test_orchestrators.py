"""Snakefile and dvc.yaml are two shells over the same stages: same commands, same outputs, same data inputs."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from pipeline import config, dag, dvcfile


def snakemake_jobs(root) -> dict[str, dict]:
    """Every job of a forced dry run: output -> {"rule", "cmd", "inputs"} (log redirection stripped)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # job info (stderr) and commands (stdout) stay in order
    out = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-p", "--forceall"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=root, env=env)
    assert out.returncode == 0, out.stdout
    jobs, current = {}, None
    for line in out.stdout.splitlines():
        if m := re.match(r"^(?:local)?rule (\w+):", line):
            current = {"rule": m.group(1), "inputs": [], "outputs": []}
        elif current and (m := re.match(r"^\s+input: (.*)", line)):
            current["inputs"] = [s.strip() for s in m.group(1).split(",")]
        elif current and (m := re.match(r"^\s+output: (.*)", line)):
            current["outputs"] = [s.strip() for s in m.group(1).split(",")]
        elif current and line.startswith("Shell command: ") and current["outputs"]:  # not the target rule `all`
            cmd = re.sub(r"\s*(> \S+ 2>&1|2>&1 \| tee \S+)$", "", line[len("Shell command: "):])
            jobs[current["outputs"][0]] = {**current, "cmd": cmd}
            current = None
    return jobs


def test_dvc_yaml_is_generated_from_the_stage_list(root, raw_params):
    committed = yaml.safe_load((root / "dvc.yaml").read_text())
    assert committed == dvcfile.dvc_yaml(config.validate(raw_params)), "dvc.yaml is stale: run `python -m pipeline dvc-yaml`"


def test_the_profiles_change_only_how_seeds_are_split_into_jobs(raw_params):
    """The grid, commands' inputs and every output folder are the same in every profile; `job_per: seed` makes
    one training job per seed (its seed in the stage's name, command and outputs)."""
    by_profile = {p: dag.stages(config.validate(raw_params, p)) for p in config.PROFILES}
    outputs = {p: sorted(o for s in stages for o in s.outs) for p, stages in by_profile.items()}
    assert outputs["smoke"] == outputs["quick"] == outputs["paper"]
    paper = config.validate(raw_params, "paper")
    assert paper.job_per == "seed" and config.validate(raw_params, "smoke").job_per == "variant"
    train = [s for s in by_profile["paper"] if s.name.startswith("train_")]
    smoke_train = [s for s in by_profile["smoke"] if s.name.startswith("train_")]
    assert len(train) == len(smoke_train) * len(paper.seeds)
    for s in train:
        seed = int(s.name.rsplit("_seed", 1)[1])
        assert f"--seeds {seed} " in s.cmd and s.outs == [s.outs[0]] and s.outs[0].endswith(f"/seed{seed}")


def dvc_stages(root) -> dict[str, dict]:
    """dvc.yaml as DVC expands it (its foreach templates filled in): stage name -> cmd, deps, outs, params."""
    from dvc.repo import Repo

    out = {}
    for s in Repo(str(root)).index.stages:
        params = [k for d in s.deps if hasattr(d, "params") for k in d.params]
        deps = [str(d.def_path) for d in s.deps if not hasattr(d, "params")]
        out[s.name] = {"cmd": s.cmd, "deps": deps, "outs": [str(o.def_path) for o in s.outs], "params": params}
    return out


def test_dvc_expands_dvc_yaml_into_the_stage_list(root, raw_params):
    """DVC's own reading of the foreach templates gives exactly pipeline.dag's jobs (names, commands, paths)."""
    expanded = dvc_stages(root)
    planned = {s.name: {"cmd": s.cmd, "deps": s.deps, "outs": s.outs, "params": s.params}
               for s in dag.stages(config.validate(raw_params))}
    assert expanded == planned


def test_snakemake_and_dvc_declare_the_same_stages(root):
    jobs = snakemake_jobs(root)
    # the settings job writes one file per variant; dvc.yaml declares their folder
    jobs = {("results/settings" if out.startswith("results/settings/") else out): job for out, job in jobs.items()}
    dvc_by_out = {s["outs"][0]: s for s in dvc_stages(root).values()}  # a training job's first seed folder names it
    assert set(jobs) == set(dvc_by_out), "the two orchestrators produce different outputs"
    for out, stage in dvc_by_out.items():
        job = jobs[out]
        assert job["cmd"] == stage["cmd"], out
        assert all(any(o == d or o.startswith(d + "/") for d in stage["outs"]) for o in job["outputs"]), out
        data_deps = {d for d in stage["deps"] if not d.startswith("pipeline")}
        inputs = set(job["inputs"]) - {""}
        # a DVC dep may be a folder holding other stages' outputs (results/runs/<experiment>): Snakemake lists them
        covered = {i for i in inputs if any(i == d or i.startswith(d + "/") for d in data_deps)}
        assert covered == inputs, out
        assert all(any(i == d or i.startswith(d + "/") for i in inputs) for d in data_deps), out


def test_dvc_sees_the_dag(root):
    out = subprocess.run([sys.executable, "-m", "dvc", "dag", "--dot"], capture_output=True, text=True, cwd=root)
    assert out.returncode == 0, out.stderr
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    for name in stages:
        assert name in out.stdout


def test_snakemake_lint(root):
    out = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], capture_output=True, text=True, cwd=root)
    assert out.returncode == 0, out.stdout + out.stderr


def test_snakemake_reruns_a_job_when_its_resolved_params_change(root, tmp_path):
    """Snakemake sees files only: each rule's fingerprint param makes a profile switch (file key or
    PIPELINE_PROFILE) or an edited params key rerun the jobs that read it, and nothing else."""
    for name in ("Snakefile", "params.yaml"):
        shutil.copy(root / name, tmp_path / name)
    for name in ("workflow", "envs", "pipeline"):
        shutil.copytree(root / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k != "PIPELINE_PROFILE"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"

    def snakemake(*args, **extra_env):
        out = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", *args, "data/prepared/ptb"],
                             capture_output=True, text=True, cwd=tmp_path, env={**env, **extra_env})
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout + out.stderr

    snakemake()  # the synthetic PTB of the smoke profile
    assert "Nothing to be done" in snakemake("-n")
    assert "Nothing to be done" not in snakemake("-n", PIPELINE_PROFILE="quick")
    raw = yaml.safe_load((tmp_path / "params.yaml").read_text())
    raw["analysis"]["alpha"] = 0.01  # a key `prepare` does not read
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    assert "Nothing to be done" in snakemake("-n")
    raw["data"]["synthetic"]["text"]["train_tokens"] += 1000  # one it reads
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    assert "rule prepare:" in snakemake("-n")


def test_a_profile_given_to_snakemake_reaches_the_jobs(root, tmp_path):
    """`--config profile=smoke` over a file that says quick: the job runs smoke (synthetic PTB, no download); any
    other --config key is refused with one line, before a job starts."""
    for name in ("Snakefile", "workflow", "envs"):
        (tmp_path / name).symlink_to(root / name)
    raw = yaml.safe_load((root / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**raw, "profile": "quick"}, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if k != "PIPELINE_PROFILE"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"

    def snakemake(*args):
        return subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", *args], capture_output=True,
                              text=True, cwd=tmp_path, env=env)

    done = snakemake("data/prepared/ptb", "--config", "profile=smoke")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads((tmp_path / "data/prepared/ptb/meta.json").read_text())["synthetic"] is True
    refused = snakemake("-n", "--config", "tracking={uri: null, experiment_prefix: x}")
    assert refused.returncode != 0
    assert "tracking: differs from params.yaml (--config or --configfile): only `profile` can be set" in \
        refused.stdout + refused.stderr


def test_conda_env_lists_the_projects_dependencies(root):
    """envs/pipeline.yaml (snakemake --sdm conda) pins what pyproject.toml pins, minus the orchestrators, and
    names no relative path (Snakemake builds the environment from a copy of the file elsewhere)."""
    import tomllib

    wanted = [d for d in tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
              if not d.startswith(("snakemake", "dvc"))]
    env = yaml.safe_load((root / "envs" / "pipeline.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip == wanted
    assert not any(p.startswith(("-e", ".")) for p in pip)


def test_the_slurm_profile_plans_one_training_job_per_seed_under_the_paper_profile(root, raw_params):
    """`snakemake -n --profile profiles/slurm` with the paper profile: one sbatch job per seed, each asking for the
    profile's GPU (no Slurm needed for a dry run)."""
    env = {k: v for k, v in os.environ.items() if k != "PIPELINE_PROFILE"}
    out = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--profile", "profiles/slurm", "--config",
                          "profile=paper"], capture_output=True, text=True, cwd=root, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    jobs = re.findall(r"rule train:\n\s+input: .*\n\s+output: (\S+)\n(?:.*\n)*?\s+resources: (.*)", out.stdout)
    paper = config.validate(raw_params, "paper")
    assert len(jobs) == sum(len(paper.variants(e)) for e in paper.experiments) * len(paper.seeds)
    assert all(re.search(r"/seed\d+$", output) and "gpu=1" in resources for output, resources in jobs)
