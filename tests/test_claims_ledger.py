"""The claims ledger's rows against the right arms, and every kind of claim added from the sources (speed, ablation
spreads, CIFAR-100 columns, trends) reaching each of its verdicts on planted runs of the paper profile."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipeline import config
from pipeline.analysis.claims import compare, judge_claims
from pipeline.analysis.ledger import QUANTITIES, ledger_for

ROOT = Path(__file__).resolve().parents[1]
PARAMS = config.load(ROOT / "params.yaml", "paper")
LEDGER = ledger_for(PARAMS)
NOISE = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])  # five seeds around a mean, sd 1.58 x scale


def test_no_two_claims_of_different_rows_share_an_arm():
    """A row of a paper's table is one arm: two value claims on one arm would make a perfect reproduction of one
    row 'fail' the other (as the ablation's '+ LR adaptation' once did on the full method's arm)."""
    keys = Counter((c.experiment, c.kind, c.arm, c.versus, c.dataset, c.subset, c.quantity)
                   for c in LEDGER.claims if c.kind in ("value", "ratio"))
    assert [k for k, n in keys.items() if n > 1] == []
    growth = {c.id: c.arm for c in LEDGER.claims if c.experiment == "growth" and c.kind == "value"}
    assert growth["grow-abl-lr"] == "grow_lr" != growth["grow-c10-grown"] == "grow_vt_lr"
    assert set(growth.values()) <= set(p.describe("growth", v)["method"] for p in [PARAMS]
                                       for v in PARAMS.variants("growth"))


def runs(experiment: str, arms: dict, dataset: str, subset=None, metric="test_acc", mode="max", **extra) -> list:
    """arms: variant -> {quantity: values per seed}; every run of the paper profile, none diverged."""
    rows = []
    for variant, values in arms.items():
        method = variant.split("-")[0]
        for seed in range(5):
            row = {"experiment": experiment, "variant": variant, "seed": seed, "profile": "paper", "method": method,
                   "dataset": dataset, "subset": subset, "metric": metric, "mode": mode, "diverged": False,
                   **{q: None for q in QUANTITIES}, **extra}
            row.update({q: float(v[seed]) for q, v in values.items()})
            rows.append(row)
    return rows


def verdicts(rows: list) -> dict[str, str]:
    final = pl.DataFrame(rows, infer_schema_length=None)
    settings = PARAMS.analysis
    claims = judge_claims(final, compare(final, LEDGER, settings), LEDGER, settings, "paper", False)
    return dict(zip(claims["id"].to_list(), claims["verdict"].to_list()))


def at(mean: float, spread: float = 0.0) -> np.ndarray:
    return mean + spread * NOISE


@pytest.mark.parametrize("grown, expected", [
    (at(0.7774, 0.0005), "reproduced"), (at(0.70, 0.0005), "not reproduced"), (at(0.7774, 0.02), "inconclusive")])
def test_a_cifar100_ablation_row_with_its_spread(grown, expected):
    rows = runs("growth", {"grow_lr-cifar100": {"final": grown}}, "cifar100")
    assert verdicts(rows)["grow-abl-lr-c100"] == expected


@pytest.mark.parametrize("fixed_seconds, grown_seconds, expected", [
    (at(120, 0.5), at(100, 0.5), "reproduced"), (at(300, 0.5), at(100, 0.5), "not reproduced"),
    (at(120, 20), at(100, 20), "inconclusive")])
def test_the_speed_up_claim_is_judged_on_cifar100(fixed_seconds, grown_seconds, expected):
    rows = runs("growth", {"fixed_full-cifar100": {"train_seconds": fixed_seconds, "final": at(0.78, 0.001)},
                           "grow_vt_lr-cifar100": {"train_seconds": grown_seconds, "final": at(0.78, 0.001)}},
                "cifar100")
    v = verdicts(rows)
    assert v["grow-c100-speedup"] == expected and v["grow-c10-speedup"] == "inconclusive"  # no CIFAR-10 runs


@pytest.mark.parametrize("doubling, expected", [
    (at(50, 1), "reproduced"), (at(150, 1), "not reproduced"), (at(100, 8), "inconclusive")])
def test_the_block_size_efficiency_claim(doubling, expected):
    rows = runs("block_size", {"fixed16": {"seconds_to_target": at(100, 1), "final": at(120, 1)},
                               "doubling": {"seconds_to_target": doubling, "final": at(110, 1)}},
                "ptb", metric="test_ppl", mode="min")
    assert verdicts(rows)["abs-faster"] == expected


@pytest.mark.parametrize("nadam, expected", [
    (at(10, 0.1), "reproduced"), (at(60, 0.1), "not reproduced"), (at(19.5, 3), "inconclusive")])
def test_nadam_fastest_and_against_adam_and_nag(nadam, expected):
    others = {v: {"seconds_to_target": at(20, 0.1), "final": at(0.9, 0.001)} for v in ("adam", "nesterov", "sgd")}
    rows = runs("optimizers", {"nadam": {"seconds_to_target": nadam, "final": at(0.9, 0.001)}, **others}, "cifar10")
    v = verdicts(rows)
    assert v["survey-nadam-fastest"] == expected
    assert v["survey-nadam-adam-faster"] == v["survey-nadam-nag-faster"] == expected


@pytest.mark.parametrize("amsbound, expected", [
    (at(0.95, 0.001), "reproduced"), (at(0.80, 0.001), "not reproduced"), (at(0.90, 0.01), "inconclusive")])
def test_amsbound_against_momentum_methods_and_sgd(amsbound, expected):
    base = {v: {"final": at(0.90, 0.001), "seconds_to_target": at(20, 0.1)} for v in ("sgd", "momentum", "nesterov")}
    rows = runs("optimizers", {"amsbound": {"final": amsbound, "seconds_to_target": at(20, 0.1)}, **base}, "cifar10")
    v = verdicts(rows)
    assert v["survey-amsbound-sgd"] == v["survey-amsbound-momentum"] == v["survey-amsbound-nag"] == expected


SIZES = {"n100": 100, "p1": 500, "p10": 5000, "full": 50000}


@pytest.mark.parametrize("gains, expected", [
    ({"n100": 0.30, "p1": 0.20, "p10": 0.10, "full": 0.01}, "reproduced"),
    ({"n100": 0.01, "p1": 0.10, "p10": 0.20, "full": 0.30}, "not reproduced"),
    ({"n100": 0.02, "p1": 0.00, "p10": 0.01, "full": 0.02}, "inconclusive")])
def test_edba_gain_grows_as_the_data_shrinks(gains, expected):
    rows = []
    for subset, size in SIZES.items():
        rows += runs("edba", {f"baseline-cifar10-{subset}": {"final": at(0.5, 0.01)},
                              f"edba-cifar10-{subset}": {"final": at(0.5 + gains[subset], 0.01)}},
                     "cifar10", subset=subset, extra_subset_size=float(size))
    v = verdicts(rows)
    assert v["edba-trend-c10"] == expected
    assert v["edba-trend-c100"] == "inconclusive"  # no CIFAR-100 runs: no trend to judge
