"""Snakefile and dvc.yaml are two shells over the same stages: same commands, same outputs, same data inputs."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from pipeline import config, dag


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
            cmd = re.sub(r"\s*> \S+ 2>&1$", "", line[len("Shell command: "):])
            jobs[current["outputs"][0]] = {**current, "cmd": cmd}
            current = None
    return jobs


def test_dvc_yaml_is_generated_from_the_stage_list(root, raw_params):
    committed = yaml.safe_load((root / "dvc.yaml").read_text())
    for profile in config.PROFILES:  # the DAG does not depend on the profile
        assert committed == dag.dvc_yaml(config.validate(raw_params, profile)), \
            "dvc.yaml is stale: run `python -m pipeline dvc-yaml`"


def test_snakemake_and_dvc_declare_the_same_stages(root):
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    jobs = snakemake_jobs(root)
    dvc_by_out = {s["outs"][0]: s for s in stages.values()}
    assert set(jobs) == set(dvc_by_out), "the two orchestrators produce different outputs"
    for out, stage in dvc_by_out.items():
        job = jobs[out]
        assert job["cmd"] == stage["cmd"], out
        data_deps = {d for d in stage.get("deps", []) if not d.startswith("pipeline")}
        assert data_deps == set(job["inputs"]) - {""}, out


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
