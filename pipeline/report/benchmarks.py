"""Runtime and peak memory per experiment, from the files of Snakemake's `benchmark:` directives.

    <benchmarks>/<rule>/<experiment>/<job>.tsv (one per tuning or training job: Snakemake's columns s, max_rss,
    cpu_time, ...) --job_costs()--> [{"rule", "experiment", "jobs", "wall_s", "mean_s", "max_s", "cpu_s",
                                      "max_rss_mb"}], one row per rule x experiment

DVC writes no such files: under `dvc repro` the list is empty and the report says where the numbers come from.
"""
from __future__ import annotations

from pathlib import Path

import polars as pl


def _read(path: Path) -> dict | None:
    try:
        table = pl.read_csv(path, separator="\t", infer_schema_length=0)
    except (OSError, pl.exceptions.PolarsError):
        return None
    if table.height == 0 or "s" not in table.columns:
        return None
    row = table.row(table.height - 1, named=True)  # the last repeat, when a job was benchmarked more than once

    def number(key):
        try:
            return float(row.get(key))
        except (TypeError, ValueError):
            return None  # "NA" (e.g. no memory sampled for a very short job)

    return {"s": number("s"), "max_rss": number("max_rss"), "cpu_time": number("cpu_time")}


def job_costs(folder: Path) -> list[dict]:
    """One row per (rule, experiment): the jobs' total, mean and longest wall-clock seconds, their CPU seconds and
    the largest peak resident memory (MB) any of them reached."""
    rows = []
    folder = Path(folder)
    if not folder.is_dir():
        return rows
    for rule_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        for exp_dir in sorted(p for p in rule_dir.iterdir() if p.is_dir()):
            jobs = [j for j in (_read(f) for f in sorted(exp_dir.rglob("*.tsv"))) if j and j["s"] is not None]
            if not jobs:
                continue
            seconds = [j["s"] for j in jobs]
            rss = [j["max_rss"] for j in jobs if j["max_rss"] is not None]
            cpu = [j["cpu_time"] for j in jobs if j["cpu_time"] is not None]
            rows.append({"rule": rule_dir.name, "experiment": exp_dir.name, "jobs": len(jobs),
                         "wall_s": round(sum(seconds), 1), "mean_s": round(sum(seconds) / len(jobs), 1),
                         "max_s": round(max(seconds), 1), "cpu_s": round(sum(cpu), 1) if cpu else None,
                         "max_rss_mb": round(max(rss), 1) if rss else None})
    return rows
