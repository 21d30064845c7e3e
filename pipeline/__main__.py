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
    typer.echo(f"profile {p.profile} (synthetic data: {p.synthetic}); seeds {p.seeds}; "
               f"one training job per {p.job_per}")
    for exp in p.experiments:
        where = shown(p.experiment(exp).folder)
        typer.echo(f"{exp} ({len(p.variants(exp))} variants, {where}): {', '.join(p.variants(exp))}")
    written = params.parent / "dvc.yaml"
    if written.is_file():
        import yaml

        from .dvcfile import dvc_yaml

        if yaml.safe_load(written.read_text()) != dvc_yaml(p):
            typer.echo(f"note: {written} was written for another profile or grid (its training jobs differ); "
                       f"`python -m pipeline dvc-yaml` rewrites it for this one (Snakemake needs nothing)")


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
def settings(out: Path = typer.Option(..., help="Directory for <experiment>/<variant>.json."),
             runs: Path = typer.Option(Path("results/runs"), help="Where the runs are, to say what changed."),
             params: Path = PARAMS):
    """Write every variant's resolved settings (the file its jobs depend on) and say which keys changed since its
    runs were made."""
    p = _load(params)
    from .resolved import write

    changed = write(p, out, runs)
    for line in changed:
        typer.echo(f"changed: {line}", err=True)
    typer.echo(f"{sum(len(p.variants(e)) for e in p.experiments)} variants' settings in {out}")


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
           benchmarks: Optional[Path] = typer.Option(None, help="Snakemake's benchmark files (job runtime and peak "
                                                     "memory; absent under DVC)."),
           params: Path = PARAMS):
    """Render report/index.html and report/report.md from the tables and figures."""
    p = _load(params)
    from .report.render import render

    render(analysis, figures, out, p, benchmarks_dir=benchmarks)


@app.command()
def plan(profile: Optional[str] = typer.Option(None, help="smoke, quick or paper (default: the params file's)."),
         device: str = typer.Option("h100", help="An accelerator of pipeline/plan.py's table (h100, a100, v100, l4, "
                                    "a10g, rtx4090), or cpu: this machine, measured."),
         gpus: int = typer.Option(1, help="GPUs the jobs are spread over."),
         jobs_per_gpu: int = typer.Option(1, help="Jobs sharing one GPU."),
         precision: str = typer.Option("fp32", help="fp32 (the params' default: no autocast), tf32 or bf16."),
         efficiency: Optional[float] = typer.Option(None, help="Fraction of the peak sustained (default: "
                                                    "pipeline/plan.py DEFAULT_EFFICIENCY, with its reason)."),
         calibrate: bool = typer.Option(False, help="Time a real training step here and plan for this machine."),
         calibrate_on: Optional[str] = typer.Option(None, help="experiment[/variant] whose step --calibrate times "
                                                    "(default: the first experiment's first variant)."),
         params: Path = PARAMS):
    """The cost plan: per experiment its jobs, training FLOPs and GPU-hours on an accelerator, and the wall-clock."""
    from . import plan as cost

    try:
        p = cfg.load(params, profile)
    except cfg.ConfigError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2)
    eff = cost.DEFAULT_EFFICIENCY if efficiency is None else efficiency
    measure = calibrate or device == "cpu"
    cost.wall_clock([], gpus, jobs_per_gpu)  # checks --gpus and --jobs-per-gpu
    if not measure:  # a bad device, precision or efficiency: one line before any work
        flops = cost.throughput(device, precision, eff)
        label = (f"{device} {precision}, {cost.ACCELERATORS[device][precision] / 1e12:,.4g} TFLOP/s peak x "
                 f"efficiency {eff:g}" + (f" (the default: {cost.EFFICIENCY_REASON})" if efficiency is None else ""))
    _set_threads()  # the FLOP counts run a model forward; a calibration times a step as one job would run it
    if measure:
        experiment, _, variant = (calibrate_on or "").partition("/")
        c = cost.calibrate(p, experiment or None, variant or None)
        flops, label = c.flops_per_s, (f"this machine, {c.flops_per_s / 1e9:,.1f} GFLOP/s measured on {c.probe} "
                                       f"({c.flops_per_step / 1e9:,.1f} GFLOP in {c.seconds_per_step:.2f} s a step)")
    typer.echo(cost.render(p, cost.estimate(p), flops, label, gpus, jobs_per_gpu))


@app.command("dvc-yaml")
def dvc_yaml_cmd(out: Path = typer.Option(Path("dvc.yaml"), help="Where to write dvc.yaml."),
                 params: Path = PARAMS):
    """Write dvc.yaml from the stage groups (the same stages, commands and outputs as the Snakefile)."""
    from .dvcfile import dvc_yaml, render

    out.write_text(render(dvc_yaml(_load(params))))


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
