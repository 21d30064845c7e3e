"""The one command line: `python -m pipeline <stage> ...`; Snakefile and dvc.yaml call nothing else.

Every path comes in as an argument; params.yaml is read through pipeline.config only. Heavy libraries (torch,
MLflow, scipy, matplotlib) are imported inside the commands that need them, so `--help` and the light stages
start fast.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from . import config as cfg
from .code import shown
from .errors import PipelineError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Reproducible benchmark harness for rapid-training methods.")

PARAMS = typer.Option(Path("params.yaml"), "--params", help="The params file (the profile: its `profile:` key or "
                      "the PIPELINE_PROFILE environment variable).")


def _load(params: Path) -> cfg.Params:
    try:
        return cfg.load(params)
    except cfg.ConfigError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2)


def _seeds(p: cfg.Params, seeds: Optional[str]) -> list[int]:
    if not seeds:
        return list(p.seeds)
    try:
        chosen = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        typer.echo(f"error: --seeds {seeds!r}: expected comma-separated integers", err=True)
        raise typer.Exit(2)
    try:
        p.check_seeds(chosen)
    except cfg.ConfigError as err:
        typer.echo(f"error: --seeds: {err}", err=True)
        raise typer.Exit(2)
    return chosen


def _set_threads() -> None:
    """CPU threads per training process: PIPELINE_THREADS, else OMP_NUM_THREADS (Snakemake sets it to the rule's
    threads), else 1. One thread by default: jobs run side by side (Snakemake) or next to other work, and two
    threads per process on two busy cores were measured 10-30x slower than one."""
    import os

    import torch

    torch.set_num_threads(int(os.environ.get("PIPELINE_THREADS") or os.environ.get("OMP_NUM_THREADS") or 1))


@app.command()
def check(params: Path = PARAMS):
    """Validate params.yaml and print the grid (experiments, variants, seeds)."""
    p = _load(params)
    typer.echo(f"profile {p.profile} (synthetic data: {p.synthetic}); seeds {p.seeds}")
    for exp in p.experiments:
        where = shown(p.experiment(exp).folder)
        typer.echo(f"{exp} ({len(p.variants(exp))} variants, {where}): {', '.join(p.variants(exp))}")


@app.command()
def prepare(dataset: str = typer.Argument(..., help="A key of data.datasets, e.g. ptb, cifar10."),
            out: Path = typer.Option(..., help="Directory to write the prepared arrays to."),
            params: Path = PARAMS):
    """Download (or read from the mirror), verify and prepare a dataset; synthetic data in the smoke profile."""
    p = _load(params)
    if dataset not in p.data.datasets:
        typer.echo(f"error: dataset {dataset!r} is not in data.datasets ({', '.join(p.data.datasets)})", err=True)
        raise typer.Exit(2)
    from .data.stages import prepare_dataset

    prepare_dataset(p, dataset, out)


@app.command()
def subsets(dataset: str = typer.Argument(..., help="A key of data.datasets with subsets."),
            prepared: Path = typer.Option(..., help="The dataset's prepared directory."),
            out: Path = typer.Option(..., help="Directory for seed<k>/<subset>.npy index files."),
            params: Path = PARAMS):
    """Draw the class-balanced, nested training subsets of a dataset for every seed."""
    p = _load(params)
    from .data.stages import write_subsets

    write_subsets(p, dataset, prepared, out)


DATA = typer.Option([], "--data", help="A prepared dataset folder the job reads (repeat for several).")
SUBSETS = typer.Option([], "--subsets", help="A dataset's subsets folder the job reads (repeat for several).")
TUNING = typer.Option([], "--tuning", help="A tuning stage's result file the job reads (repeat for several).")
CHECKPOINTS = typer.Option(Path("results/checkpoints"), help="Checkpoint root (outside the outputs).")
DEVICE = typer.Option(None, help="cpu, cuda or cuda:N (default: CUDA when available).")


def _job(p: cfg.Params, experiment: str, variant: str, seed: int, data, subsets, tuning, out, checkpoints, device):
    from .device import select_device
    from .train.jobs import Inputs, Job

    inputs = Inputs.from_paths(data=data, subsets=subsets, tuning=tuning)
    return Job(p, experiment, variant, seed, inputs, out, checkpoints, select_device(device))


@app.command()
def train(experiment: str = typer.Argument(..., help="An experiment of params.yaml (see `python -m pipeline check`)."),
          variant: str = typer.Argument(..., help="A variant of the experiment (see `python -m pipeline check`)."),
          seeds: Optional[str] = typer.Option(None, help="Comma-separated seeds (default: all of params.yaml)."),
          data: list[Path] = DATA, subsets: list[Path] = SUBSETS, tuning: list[Path] = TUNING,
          out: Path = typer.Option(..., help="The variant's run directory; each seed writes <out>/seed<k>/."),
          checkpoints: Path = CHECKPOINTS, device: Optional[str] = DEVICE, params: Path = PARAMS):
    """Train one variant for the given seeds, writing metrics.json, history.csv and config.json per seed.

    By hand: `python -m pipeline train block_size doubling --seeds 0 --data data/prepared/ptb
    --out results/runs/block_size/doubling`. A killed run resumes from its last checkpoint when rerun; a NaN/inf
    loss records diverged: true, exit 0.
    """
    p = _load(params)
    p.check_variant(experiment, variant)
    chosen = _seeds(p, seeds)
    _set_threads()
    runner = p.experiment(experiment).module("train")
    for seed in chosen:
        job = _job(p, experiment, variant, seed, data, subsets, tuning, out / f"seed{seed}", checkpoints, device)
        metrics = runner.train(job)
        status = "diverged" if metrics["diverged"] else f"{metrics['metric']} {metrics['final']}"
        typer.echo(f"{experiment}/{variant}/seed{seed}: {status} ({metrics['train_seconds']:.1f} s training)")


@app.command()
def tune(experiment: str = typer.Argument(..., help="An experiment with a tuning stage (optimizers)."),
         name: str = typer.Argument(..., help="The tuning job: the variant whose settings it tunes."),
         data: list[Path] = DATA, subsets: list[Path] = SUBSETS,
         out: Path = typer.Option(..., help="JSON file with the grid, every score and the pick."),
         checkpoints: Path = CHECKPOINTS, device: Optional[str] = DEVICE, params: Path = PARAMS):
    """Pick a hyperparameter on a validation split held out from the training set (never the test split)."""
    p = _load(params)
    jobs = p.tuning_jobs(experiment)
    if name not in jobs:
        raise cfg.ConfigError(f"{experiment}: no tuning job {name!r} ({', '.join(jobs) or 'none'})")
    _set_threads()
    job = _job(p, experiment, name, None, data, subsets, [], out.with_suffix(""), checkpoints, device)
    p.experiment(experiment).module("tune").tune(job, out)  # the experiment sets the job's seed


@app.command()
def track(experiment: str = typer.Argument(..., help="The experiment whose runs to sync."),
          runs: Path = typer.Option(..., help="results/runs/<experiment>"),
          out: Path = typer.Option(..., help="Receipt: JSON listing every run and its MLflow run id."),
          params: Path = PARAMS):
    """Sync the run files into MLflow (idempotent: a rerun never duplicates a run)."""
    p = _load(params)
    from .tracking import sync_experiment

    sync_experiment(p, experiment, runs, out)


@app.command()
def collect(runs: Path = typer.Option(..., help="results/runs"), out: Path = typer.Option(..., help="Tables dir.")):
    """Gather every run's files into one long table (run x epoch) and one table of final metrics."""
    from .analysis.collect import collect as run_collect

    run_collect(runs, out)


@app.command()
def analyze(tables: Path = typer.Option(..., help="The collect stage's directory."),
            out: Path = typer.Option(..., help="Statistics, claims and tables directory."),
            params: Path = PARAMS):
    """Statistics per comparison, the claims ledger with verdicts, and the papers' tables."""
    p = _load(params)
    from .analysis.tables import analyze as run_analyze

    run_analyze(tables, p, out)


@app.command()
def figures(tables: Path = typer.Option(..., help="The collect stage's directory."),
            analysis: Path = typer.Option(..., help="The analyze stage's directory (for the claims chart)."),
            out: Path = typer.Option(..., help="Directory for PNG and PDF figures."),
            params: Path = PARAMS):
    """Learning curves, traces, accuracy vs training-set size, speed vs accuracy, claims chart."""
    p = _load(params)
    from .analysis.figures import figures as run_figures

    run_figures(tables, out, p, analysis_dir=analysis)


@app.command()
def report(analysis: Path = typer.Option(..., help="The analyze stage's directory."),
           figures: Path = typer.Option(..., help="The figures stage's directory."),
           out: Path = typer.Option(..., help="Directory for index.html and report.md."),
           params: Path = PARAMS):
    """Render report/index.html and report/report.md from the tables and figures."""
    p = _load(params)
    from .report.render import render

    render(analysis, figures, out, p)


@app.command("dvc-yaml")
def dvc_yaml_cmd(out: Path = typer.Option(Path("dvc.yaml"), help="Where to write dvc.yaml."),
                 params: Path = PARAMS):
    """Write dvc.yaml from the stage list (the same stages, commands and outputs as the Snakefile)."""
    import yaml

    from .dag import dvc_yaml

    p = _load(params)
    header = "# Written by `python -m pipeline dvc-yaml` from pipeline/dag.py; do not edit by hand.\n"
    out.write_text(header + yaml.safe_dump(dvc_yaml(p), sort_keys=False, width=200))


def main() -> None:
    try:
        app()
    except PipelineError as err:  # bad input (params, data, run directory): one line, no traceback
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
    except OSError as err:  # the filesystem refused (read-only, full, missing): name the path, no traceback
        if err.filename is None:
            raise
        typer.echo(f"error: {err.filename}: {err.strerror or err}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
