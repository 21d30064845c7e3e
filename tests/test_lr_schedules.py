"""build_scheduler: every schedule's per-iteration lr equals its closed form written out here; schedules resume
identically from a state_dict; bad names, unknown and missing options fail early."""
from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from pipeline import config
from pipeline.methods import LR_SCHEDULES
from pipeline.methods.lr_schedules import REQUIRED, build_scheduler, default_step_size

ROOT = Path(__file__).resolve().parents[1]
STEPS_PER_EPOCH, EPOCHS = 10, 6
TOTAL = STEPS_PER_EPOCH * EPOCHS
LR = 0.4
# The settings the closed forms below are written for (a schedule has no defaults: its caller gives every setting)
SETTINGS = {
    "constant": {},
    "step": dict(milestones=[0.5, 0.75], gamma=0.1),
    "cosine": dict(eta_min=0.0),
    "cyclical": dict(base_ratio=0.25, epochs_per_cycle=8, mode="triangular"),
    "one_cycle": dict(pct_start=0.3, div_factor=25.0, final_div_factor=1e4, anneal_strategy="cos", three_phase=False,
                      cycle_momentum=False, base_momentum=0.85, max_momentum=0.95),
}


@functools.cache
def experiment_settings() -> dict:
    """Every schedule's settings in experiment 4: params.yaml's optimizers.schedule_options."""
    return config.load(ROOT / "params.yaml").settings("optimizers", "momentum").schedule_options.model_dump()


def _optimizer(name: str = "momentum"):
    model = nn.Linear(2, 1)
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=LR)
    return torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)


def _lrs(name: str, iterations: int = TOTAL, optimizer_name: str = "momentum", key: str = "lr",
         **options) -> list[float]:
    """`key` (lr, or momentum) used by the optimizer step of each iteration 0..iterations-1 (the scheduler steps
    after each)."""
    opt = _optimizer(optimizer_name)
    scheduler = build_scheduler(name, opt, STEPS_PER_EPOCH, EPOCHS, **{**SETTINGS[name], **options})
    values = []
    for _ in range(iterations):
        values.append(opt.param_groups[0][key])
        opt.step()
        scheduler.step()
    return values


def test_constant_and_step():
    assert _lrs("constant") == [LR] * TOTAL
    # milestones at 0.5 and 0.75 of 60 iterations: 30 and 45
    expected = [LR * 0.1 ** sum(it >= m for m in (30, 45)) for it in range(TOTAL)]
    assert _lrs("step") == pytest.approx(expected, rel=1e-12, abs=0)


def test_cosine_matches_closed_form():
    expected = [0.5 * LR * (1 + math.cos(math.pi * it / TOTAL)) for it in range(TOTAL)]
    assert _lrs("cosine") == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("step_size", [7, None])
def test_cyclical_matches_smith_triangular_formula(step_size):
    base, top = 0.05, 0.3
    s = step_size or default_step_size(STEPS_PER_EPOCH, EPOCHS, SETTINGS["cyclical"]["epochs_per_cycle"])
    expected = []
    for it in range(TOTAL):  # Smith 2015 §3.1
        cycle = math.floor(1 + it / (2 * s))
        x = abs(it / s - 2 * cycle + 1)
        expected.append(base + (top - base) * max(0.0, 1 - x))
    got = _lrs("cyclical", base_lr=base, max_lr=top, step_size=step_size)
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert max(got) == pytest.approx(top) and min(got) == pytest.approx(base)


def test_cyclical_derives_max_base_and_half_cycle_from_the_lr_and_the_budget():
    # 8 epochs per cycle in 6 epochs -> one cycle of 6 epochs: half-cycle 30 iterations; base = max x base_ratio
    # (1/4); max = the optimizer's lr
    assert default_step_size(STEPS_PER_EPOCH, EPOCHS, epochs_per_cycle=8) == 30
    assert default_step_size(391, 30, epochs_per_cycle=8) == 391 * 30 // 8  # 4 cycles of 7.5 epochs
    got = _lrs("cyclical")
    assert got[0] == pytest.approx(LR / 4) and got[30] == pytest.approx(LR)
    assert got[59] == pytest.approx(LR / 4 + (LR - LR / 4) / 30)  # one iteration before the cycle ends
    # the lr only: momentum is not cycled, and an Adam optimizer (betas, no momentum) works too
    opt = _optimizer()
    scheduler = build_scheduler("cyclical", opt, STEPS_PER_EPOCH, EPOCHS, **SETTINGS["cyclical"])
    opt.step()
    scheduler.step()
    assert opt.param_groups[0]["momentum"] == 0.9
    assert _lrs("cyclical", optimizer_name="adam")[30] == pytest.approx(LR)


def test_cyclical_base_ratio_and_cycle_length_change_the_trace():
    # base = base_ratio x max; 6 epochs at 3 per cycle -> 2 cycles: half-cycle 60 / 4 = 15 iterations
    got = _lrs("cyclical", base_ratio=0.1, epochs_per_cycle=3)
    assert got[0] == pytest.approx(0.1 * LR) and min(got) == pytest.approx(0.1 * LR)
    assert got[15] == pytest.approx(LR) and got[30] == pytest.approx(0.1 * LR) and got[45] == pytest.approx(LR)
    assert default_step_size(STEPS_PER_EPOCH, EPOCHS, epochs_per_cycle=3) == 15
    assert got != _lrs("cyclical")  # 1/4 and 8 epochs per cycle give another trace
    with pytest.raises(ValueError, match="0 < base_ratio < 1"):
        build_scheduler("cyclical", _optimizer(), STEPS_PER_EPOCH, EPOCHS,
                        **{**SETTINGS["cyclical"], "base_ratio": 1.0})
    with pytest.raises(ValueError, match="epochs_per_cycle > 0"):
        build_scheduler("cyclical", _optimizer(), STEPS_PER_EPOCH, EPOCHS,
                        **{**SETTINGS["cyclical"], "epochs_per_cycle": 0})


def test_one_cycle_options_change_the_trace_and_momentum_cycles_only_when_asked():
    got = _lrs("one_cycle", div_factor=10.0, pct_start=0.5, anneal_strategy="linear")
    assert got[0] == pytest.approx(LR / 10) and max(got) == pytest.approx(LR)
    assert got.index(max(got)) == round(0.5 * TOTAL) - 1  # warm-up ends at pct_start of the budget
    assert got[10] == pytest.approx(LR / 10 + (LR - LR / 10) * 10 / 29)  # linear warm-up over 29 iterations

    def momenta(**options):
        return _lrs("one_cycle", key="momentum", **options)

    assert set(momenta()) == {0.9}  # cycle_momentum false: the lr only
    cycled = momenta(cycle_momentum=True, base_momentum=0.8, max_momentum=0.97)
    assert cycled[0] == pytest.approx(0.97) and min(cycled) == pytest.approx(0.8)
    peak = _lrs("one_cycle")
    assert cycled.index(min(cycled)) == peak.index(max(peak))  # lowest momentum at the lr's peak (Smith 2018 §4)


def test_one_cycle_matches_torch_cosine_phases():
    top, div, final_div, pct = LR, 25.0, 1e4, 0.3
    initial, minimum = top / div, top / div / final_div
    end_warmup, end = pct * TOTAL - 1, TOTAL - 1  # torch's phase ends, in iterations

    def cos_anneal(start, stop, fraction):
        return stop + (start - stop) / 2 * (1 + math.cos(math.pi * fraction))

    expected = [cos_anneal(initial, top, it / end_warmup) if it <= end_warmup
                else cos_anneal(top, minimum, (it - end_warmup) / (end - end_warmup)) for it in range(TOTAL)]
    got = _lrs("one_cycle", pct_start=pct, div_factor=div, final_div_factor=final_div, anneal_strategy="cos",
                three_phase=False)
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-15)
    assert got[0] == pytest.approx(LR / 25) and max(got) == pytest.approx(LR) and got[-1] == pytest.approx(minimum)


@pytest.mark.parametrize("name", LR_SCHEDULES)
def test_state_dict_round_trip_continues_identically(name):
    settings = experiment_settings()[name]  # as experiment 4 builds them
    uninterrupted = _lrs(name, **settings)
    opt = _optimizer()
    scheduler = build_scheduler(name, opt, STEPS_PER_EPOCH, EPOCHS, **settings)
    for _ in range(23):
        opt.step()
        scheduler.step()
    saved_opt, saved_scheduler = opt.state_dict(), scheduler.state_dict()
    # resume: build both as at the start, then load both states
    opt = _optimizer()
    scheduler = build_scheduler(name, opt, STEPS_PER_EPOCH, EPOCHS, **settings)
    opt.load_state_dict(saved_opt)
    scheduler.load_state_dict(saved_scheduler)
    resumed = []
    for _ in range(23, TOTAL):
        resumed.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    assert resumed == uninterrupted[23:]
    assert len(set(uninterrupted)) > 1 or name == "constant"  # the schedule does move


def test_bad_names_and_options_fail_with_one_line_errors():
    opt = _optimizer()
    with pytest.raises(ValueError, match=r"unknown lr schedule 'cosin'; known: constant, step, cosine, cyclical"):
        build_scheduler("cosin", opt, 10, 2)
    with pytest.raises(ValueError, match=r"'cosine' does not take option\(s\) \['gamma'\]"):
        build_scheduler("cosine", opt, 10, 2, eta_min=0.0, gamma=0.1)
    with pytest.raises(ValueError, match="steps_per_epoch must be a positive integer"):
        build_scheduler("cosine", opt, 0, 2, eta_min=0.0)
    with pytest.raises(ValueError, match="milestones are fractions"):
        build_scheduler("step", opt, 10, 2, milestones=[30, 45], gamma=0.1)
    with pytest.raises(ValueError, match="base_lr < max_lr"):
        build_scheduler("cyclical", opt, 10, 2, **SETTINGS["cyclical"], base_lr=0.5, max_lr=0.1)


@pytest.mark.parametrize("name", LR_SCHEDULES)
def test_every_required_setting_must_be_given(name):
    assert set(SETTINGS[name]) == REQUIRED[name]  # the closed forms above fix every setting of each schedule
    for key in sorted(REQUIRED[name]):
        given = {k: v for k, v in SETTINGS[name].items() if k != key}
        with pytest.raises(ValueError, match=rf"^lr schedule '{name}' needs option\(s\) \['{key}'\]$"):
            build_scheduler(name, _optimizer(), STEPS_PER_EPOCH, EPOCHS, **given)
