"""Verdict rules on planted runs (paper profile): censored time-to-target, asymmetric better/best verdicts, value
claims against the paper's own spread, comparisons matched on dataset; plus the statistics they rest on."""
from __future__ import annotations

import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import polars as pl
import pytest
from scipy import stats as sps

from pipeline.analysis import stats
from pipeline.analysis.claims import _comparison
from pipeline.analysis.collect import collect
from pipeline.analysis.ledger import ledger_for, load_ledger
from pipeline.analysis.tables import analyze
from pipeline.errors import ConfigError
from pipeline.experiments.edba.figures import plot_train_size
from test_collect import write_run
from test_report import params

ROOT = Path(__file__).resolve().parents[1]


# ---- the statistics ------------------------------------------------------------------------------------------
def test_censored_runs_rank_last_like_any_larger_value():
    x, y = [3.0, 4.0, 5.0, np.inf, 6.0], [np.inf, 7.0, np.inf, np.inf, 8.0]
    big = [1e9 if np.isinf(v) else v for v in x], [1e9 if np.isinf(v) else v for v in y]
    assert stats.mann_whitney(x, y).p == pytest.approx(stats.mann_whitney(*big).p)
    assert stats.prob_improvement(x, y, "min") == pytest.approx(stats.prob_improvement(*big, "min"))
    assert stats.mann_whitney([1.0] * 5, [np.inf] * 5).p == pytest.approx(2 / 252)
    with pytest.raises(ValueError, match="nan"):
        stats.mann_whitney([1.0, np.nan], [2.0])


def test_welch_against_reported_summary_equals_welch_on_values():
    x, y = np.array([91.8, 92.0, 92.1, 92.3, 91.9]), np.array([92.4, 92.6, 92.5, 92.9, 92.2])
    expected = sps.ttest_ind(x, y, equal_var=False).pvalue
    assert stats.welch_vs_reported(x, y.mean(), y.std(ddof=1), len(y)).p == pytest.approx(expected)


def test_sd_from_ci_inverts_the_t_interval():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    s = stats.describe(x)
    assert stats.sd_from_ci(s.lo, s.hi, 5) == pytest.approx(x.std(ddof=1))


# ---- verdicts on planted runs --------------------------------------------------------------------------------
def _verdicts(tmp: Path, arms: dict, dataset: str = "cifar10") -> dict[str, dict]:
    """arms: variant -> (final accuracies per seed, seconds to the 0.3 target per seed; None = never reached,
    and then the run ends at 0.25 whatever its accuracy entry says)."""
    for variant, (accs, secs) in arms.items():
        ds = dataset
        if "@" in variant:
            variant, ds = variant.split("@")
        for seed, (acc, sec) in enumerate(zip(accs, secs)):
            curve = [0.2, 0.25] if sec is None else [0.35, acc]
            write_run(tmp / "runs", "optimizers", variant, seed, method=variant, dataset=ds, subset=None,
                      metric="test_acc", mode="max", curve=curve, profile="paper", target=0.3,
                      seconds_per_epoch=sec or 1.0)
    collect(tmp / "runs", tmp / "tables", log=lambda s: None)
    analyze(tmp / "tables", params("paper", False), tmp / "analysis", log=lambda s: None)
    return {r["id"]: r for r in pl.read_parquet(tmp / "analysis" / "claims.parquet").to_dicts()}


ACC = [0.60, 0.61, 0.59, 0.605, 0.595]


def test_runs_that_never_reach_the_target_are_censored_not_dropped(tmp_path):
    # nadam reaches the target every time; sgd never does: the faster claim must be testable, and reproduced
    v = _verdicts(tmp_path / "a", {"nadam": (ACC, [2.0, 2.1, 1.9, 2.2, 2.0]), "sgd": (ACC, [None] * 5)})
    c = v["survey-nadam-faster"]
    assert c["verdict"] == "reproduced" and "Mann-Whitney" in c["reason"], c
    cmp = pl.read_parquet(tmp_path / "a" / "analysis" / "comparisons.parquet").filter(
        (pl.col("quantity") == "seconds_to_target") & (pl.col("baseline") == "sgd")).row(0, named=True)
    assert cmp["censored"] and cmp["missing_baseline"] == 5 and cmp["better"] == "method"
    assert cmp["mw_p"] == pytest.approx(2 / 252) and cmp["prob_improvement"] == 1.0
    # the other way round: a significant reversal refutes it
    v = _verdicts(tmp_path / "b", {"nadam": (ACC, [None] * 5), "sgd": (ACC, [2.0, 2.1, 1.9, 2.2, 2.0])})
    assert v["survey-nadam-faster"]["verdict"] == "not reproduced"


def test_a_reversal_that_is_not_significant_is_inconclusive(tmp_path):
    noisy = [0.50, 0.70, 0.55, 0.66, 0.58]
    v = _verdicts(tmp_path, {"nadam": (noisy, [1.0] * 5), "sgd": ([a + 0.01 for a in noisy[::-1]], [1.0] * 5)})
    c = v["survey-nadam-sgd"]
    assert c["verdict"] == "inconclusive" and "other way" in c["reason"], c
    assert v["survey-nadam-best"]["verdict"] == "inconclusive" and "not significantly" in v["survey-nadam-best"]["reason"]


def test_a_significantly_better_rival_refutes_a_best_claim(tmp_path):
    v = _verdicts(tmp_path, {"nadam": (ACC, [1.0] * 5), "sgd": ([a + 0.1 for a in ACC], [1.0] * 5)})
    assert v["survey-nadam-best"]["verdict"] == "not reproduced" and "significantly" in v["survey-nadam-best"]["reason"]


def test_a_comparison_is_taken_from_the_claims_dataset_and_oriented_as_claimed():
    rows = [{"experiment": "optimizers", "quantity": "final", "dataset": d, "subset": None, "method": "nadam",
             "baseline": "sgd", "diff": diff, "diff_lo": diff - 1, "diff_hi": diff + 1, "hedges_g": diff,
             "prob_improvement": 0.9, "better": "method" if diff > 0 else "baseline", "p_holm": 0.01}
            for d, diff in (("another", -5.0), ("cifar10", 3.0))]  # "another" sorts first
    comparisons = pl.DataFrame(rows)
    ledger = load_ledger({"optimizers": ROOT / "pipeline" / "experiments" / "optimizers" / "claims.yaml"})
    claim = next(c for c in ledger.claims if c.id == "survey-nadam-sgd")
    assert _comparison(comparisons, claim, "nadam", "sgd")["diff"] == 3.0
    flipped = _comparison(comparisons, claim, "sgd", "nadam")  # stored the other way round
    assert flipped["diff"] == -3.0 and (flipped["diff_lo"], flipped["diff_hi"]) == (-4.0, -2.0)
    assert flipped["better"] == "baseline" and flipped["prob_improvement"] == pytest.approx(0.1)
    anywhere = claim.model_copy(update={"dataset": None})
    assert "2 (dataset, subset) groups" in _comparison(comparisons, anywhere, "nadam", "sgd")


def test_a_value_claim_is_judged_against_the_papers_spread(tmp_path):
    # EDBA Table 1, CIFAR10 baseline at 1%: 40.516 +- 1.358 over 5 seeds. Ours 41.6 with a small spread: the
    # claimed mean lies outside our CI, but given the paper's own sd the two means are not significantly apart.
    for seed, acc in enumerate([0.414, 0.416, 0.418, 0.415, 0.417]):
        write_run(tmp_path / "runs", "edba", "baseline-cifar10-p1", seed, method="baseline", dataset="cifar10",
                  subset="p1", metric="test_acc", mode="max", curve=[0.2, acc], profile="paper")
        write_run(tmp_path / "runs", "edba", "baseline-cifar10-p10", seed, method="baseline", dataset="cifar10",
                  subset="p10", metric="test_acc", mode="max", curve=[0.2, 0.73 + 0.001 * seed], profile="paper")
    collect(tmp_path / "runs", tmp_path / "tables", log=lambda s: None)
    analyze(tmp_path / "tables", params("paper", False), tmp_path / "analysis", log=lambda s: None)
    v = {r["id"]: r for r in pl.read_parquet(tmp_path / "analysis" / "claims.parquet").to_dicts()}
    c = v["edba-c10-base-p1"]
    assert c["lo"] > 40.516  # outside our CI ...
    assert c["verdict"] == "reproduced" and c["p"] > 0.05, c  # ... but inside the paper's spread
    assert v["edba-c10-base-p10"]["verdict"] == "not reproduced" and v["edba-c10-base-p10"]["p"] < 0.05  # 73.2 vs 71.654 +- 0.087


# ---- the ledger: one claims.yaml per experiment + the shared units -------------------------------------------------
def test_the_ledger_merges_each_experiments_file_and_keeps_its_labels_apart(tmp_path):
    def claims_file(name: str, body: str) -> Path:
        (tmp_path / name).write_text(body)
        return tmp_path / name

    a = claims_file("a.yaml", """
metric: test_acc
reference: base
labels: {method: {m: Ours}}
comparisons: [{family: f, methods: [m], baselines: [base]}]
claims: [{id: a-1, source: s, statement: x, kind: value, arm: m, unit: percent, claimed: 90.0}]
""")
    b = claims_file("b.yaml", """
units: {widgets: {scale: 1, label: widgets}}
labels: {method: {m: Theirs}}
claims: [{id: b-1, source: s, statement: y, kind: value, arm: m, unit: widgets, claimed: 3.0}]
""")
    ledger = load_ledger({"exp_a": a, "exp_b": b, "exp_c": None})
    assert {c.id: c.experiment for c in ledger.claims} == {"a-1": "exp_a", "b-1": "exp_b"}
    assert ledger.labels == {"exp_a": {"method": {"m": "Ours"}}, "exp_b": {"method": {"m": "Theirs"}}}
    assert ledger.reference == {"exp_a": "base"} and ledger.metrics == {"exp_a": "test_acc"}
    assert [r.family for r in ledger.comparisons["exp_a"]] == ["f"] and ledger.comparisons["exp_b"] == []
    assert "percent" in ledger.units and "widgets" in ledger.units  # the shared units and the file's own
    with pytest.raises(ConfigError, match="claims ledger of exp_b, exp_b2: duplicate claim ids"):
        load_ledger({"exp_b": b, "exp_b2": b})
    moved = claims_file("moved.yaml", a.read_text().replace("kind: value", "experiment: exp_a, kind: value"))
    with pytest.raises(ConfigError, match=r"moved.yaml: claim a-1: names experiment 'exp_a', not 'exp_b'"):
        load_ledger({"exp_b": moved})
    with pytest.raises(ConfigError, match=r"claim c: unknown unit 'widgets'"):
        load_ledger({"exp_c": claims_file("c.yaml", "claims: [{id: c, source: s, statement: z, kind: value, arm: m, "
                                          "unit: widgets, claimed: 1.0}]")})  # b.yaml's unit is not shared
    with pytest.raises(ConfigError, match=r"d.yaml: units.percent: differs"):  # no silent redefinition
        load_ledger({"exp_d": claims_file("d.yaml", "units: {percent: {scale: 1, label: '%'}}")})


def test_every_experiments_claims_file_loads_and_carries_its_own_labels():
    p = params("paper", False)
    ledger = ledger_for(p)
    assert set(ledger.labels) == set(p.experiments) == {c.experiment for c in ledger.claims}
    assert ledger.labels["edba"]["subset"]["p1"] == "1% of Data"
    assert len({c.id for c in ledger.claims}) == len(ledger.claims) > 0


# ---- tables, figures, report plumbing --------------------------------------------------------------------------
def test_the_growth_table_shows_every_claim_of_a_variant(tmp_path):
    for seed in range(3):
        for m in ("fixed_full", "grow_vt_lr", "grow_lr"):
            write_run(tmp_path / "runs", "growth", f"{m}-cifar10", seed, method=m, dataset="cifar10", subset=None,
                      metric="test_acc", mode="max", curve=[0.5, 0.9], profile="paper")
    collect(tmp_path / "runs", tmp_path / "tables", log=lambda s: None)
    analyze(tmp_path / "tables", params("paper", False), tmp_path / "analysis", log=lambda s: None)
    lines = (tmp_path / "analysis" / "tables" / "growth_table.md").read_text().splitlines()
    row = {v: next(line for line in lines if f"| {v}-cifar10 |" in line) for v in ("grow_vt_lr", "grow_lr")}
    assert "92.53" in row["grow_vt_lr"] and "grow-c10-grown" in row["grow_vt_lr"]  # the headline: the method
    assert "92.24" in row["grow_lr"] and "grow-abl-lr" in row["grow_lr"]  # the ablation row: its own arm
    assert "92.24" not in row["grow_vt_lr"]


def test_the_edba_size_axis_is_the_subset_size_not_the_samples_seen():
    final = pl.DataFrame({"dataset": ["cifar10"] * 4, "method": ["edba"] * 4, "variant": ["a", "a", "b", "b"],
                          "metric": ["test_acc"] * 4, "final": [0.3, 0.32, 0.5, 0.52],
                          "distinct_samples": [80.0, 85.0, 700.0, 720.0], "extra_subset_size": [100.0, 100.0, 1000.0, 1000.0]})
    fig, ax = plt.subplots()
    plot_train_size(ax, final, 0.95)
    assert list(ax.lines[0].get_xdata()) == [100.0, 1000.0] and "training-set size" in ax.get_xlabel()
    plt.close(fig)


def test_every_snakemake_report_caption_exists():
    text = (ROOT / "Snakefile").read_text() + "".join(p.read_text() for p in (ROOT / "workflow").glob("*.smk"))
    captions = re.findall(r'caption="([^"]+)"', text)
    assert len(captions) >= 3  # tables, figures, the report
    for c in captions:
        assert (ROOT / "workflow" / c).is_file(), c  # relative to the including .smk file
    assert (ROOT / re.search(r'^report: "([^"]+)"', text, re.M).group(1)).is_file()
