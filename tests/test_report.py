"""analyze + figures + render from fake run directories: the report's links resolve, the profile banner is honest,
smoke results are never called reproductions, and the verdict rules fire as claims.py states them."""
from __future__ import annotations

import functools
import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
import yaml

from pipeline import config
from pipeline.analysis.collect import collect
from pipeline.analysis.figures import figure_list, figures
from pipeline.analysis.tables import analyze, limits
from pipeline.report.render import limits_text, render
from test_collect import write_run

ROOT = Path(__file__).resolve().parents[1]
# the report's figures, by stable name (figures/<name>.{png,pdf}; Snakemake and DVC declare these files)
FIGURE_NAMES = ["block_size_curves", "block_size_block_trace", "edba_curves", "edba_train_size", "edba_batch_trace",
                "growth_curves", "growth_width_trace", "optimizers_curves", "optimizers_speed_accuracy",
                "claims_chart"]


@functools.cache
def params(profile: str, synthetic: bool) -> config.Params:
    """params.yaml validated for `profile`, its data synthetic or not, with fewer bootstrap resamples (the tests
    check plumbing, not precision)."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["analysis"]["bootstrap_resamples"] = 500
    raw["profiles"][profile]["synthetic"] = synthetic
    p = config.validate(raw, profile)
    assert (p.profile, p.synthetic, p.analysis.bootstrap_resamples) == (profile, synthetic, 500)
    return p


def figure_names(p: config.Params) -> list[str]:
    return list(figure_list({e: p.experiment(e) for e in p.experiments}))


def grid(root: Path, profile: str = "smoke", seeds: int = 3) -> None:
    """All four experiments, a few variants each; one diverged EDBA run."""
    g = np.random.default_rng(1)
    for seed in range(seeds):
        for v, base in (("fixed16", 130.0), ("doubling", 112.0)):
            write_run(root, "block_size", v, seed, method=v, dataset="ptb", subset=None, metric="test_ppl", mode="min",
                      curve=list(base + 30 / np.arange(1, 4) + g.normal(0, 1, 3)), profile=profile,
                      trace={"block_size": [16, 32, 64] if v == "doubling" else [16] * 3})
        for sub, size in (("full", 1000), ("n100", 100)):
            for m, acc in (("baseline", 0.5), ("edba", 0.6)):
                run = write_run(root, "edba", f"{m}-cifar10-{sub}", seed, method=m, dataset="cifar10", subset=sub,
                                metric="test_acc", mode="max", curve=list(np.linspace(0.2, acc, 3) + g.normal(0, .01, 3)),
                                trace={"batch_size": [100, 80, 120]}, profile=profile,
                                diverged=(m == "edba" and sub == "n100" and seed == 0))
                metrics = json.loads((run / "metrics.json").read_text())
                (run / "metrics.json").write_text(json.dumps({**metrics, "distinct_samples": size}))
        for m, fl in (("fixed_full", 1.0), ("grow_vt_lr", 0.55)):
            write_run(root, "growth", f"{m}-cifar10", seed, method=m, dataset="cifar10", subset=None, metric="test_acc",
                      mode="max", curve=list(np.linspace(0.3, 0.8, 3) + g.normal(0, .01, 3)), profile=profile,
                      trace={"width": [0.25, 0.6, 1.0] if fl < 1 else [1.0] * 3}, flops_per_epoch=1e9 * fl)
        for m, acc in (("sgd", 0.5), ("nadam", 0.6), ("norm-both", 0.55), ("norm-none", 0.5)):
            write_run(root, "optimizers", m, seed, method=m, dataset="cifar10", subset=None, metric="test_acc",
                      mode="max", curve=list(np.linspace(0.2, acc, 3) + g.normal(0, .01, 3)), profile=profile,
                      target=0.3, seconds_per_epoch=1 + g.uniform(0, 0.2))


def pipeline(tmp: Path, p) -> dict[str, Path]:
    dirs = {k: tmp / k for k in ("tables", "analysis", "figures", "report")}
    collect(tmp / "runs", dirs["tables"], log=lambda s: None)
    analyze(dirs["tables"], p, dirs["analysis"], log=lambda s: None)
    figures(dirs["tables"], dirs["figures"], p, dirs["analysis"])
    render(dirs["analysis"], dirs["figures"], dirs["report"], p)
    return dirs


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("smoke")
    grid(tmp / "runs")
    (tmp / "runs" / "growth" / "grow_vt_lr-cifar10" / "seed2" / "metrics.json").unlink()  # a killed job
    return pipeline(tmp, params("smoke", True))


def test_every_linked_file_exists(smoke):
    html = (smoke["report"] / "index.html").read_text()
    links = re.findall(r'(?:src|href)="([^"#][^"]*)"', html)
    images = re.findall(r'<img src="([^"]+)"', html)
    assert figure_names(params("smoke", True)) == FIGURE_NAMES
    assert len(images) == len(FIGURE_NAMES)  # every figure shown
    for link in links:
        assert (smoke["report"] / link).is_file(), link
    md = (smoke["report"] / "report.md").read_text()
    for link in re.findall(r"\]\(([^)]+)\)", md):
        assert (smoke["report"] / link).is_file(), link
    manifest = json.loads((smoke["figures"] / "figures.json").read_text())
    assert [f["name"] for f in manifest["figures"]] == FIGURE_NAMES and manifest["profile"] == "smoke"
    for name in FIGURE_NAMES:
        assert (smoke["figures"] / f"{name}.png").is_file() and (smoke["figures"] / f"{name}.pdf").is_file()


def test_the_choices_are_the_shared_ones_then_each_experiments(smoke):
    """report/choices.md (data, analysis), then every experiment package's choices.md, in params.yaml's order."""
    md = (smoke["report"] / "report.md").read_text().split("\n## Our choices")[1].split("\n## ")[0]
    headings = re.findall(r"^### (.+)$", md, re.M)
    assert headings == ["data", "analysis", "Adaptive block size", "EDBA", "Growing networks", "Optimizers"]


def test_smoke_banner_and_no_reproduction(smoke):
    html = (smoke["report"] / "index.html").read_text()
    banner = re.search(r'id="profile-banner">([^<]*)<', html).group(1)
    assert "smoke" in banner.lower() and "synthetic" in banner.lower()
    assert "SMOKE" in (smoke["report"] / "report.md").read_text().split("\n## ")[0]
    verdicts = pl.read_csv(smoke["analysis"] / "claims.csv")["verdict"].to_list()
    assert verdicts and all("reproduced" not in v for v in verdicts)
    assert {v.split(" (")[0] for v in verdicts} == {"not comparable", "not tested"}
    claims_table = next(t for t in json.loads((smoke["analysis"] / "analysis.json").read_text())["tables"]
                        if t["name"] == "claims")
    verdict_col = claims_table["headers"].index("Verdict")
    assert all("reproduced" not in row[verdict_col] for row in claims_table["rows"])


def test_report_names_incomplete_and_diverged_runs(smoke):
    html = (smoke["report"] / "index.html").read_text()
    assert "growth/grow_vt_lr-cifar10/seed2" in html
    edba = (smoke["analysis"] / "tables" / "edba_table1.md").read_text()
    assert "(2/3, 1 div)" in edba  # the diverged run is counted, not hidden
    assert "What the statistics can and cannot show" in html and "0.1000" in html  # 3 vs 3: min M-W p = 2/20


def test_missing_experiments_are_skipped_not_fatal(tmp_path):
    write_run(tmp_path / "runs", "block_size", "fixed16", 0, method="fixed16", dataset="ptb", subset=None,
              metric="test_ppl", mode="min", curve=[200.0, 150.0])
    write_run(tmp_path / "runs", "edba", "edba-cifar10-full", 0, method="edba", dataset="cifar10", subset="full",
              metric="test_acc", mode="max", curve=[0.2, 0.3], profile="quick")  # another profile's leftover
    dirs = pipeline(tmp_path, params("smoke", True))
    manifest = {f["name"]: f for f in json.loads((dirs["figures"] / "figures.json").read_text())["figures"]}
    assert manifest["block_size_curves"]["status"] == "drawn"
    assert manifest["edba_curves"]["status"] == "skipped" and "no edba runs" in manifest["edba_curves"]["reason"]
    meta = json.loads((dirs["analysis"] / "analysis.json").read_text())
    assert any(s.startswith("edba: no runs") for s in meta["skipped"])
    assert len(meta["other_profile_runs"]) == 1 and meta["experiments"]["edba"] == 0
    assert "Skipped: edba: no runs" in (dirs["report"] / "index.html").read_text()


def _paper_verdicts(tmp: Path, ppl_fixed, ppl_dynamic, diverged_edba: bool = False) -> dict[str, dict]:
    runs = tmp / "runs"
    for seed, (a, b) in enumerate(zip(ppl_fixed, ppl_dynamic)):
        write_run(runs, "block_size", "fixed16", seed, method="fixed16", dataset="ptb", subset=None, metric="test_ppl",
                  mode="min", curve=[300.0, a], profile="paper")
        write_run(runs, "block_size", "doubling", seed, method="doubling", dataset="ptb", subset=None,
                  metric="test_ppl", mode="min", curve=[300.0, b], profile="paper")
        for m, acc in (("baseline", 0.92014), ("edba", 0.92196)):
            write_run(runs, "edba", f"{m}-cifar10-full", seed, method=m, dataset="cifar10", subset="full",
                      metric="test_acc", mode="max", curve=[0.5, acc + 0.001 * (seed - 2)], profile="paper",
                      diverged=diverged_edba and m == "edba" and seed == 0)
    collect(runs, tmp / "tables", log=lambda s: None)
    analyze(tmp / "tables", params("paper", False), tmp / "analysis", log=lambda s: None)
    return {r["id"]: r for r in pl.read_parquet(tmp / "analysis" / "claims.parquet").to_dicts()}


def test_paper_profile_verdict_rules(tmp_path):
    # fixed16 near the claimed 125.4 with a narrow CI; doubling far above its claimed 110.3 and worse than fixed
    v = _paper_verdicts(tmp_path, [125.0, 125.5, 126.0, 125.2, 125.8], [140.0, 141.0, 139.5, 140.5, 141.5],
                        diverged_edba=True)
    assert v["abs-fixed"]["verdict"] == "reproduced"
    assert v["abs-dynamic"]["verdict"] == "not reproduced"
    assert v["abs-better"]["verdict"] == "not reproduced" and "other way" in v["abs-better"]["reason"]
    assert v["edba-c10-edba-full"]["verdict"] == "inconclusive" and "diverged" in v["edba-c10-edba-full"]["reason"]
    assert v["edba-c10-base-full"]["verdict"] == "reproduced"  # 92.014 inside a CI 0.16 points wide
    assert v["edba-c10-base-p10"]["verdict"] == "inconclusive" and v["edba-c10-base-p10"]["reason"] == "no runs match"
    assert v["dba-mnist"]["verdict"] == "not tested"


def test_wide_interval_is_inconclusive_and_significant_gain_reproduces(tmp_path):
    # fixed16 spread so wide that 125.4 lies inside a CI of half-width > 5; doubling clearly better
    v = _paper_verdicts(tmp_path, [105.0, 145.0, 115.0, 135.0, 127.0], [110.0, 110.5, 109.8, 110.9, 110.1])
    assert v["abs-fixed"]["verdict"] == "inconclusive" and "half-width" in v["abs-fixed"]["reason"]
    assert v["abs-dynamic"]["verdict"] == "reproduced"
    assert v["abs-better"]["verdict"] == "inconclusive"  # right direction, but Welch p is not below 0.05
    v = _paper_verdicts(tmp_path / "b", [125.0, 126.0, 125.5, 124.8, 125.9], [110.0, 110.5, 109.8, 110.9, 110.1])
    assert v["abs-better"]["verdict"] == "reproduced" and v["abs-better"]["p_holm"] < 0.05


def test_analysis_is_deterministic(tmp_path):
    grid(tmp_path / "runs", profile="quick")
    collect(tmp_path / "runs", tmp_path / "tables", log=lambda s: None)
    for out in ("a1", "a2"):
        analyze(tmp_path / "tables", params("quick", False), tmp_path / out, log=lambda s: None)
    assert (tmp_path / "a1" / "comparisons.csv").read_text() == (tmp_path / "a2" / "comparisons.csv").read_text()
    verdicts = pl.read_csv(tmp_path / "a1" / "claims.csv")["verdict"].to_list()
    assert all(v in ("not comparable (profile quick)", "not tested") for v in verdicts)


def test_an_experiment_without_any_possible_test_is_reported_not_a_crash():
    comparisons = pl.DataFrame({"experiment": ["block_size"], "quantity": ["final"], "n_method": [0],
                                "n_baseline": [5], "holm_m": [0]})  # every run of the method diverged
    settings = SimpleNamespace(alpha=0.05, power=0.8)
    lim = limits(pl.DataFrame(), comparisons, settings, ["block_size", "edba"])
    assert set(lim) == {"block_size"} and lim["block_size"]["comparisons"] == 0  # edba: no comparison, no line
    (line,) = limits_text({"settings": {"alpha": 0.05, "power": 0.8}, "limits": lim})
    assert line.startswith("block_size: no test possible")


def test_a_missing_pdf_is_not_linked(smoke, tmp_path):
    figs = tmp_path / "figures"
    shutil.copytree(smoke["figures"], figs)
    (figs / f"{FIGURE_NAMES[0]}.pdf").unlink()
    render(smoke["analysis"], figs, tmp_path / "report", params("smoke", True))
    html = (tmp_path / "report" / "index.html").read_text()
    for link in re.findall(r'(?:src|href)="([^"#][^"]*)"', html):
        assert (tmp_path / "report" / link).is_file(), link
    assert html.count("(no PDF)") == 1


def test_coinciding_curves_are_one_line_naming_all_and_long_legends_leave_the_data():
    import matplotlib.pyplot as plt

    from pipeline.analysis.figures import LEGEND_INSIDE, legend, plot_per_epoch

    rows = [{"variant": v, "seed": s, "epoch": e, "width": (0.25 * e if v != "fixed" else 1.0) + 0.01 * s * (v == "c")}
            for v in ("a", "b", "c", "fixed") for s in (0, 1) for e in (1, 2, 3)]
    fig, ax = plt.subplots()
    plot_per_epoch(ax, pl.DataFrame(rows), "width", {v: v for v in ("a", "b", "c", "fixed")}, 0.95)
    assert [line.get_label() for line in ax.get_lines()] == ["a = b (same curve)", "c", "fixed"]
    legend(ax)
    assert ax.get_legend().get_bbox_to_anchor().transformed(ax.transAxes.inverted()).x0 < 1.0  # a short one: inside
    many = [{"variant": f"v{i}", "seed": 0, "epoch": 1, "width": float(i)} for i in range(LEGEND_INSIDE + 1)]
    fig2, ax2 = plt.subplots()
    plot_per_epoch(ax2, pl.DataFrame(many), "width", {f"v{i}": f"v{i}" for i in range(LEGEND_INSIDE + 1)}, 0.95)
    legend(ax2)
    box = ax2.get_legend().get_bbox_to_anchor().transformed(ax2.transAxes.inverted())
    assert box.x0 > 1.0  # beside the axes, not over the curves
    plt.close(fig), plt.close(fig2)
