"""Cell formatting for the analysis tables (Markdown and the report): numbers, p-values, run counts, layouts."""
from __future__ import annotations

import math

import polars as pl

DIVERGED_NOTE = "Diverged runs are excluded from means, intervals and tests; their count is shown in every row."


def scale_of(metric: str | None) -> float:
    """Harness accuracies are fractions; the papers (and these tables) print %."""
    return 100.0 if metric and metric.endswith("acc") else 1.0


def num(x, digits: int = 2) -> str:
    """Fixed decimals; 3 significant digits for large numbers (FLOPs); an em dash for none."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:.3g}" if abs(x) >= 1e5 else f"{x:.{digits}f}"


def pval(p) -> str:
    return "—" if p is None or (isinstance(p, float) and math.isnan(p)) else f"{p:.2g}"


def runs_cell(r: dict) -> str:
    """'5/5' or '4/5, 1 div' (runs used / runs, diverged); n_missing counts runs without the value."""
    cell = f"{r['n']}/{r['n_runs']}"
    return cell + (f", {r['n_diverged']} div" if r["n_diverged"] else "")


def mean_sd(r: dict | None, scale: float, digits: int) -> str:
    if r is None or r["n"] == 0:
        return "no runs" if r is None else f"— ({runs_cell(r)})"
    return f"{num(r['mean'] * scale, digits)} ± {num(r['sd'] * scale, digits)} ({runs_cell(r)})"


def markdown(headers: list[str], rows: list[list[str]]) -> str:
    esc = [[str(c).replace("|", "\\|") for c in row] for row in [headers] + rows]
    lines = ["| " + " | ".join(esc[0]) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in esc[1:]]) + "\n"


def table(name: str, title: str, headers: list[str], rows: list[list[str]], data: pl.DataFrame, caption: str) -> dict:
    return {"name": name, "title": title, "headers": headers, "rows": rows, "data": data,
            "caption": f"{caption} {DIVERGED_NOTE}".strip()}
