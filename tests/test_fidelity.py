"""Choices that decide whether a paper's numbers can be reproduced at all: the growth's weight scale, EDBA's
initialisation and the two readings of a subset's epoch, the survey's further techniques."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from pipeline import config
from pipeline.analysis.ledger import ledger_for
from pipeline.experiments.growth.parameterization import mup_lr_factors, to_mup
from pipeline.experiments.growth.method import grow, scale_ratio
from pipeline.experiments.growth.train import Plan, base_widths, fresh, grown_init_scale, plan_for
from pipeline.experiments.optimizers.train import build_network
from pipeline.models import build_model

ROOT = Path(__file__).resolve().parents[1]
PAPER = config.load(ROOT / "params.yaml", "paper")


def grown(settings, plan: Plan, variance_factor: str) -> torch.nn.Module:
    model = build_model(settings.model, 10, plan.stage_widths[0], generator=torch.Generator().manual_seed(1),
                        conv_init=settings.conv_init)
    draws = torch.Generator().manual_seed(2)
    for widths in plan.stage_widths[1:]:
        model, _ = grow(model, widths, "variance_transfer", draws, variance_factor=variance_factor,
                        base_widths=plan.stage_widths[0], init_fan=settings.method.init_fan, net2net_noise=0.0)
    return model


def test_the_default_growth_ends_at_the_initialisations_scale():
    """After the paper's eight growths the default pairing (Kaiming fan-in init, sqrt factor) leaves the weights
    within 5% of a fresh full-width initialisation's scale; the linear factor on the same init halves it."""
    settings = PAPER.settings("growth", "grow_vt_lr-cifar10")
    plan = plan_for(settings)
    assert (settings.conv_init, settings.method.variance_factor, len(plan.growth_epochs)) == ("he_fan_in", "sqrt", 8)
    reference = fresh(settings, 10, plan.stage_widths[-1])
    assert scale_ratio(grown(settings, plan, "sqrt"), reference) == pytest.approx(1.0, abs=0.05)
    assert scale_ratio(grown(settings, plan, "linear"), reference) < 0.6
    initial = build_model(settings.model, 10, plan.stage_widths[0], generator=torch.Generator().manual_seed(1),
                          conv_init=settings.conv_init)
    assert grown_init_scale(settings, plan, initial) == pytest.approx(1.0, abs=0.05)  # what every run records
    assert grown_init_scale(settings, Plan([plan.stage_widths[-1]], []), initial) is None  # no growth: no ratio


def as_mup(settings):
    """The other consistent pairing: variance ~ 1/fan_in^2 from the stage-0 widths, the linear factor."""
    return settings.model_copy(update={"parameterization": "mup",
                                       "method": settings.method.model_copy(update={"variance_factor": "linear"})})


@pytest.mark.parametrize("variant,classes", [("grow_vt_lr-cifar10", 10), ("grow_vt_lr-cifar100", 100)])
def test_the_mup_pairing_ends_at_its_own_initialisations_scale(variant, classes):
    """parameterization mup: the stage-0 network is the kaiming one, a fresh full-width network is kaiming's
    draws x sqrt(C_0 / C), and after the paper's eight growths with the linear factor the grown convolutions sit
    within 5% of that scale (the sqrt factor would leave them twice too large)."""
    settings = as_mup(PAPER.settings("growth", variant))
    plan = plan_for(settings)
    base = plan.stage_widths[0]
    assert base_widths(settings) == base and len(plan.growth_epochs) == 8
    initial = build_model(settings.model, classes, base, generator=torch.Generator().manual_seed(1),
                          conv_init="he_fan_in")
    assert grown_init_scale(settings, plan, initial) == pytest.approx(1.0, abs=0.05)
    kaiming = build_model(settings.model, classes, plan.stage_widths[-1], generator=torch.Generator().manual_seed(0),
                          conv_init="he_fan_in")
    mup = fresh(settings, classes, plan.stage_widths[-1])
    ratios = {n: float(w.detach().std() / dict(kaiming.named_parameters())[n].detach().std())
              for n, w in mup.named_parameters() if w.dim() >= 2}
    assert ratios.pop("stem.weight") == pytest.approx(1.0)  # reads the 3 image channels: its fan-in never grows
    assert all(r == pytest.approx(0.5, rel=1e-5) for r in ratios.values())  # C_0 / C = 1/4 in every later layer
    same = to_mup(copy.deepcopy(initial), base)
    assert all(torch.equal(a, b) for a, b in zip(same.parameters(), initial.parameters()))  # stage 0: unchanged
    assert set(mup_lr_factors(mup, base).values()) == {0.25}
    sqrt_settings = settings.model_copy(update={"method": settings.method.model_copy(update={"variance_factor": "sqrt"})})
    with pytest.raises(ValueError, match="parameterization mup goes with init_fan 'in' and variance_factor 'linear'"):
        grown_init_scale(sqrt_settings, plan, initial)


def test_edba_trains_at_pytorchs_default_conv_init_in_every_profile():
    for profile in config.PROFILES:
        params = config.load(ROOT / "params.yaml", profile)
        assert {params.settings("edba", v).model.conv_init for v in params.variants("edba")} == {"torch_default"}
    model = build_model("preresnet8", 10, (4, 8, 16), generator=torch.Generator().manual_seed(0),
                        conv_init="torch_default")
    he = build_model("preresnet8", 10, (4, 8, 16), generator=torch.Generator().manual_seed(0))
    for (name, w), w_he in zip(model.named_parameters(), he.parameters()):
        if w.dim() == 4:  # U(+-1/sqrt(fan_in)): kaiming_uniform with a = sqrt(5)
            assert w.abs().max() <= 1 / w[0].numel() ** 0.5 + 1e-6 and not torch.equal(w, w_he), name


def test_the_paper_profile_runs_both_readings_of_a_subsets_epoch_for_the_small_subsets():
    variants = PAPER.variants("edba")
    one_pass = [v for v in variants if v.startswith("baseline_pass-")]
    assert one_pass == ["baseline_pass-cifar10-p1", "baseline_pass-cifar10-n100", "baseline_pass-cifar100-p1"]
    for v in one_pass:
        main = v.replace("baseline_pass-", "baseline-")
        a, b = PAPER.settings("edba", v), PAPER.settings("edba", main)
        assert (a.train.samples_per_epoch, b.train.samples_per_epoch) == ("subset", "train_set")
        assert a.model_dump(exclude={"train"}) == b.model_dump(exclude={"train"})  # nothing else differs
    claims = {c.arm for c in ledger_for(PAPER).claims if c.experiment == "edba" and c.kind == "value"}
    assert {"baseline", "baseline_pass", "edba"} <= claims


@pytest.mark.parametrize("variant, check", [
    ("norm-layer", lambda m: any(isinstance(x, torch.nn.GroupNorm) and x.num_groups == 1 for x in m.modules())),
    ("norm-instance", lambda m: any(isinstance(x, torch.nn.GroupNorm) and x.num_groups == x.num_channels
                                    for x in m.modules())),
    ("tech-dropout", lambda m: isinstance(m.head[0], torch.nn.Dropout) and m.head[0].p == 0.2),
])
def test_the_surveys_further_techniques_are_built(variant, check):
    cfg = PAPER.settings("optimizers", variant)
    model = build_network(cfg, 10, 0, "cpu")
    assert check(model)
    assert not any(isinstance(x, torch.nn.BatchNorm2d) for x in model.modules()) or variant == "tech-dropout"
    assert PAPER.settings("optimizers", "tech-clip").train.clip_grad_norm == 1.0
