"""Render report/index.html and report/report.md from the analyze stage's outputs and the figures.

    <analysis>/analysis.json + <analysis>/tables/*.md + <figures>/figures.json + choices.md (shared) + each
    experiment package's choices.md --render()--> <out>/index.html (opens from disk; figures, CSVs by relative links)
                      <out>/report.md

The profile banner comes first: smoke (synthetic data) and quick (reduced scale) reports say, in the banner and in
every verdict, that their numbers are not reproductions of the papers' settings. The report also prints what the
statistics can and cannot show at the run counts at hand, the verdict rules (quoted from pipeline/analysis/claims.py,
their single source), every table, every figure (a skipped one with its reason), and the list of "our choice" notes.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from ..analysis import claims as claims_module
from ..errors import PipelineError
from .benchmarks import job_costs

TEMPLATES = Path(__file__).with_name("templates")
CHOICES = Path(__file__).with_name("choices.md")

BANNERS = {  # profile -> (css class, headline)
    "smoke": ("smoke", "SMOKE profile: synthetic data and tiny models. These numbers check the plumbing; they say "
                       "nothing about the methods and are not reproductions of the papers."),
    "quick": ("quick", "QUICK profile: real data at reduced scale (CPU budget). The numbers mean something, but they "
                       "are not the papers' settings and are never judged as reproductions."),
    "paper": ("paper", "PAPER profile: the papers' settings. Verdicts compare these runs with the papers' claims."),
}


def read_choices(path: Path) -> list[dict]:
    """choices.md -> [{"section", "items"}]: every '- ' line under every '## ' heading, empty sections dropped."""
    sections: list[dict] = []
    for line in Path(path).read_text().splitlines():
        if line.startswith("## "):
            sections.append({"section": line[3:].strip(), "items": []})
        elif line.startswith("- ") and sections:
            sections[-1]["items"].append(line[2:].strip())
    return [s for s in sections if s["items"]]


def verdict_rules() -> str:
    """The verdict rules as claims.py's docstring states them (one source of truth)."""
    doc = claims_module.__doc__ or ""
    start = doc.find("Verdict rules")
    return doc[start:].strip() if start >= 0 else doc.strip()


def limits_text(meta: dict) -> list[str]:
    """What the tests can and cannot show, per experiment, from the numbers analyze computed."""
    s = meta["settings"]
    lines = []
    for exp, lim in meta["limits"].items():
        if lim["comparisons"] == 0:
            lines.append(f"{exp}: no test possible: every comparison has an arm without finished runs "
                         f"(typically {lim['n_method']} vs {lim['n_baseline']}; diverged runs are counted in the tables).")
            continue
        reach = ("can reject" if lim["mannwhitney_can_reject"] else
                 "can NEVER reject, whatever the data (its smallest p is above the threshold)")
        lines.append(
            f"{exp}: {lim['comparisons']} comparison(s) of the final metric, typically {lim['n_method']} vs "
            f"{lim['n_baseline']} runs. The smallest two-sided Mann-Whitney p at these sizes is "
            f"{lim['min_mannwhitney_p']:.4f}; Holm's first threshold is alpha/m = {s['alpha']:g}/{lim['comparisons']} = "
            f"{lim['holm_first_threshold']:.4f}, so Mann-Whitney {reach}. At that level Welch's t-test detects "
            f"with {s['power']:.0%} power only standardized differences (Hedges' g) of about {lim['detectable_g']:.1f} or more.")
    return lines


GENERAL_LIMITS = [
    "With five seeds per arm (the project's setting) nothing can check the normality that t-intervals and Welch's "
    "test assume; the Mann-Whitney test needs no such assumption but has a floor on its p-value (2/252 = 0.0079 "
    "for 5 vs 5).",
    "A non-significant difference is not evidence of equal performance: only large effects are detectable; an "
    "equivalence claim would need a margin and far more runs.",
    "Percentile-bootstrap intervals over five values are too narrow (they ignore the uncertainty in the spread); "
    "the t-interval is the primary interval and the one the verdicts use.",
    "Seeds vary initialization, data order, subsets and augmentation together; the intervals are over that whole "
    "variation, not over datasets or hardware.",
    "Time to target: runs that never reached the target are counted and ranked last (censored) in Mann-Whitney and "
    "P(improve); the mean seconds shown use only the runs that reached it and so flatter an arm that often did not.",
]


def _figure_entries(figures_dir: Path, out_dir: Path, params) -> list[dict]:
    manifest_path = figures_dir / "figures.json"
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())["figures"]
    else:
        from ..analysis.figures import figure_list

        manifest = [{"name": n, "what": f.what, "status": "missing", "reason": "no figures.json", "png": f"{n}.png",
                     "pdf": f"{n}.pdf"} for n, f in figure_list({e: params.experiment(e) for e in params.experiments})
                    .items()]
    entries = []
    for f in manifest:
        png, pdf = figures_dir / f["png"], figures_dir / f["pdf"]
        if not png.is_file():
            f = {**f, "status": "missing", "reason": f"{png} not found"}
        entries.append({**f, "png_href": os.path.relpath(png, out_dir), "exists": png.is_file(),
                        "pdf_href": os.path.relpath(pdf, out_dir) if pdf.is_file() else None})  # no link to nothing
    return entries


def all_choices(params, shared: Path = CHOICES) -> list[dict]:
    """The shared choices (data, analysis), then each experiment's (its package's choices.md), in params order."""
    found = read_choices(shared)
    for exp in params.experiments:
        path = params.experiment(exp).file("choices.md")
        found += read_choices(path) if path else []
    return found


def render(analysis_dir: Path, figures_dir: Path, out_dir: Path, params, choices_path: Path = CHOICES,
           benchmarks_dir: Path | None = None) -> Path:
    """Stage entry: writes <out>/index.html and <out>/report.md; returns the HTML path.

    `params`: the validated Params (its experiments, .profile and .synthetic). The analysis must be of the same
    profile. `benchmarks_dir`: Snakemake's benchmark files (job runtime and peak memory), when there are any."""
    analysis_dir, figures_dir, out_dir = Path(analysis_dir), Path(figures_dir), Path(out_dir)
    meta_path = analysis_dir / "analysis.json"
    if not meta_path.is_file():
        raise PipelineError(f"{meta_path}: missing; run the analyze stage first")
    meta = json.loads(meta_path.read_text())
    if meta["profile"] != params.profile:
        raise PipelineError(f"{meta_path}: analysed profile {meta['profile']!r}, but params.yaml says "
                            f"{params.profile!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    css, headline = BANNERS[params.profile]
    if params.synthetic and params.profile != "smoke":
        css, headline = "smoke", f"{params.profile.upper()} profile on SYNTHETIC data: not comparable to the papers."
    tables = []
    for t in meta["tables"]:
        md_path = analysis_dir / "tables" / f"{t['name']}.md"
        tables.append({**t, "markdown": md_path.read_text() if md_path.is_file() else "",
                       "csv_href": os.path.relpath(analysis_dir / "tables" / f"{t['name']}.csv", out_dir)})
    context = {
        "meta": meta, "profile": params.profile, "synthetic": params.synthetic, "banner_class": css,
        "banner": headline + (" Data: synthetic (generated by the pipeline)." if params.synthetic else ""),
        "tables": tables, "figures": _figure_entries(figures_dir, out_dir, params),
        "choices": all_choices(params, choices_path),
        "limits": limits_text(meta), "general_limits": GENERAL_LIMITS, "rules": verdict_rules(),
        "csv": {n: os.path.relpath(analysis_dir / f"{n}.csv", out_dir) for n in ("summary", "comparisons", "claims")},
        "job_costs": job_costs(benchmarks_dir) if benchmarks_dir is not None else [],
    }
    loader = FileSystemLoader(TEMPLATES)
    html_env = Environment(loader=loader, autoescape=True, undefined=StrictUndefined)
    md_env = Environment(loader=loader, autoescape=False, undefined=StrictUndefined, keep_trailing_newline=True)
    html = out_dir / "index.html"
    html.write_text(html_env.get_template("index.html.j2").render(**context))
    (out_dir / "report.md").write_text(md_env.get_template("report.md.j2").render(**context))
    return html
