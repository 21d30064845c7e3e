"""Experiment 3 (growing networks) end to end on tiny generated images: the grid, run files with widths and stages,
parameter counts per epoch, FLOPs, the optimizer across a growth, and kill-then-rerun bit-identity across growths.

The images are written here into a temporary folder per dataset, which every job is given as its --data."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from pipeline import config
from pipeline.data.fetch import DataError
from pipeline.experiments.growth.parameterization import mup_lr_factors
from pipeline.experiments.growth import train as growth
from pipeline.experiments.growth.schedule import GrowthSchedule
from pipeline.models import build_model
from pipeline.models.flops import conv_linear_flops, schedule_flops
from pipeline.train.jobs import Inputs, Job

MODES = ["fixed_full", "fixed_small", "grow_random", "grow_vt", "grow_lr", "grow_vt_lr", "net2net"]
CLASSES = {"cifar10": 10, "cifar100": 12}  # a small "cifar100" keeps the test fast; the code reads the count
TIMING = {"train_seconds", "seconds_to_target", "started_at", "ended_at"}
CPU = torch.device("cpu")


def write_images(root, dataset, classes, train_per_class=6, test_per_class=2, seed=0, synthetic=True):
    """Prepared-format images: class c = a bright horizontal band at row 2c (mod 32) plus noise."""
    g = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        y = np.repeat(np.arange(classes), n).astype(np.int64)
        x = g.normal(100, 30, size=(len(y), 32, 32, 3))
        for i, c in enumerate(y):
            x[i, (2 * c) % 32:(2 * c) % 32 + 3] += 90
        np.savez(root / f"{split}.npz", x=np.clip(x, 0, 255).astype(np.uint8), y=y)
    write_meta(root, dataset, classes, synthetic)


def write_meta(root, dataset, classes, synthetic):
    (root / "meta.json").write_text(json.dumps({"dataset": dataset, "kind": dataset, "synthetic": synthetic,
                                                "classes": [f"c{i}" for i in range(classes)]}))


def prepared(tmp_path, dataset):
    return tmp_path / "data" / "prepared" / dataset


@pytest.fixture
def params(raw_params, tmp_path):
    """The smoke profile with tiny data in tmp, 4 steps of 16 per epoch, test accuracy every epoch."""
    for ds, k in CLASSES.items():
        write_images(prepared(tmp_path, ds), ds, k)
    smoke = raw_params["growth"]["profiles"]["smoke"]
    smoke["train"].update({"epochs": 4, "batch_size": 16, "samples_per_epoch": 64, "eval_every": 1})
    smoke["schedule"]["num_growths"] = 3
    return config.validate(raw_params, "smoke")


@pytest.fixture
def mup_params(raw_params, tmp_path, params):
    """As `params`, under the other consistent pairing (parameterization mup, the linear factor)."""
    raw_params["growth"]["parameterization"] = "mup"
    raw_params["growth"]["method"]["variance_factor"] = "linear"
    return config.validate(raw_params, "smoke")


def job(params, tmp_path, variant, seed=0, name="runs", inputs=None):
    """A job of the variant given both tiny datasets as --data (keys read from their meta.json)."""
    if inputs is None:
        inputs = Inputs.from_paths(data=[prepared(tmp_path, ds) for ds in CLASSES])
    return Job(params, "growth", variant, seed, inputs, tmp_path / name / variant / f"seed{seed}",
               tmp_path / f"{name}_ckpt", CPU)


def run(params, tmp_path, variant, seed=0, name="runs"):
    return growth.train(job(params, tmp_path, variant, seed, name))


def growing(cfg, seed=0, steps=4, method_seed=0):
    """A Growing at stage 0 for 10 classes, `steps` iterations per epoch, on the CPU."""
    return growth.Growing(cfg, growth.plan_for(cfg), 10, steps, CPU, seed, torch.Generator().manual_seed(method_seed))


def history(tmp_path, variant, seed=0, name="runs"):
    with open(tmp_path / name / variant / f"seed{seed}" / "history.csv") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------------------------- the grid
def test_grid_is_every_mode_on_every_dataset_with_its_identity(params, raw_params):
    variants = params.variants("growth")
    assert variants == [f"{m}-{d}" for m in MODES for d in ("cifar10", "cifar100")]
    assert params.describe("growth", "grow_vt_lr-cifar100") == {"method": "grow_vt_lr", "dataset": "cifar100",
                                                                "subset": None}
    assert params.data_of("growth", "net2net-cifar10") == [("cifar10", None)]
    fixed, method = params.settings("growth", "fixed_full-cifar10"), params.settings("growth", "grow_vt_lr-cifar100")
    assert (fixed.model, fixed.growth, fixed.width, fixed.lr_adaptation) == ("resnet20", "none", "full", False)
    assert method.model == "resnet18" and method.lr_adaptation and method.target.value == 0.1
    # what a run depends on: a fixed full-width network neither on the schedule nor on the method, a fixed small
    # one on the schedule (its stage-0 widths) only, a growing one on both
    keys = lambda v: set(params.identity("growth", v))
    assert not {"schedule", "method"} & keys("fixed_full-cifar10")
    assert "schedule" in keys("fixed_small-cifar10") and "method" not in keys("fixed_small-cifar10")
    assert {"schedule", "method"} <= keys("grow_vt-cifar10")
    with pytest.raises(config.ConfigError, match="grown-cifar10"):
        params.settings("growth", "grown-cifar10")
    for p in ("quick", "paper"):  # the grid is the same in every profile
        assert config.validate(raw_params, p).variants("growth") == variants


@pytest.mark.parametrize("edit,message", [
    (lambda g: g["grid"]["axes"]["mode"]["fixed_full"].update(lr_adaptation=True),
     "lr_adaptation needs a growing network"),
    (lambda g: g["grid"]["axes"]["mode"]["grow_vt"].update(width="start"), "width applies to fixed networks only"),
    (lambda g: g["profiles"]["smoke"]["grid"]["axes"]["dataset"]["cifar10"]["train"].update(epochs=3),
     "cannot hold schedule.num_growths"),
    (lambda g: g["profiles"]["smoke"]["grid"]["axes"]["dataset"]["cifar10"].update(full_widths=[8, 16]),
     "3 width groups"),
    (lambda g: g["schedule"].update(growth_ratio=1.2), "give one of start_fraction and growth_ratio"),
    (lambda g: g.update(parameterization="mup"), "parameterization mup goes with conv_init he_fan_in, "
                                                   "method.variance_factor linear and method.init_fan in"),
    (lambda g: g.update(parameterization="mu_p"), "parameterization"),
    (lambda g: g["schedule"].update(start_fraction=None), "give one of start_fraction and growth_ratio"),
])
def test_bad_growth_settings_fail_with_one_line(raw_params, edit, message):
    edit(raw_params["growth"])
    with pytest.raises(config.ConfigError, match=message) as err:
        config.validate(raw_params, "smoke")
    assert "growth" in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("variant", [f"{m}-cifar10" for m in MODES] + ["fixed_full-cifar100", "grow_vt_lr-cifar100"])
def test_variant_trains_and_records_widths_parameters_and_flops(params, tmp_path, variant):
    metrics = run(params, tmp_path, variant)
    cfg, rows = params.settings("growth", variant), history(tmp_path, variant)
    plan, k, mode = growth.plan_for(cfg), CLASSES[cfg.dataset], variant.split("-")[0]
    assert metrics["method"] == mode and metrics["dataset"] == cfg.dataset and metrics["subset"] is None
    assert metrics["epochs"] == 4 and not metrics["diverged"] and len(rows) == 4
    assert 0 <= metrics["final"] <= 1 and metrics["target"]["value"] == cfg.target.value
    grows = cfg.growth != "none"
    assert plan.growth_epochs == ([1, 2, 3] if grows else [])
    full_flops = 3 * conv_linear_flops(build_model(cfg.model, k, cfg.full_widths)) * 64
    for epoch, row in enumerate(rows):  # the widths, parameter count and FLOPs of the stage that trained the epoch
        stage = plan.stage_at(epoch)
        model = build_model(cfg.model, k, plan.stage_widths[stage])
        assert int(row["stage"]) == stage and int(row["steps"]) == 4 and int(row["samples"]) == 64 * (epoch + 1)
        assert int(row["params"]) == sum(p.numel() for p in model.parameters())
        assert int(row["epoch_flops"]) == 3 * conv_linear_flops(model) * 64
        assert float(row["width"]) == pytest.approx(sum(plan.stage_widths[stage]) / sum(cfg.full_widths))
        assert row["test_acc"] != ""
    assert metrics["train_flops"] == sum(int(r["epoch_flops"]) for r in rows) == int(rows[-1]["flops"])
    extra = metrics["extra"]
    assert extra["full_width_train_flops"] == 4 * full_flops
    assert extra["final_widths"] == list(plan.stage_widths[-1]) and extra["growth_epochs"] == plan.growth_epochs
    if mode == "fixed_full":
        assert extra["flops_fraction"] == 1.0 and extra["final_widths"] == cfg.full_widths
    else:  # grown or small: fewer FLOPs, and for growth exactly what the method's schedule arithmetic predicts
        assert extra["flops_fraction"] < 1.0
    if grows:
        assert [int(r["stage"]) for r in rows] == [0, 1, 2, 3] and extra["final_widths"] == cfg.full_widths
        c = cfg.schedule
        s = GrowthSchedule(tuple(cfg.full_widths), 4, 3, c.start_fraction, c.growth_ratio, c.stage_length_ratio)
        planned = schedule_flops(lambda w: build_model(cfg.model, k, w), s.stage_widths(), s.stage_epochs(), 64)
        assert extra["flops_fraction"] == pytest.approx(planned["fraction"], rel=1e-12)
        assert float(rows[0]["width"]) < float(rows[1]["width"]) < float(rows[2]["width"]) < float(rows[3]["width"]) == 1
    for name in ("metrics.json", "history.csv", "config.json"):
        assert (tmp_path / "runs" / variant / "seed0" / name).exists()


def test_lr_adaptation_gives_new_units_their_own_multiplier(params, tmp_path):
    run(params, tmp_path, "grow_vt_lr-cifar10")
    run(params, tmp_path, "grow_vt-cifar10")
    adapted, plain = history(tmp_path, "grow_vt_lr-cifar10"), history(tmp_path, "grow_vt-cifar10")
    assert float(adapted[0]["lr_multiplier"]) == 1.0  # stage 0: nothing to adapt
    assert all(float(r["lr_multiplier"]) != 1.0 for r in adapted[1:])
    assert all(float(r["lr_multiplier"]) == 1.0 for r in plain)
    assert [r["train_loss"] for r in adapted[1:]] != [r["train_loss"] for r in plain[1:]]
    assert adapted[0]["train_loss"] == plain[0]["train_loss"]  # identical until the first growth


# ---------------------------------------------------------------------------------------------- the optimizer
def test_optimizer_and_schedule_continue_across_a_growth(params):
    cfg = params.settings("growth", "grow_vt_lr-cifar10")
    train = cfg.train.model_copy(update={"momentum": 0.8, "weight_decay": 1e-3, "eta_min": 0.01})  # not params.yaml's
    cfg = cfg.model_copy(update={"train": train})
    plan, steps = growth.plan_for(cfg), 4
    g = growing(cfg, steps=steps)
    optimizer, scheduler, x = g.optimizer, g.scheduler, torch.randn(8, 3, 32, 32)
    y = torch.arange(8) % 10

    def train_steps(n):
        for _ in range(n):
            g.zero_grad()
            torch.nn.functional.cross_entropy(g.model(x), y).backward()
            g.step()
            scheduler.step()

    train_steps(3)
    old_model = g.model
    old_buffers = {n: optimizer.state[p]["momentum_buffer"].clone() for n, p in old_model.named_parameters()}
    g.grow_to(1, torch.Generator().manual_seed(0))
    assert g.optimizer is optimizer and g.scheduler.optimizer is optimizer and g.model is not old_model
    assert g.model.widths == plan.stage_widths[1] and g.stage == 1
    (group,) = optimizer.param_groups  # one group holding exactly the grown model's parameters, in order
    assert [id(p) for p in group["params"]] == [id(p) for p in g.model.parameters()]
    assert (group["momentum"], group["weight_decay"], group["nesterov"]) == (0.8, 1e-3, False)  # the settings' own
    old_weights = dict(old_model.named_parameters())
    for name, p in g.model.named_parameters():  # new entries start with zero momentum, old ones are carried
        buf, old = optimizer.state[p]["momentum_buffer"], old_buffers[name]
        block = tuple(slice(0, d) for d in old.shape)
        rest = buf.clone()
        rest[block] = 0
        assert buf.shape == p.shape and torch.all(rest == 0) and torch.all((buf[block] == 0) == (old == 0))
        # carried buffers follow their weights' variance-transfer rescaling: buf / old == w_new / w_old
        assert torch.allclose(buf[block] * old_weights[name].detach(), old * p.detach()[block], atol=1e-7)
    train_steps(5)
    total = steps * cfg.train.epochs  # the cosine schedule over the whole budget, per step, across the growth
    lr, eta_min = cfg.train.lr, cfg.train.eta_min
    assert group["lr"] == pytest.approx(eta_min + 0.5 * (lr - eta_min) * (1 + math.cos(math.pi * 8 / total)), rel=1e-9)
    g.update_multipliers()  # new entries: a multiplier of their own; stage-0 entries: 1
    s0, s1, *ahead = g.stage_multipliers()
    assert g.multipliers and s0 == 1.0 and s1 != 1.0 and ahead == [None] * (len(plan.stage_widths) - 2)
    name = "stages.2.0.conv1.weight"
    m, mask = g.multipliers[name], g.masks[name]
    assert torch.all(m[mask == 0] == 1) and torch.allclose(m[mask == 1], torch.tensor(s1))


def with_method(cfg, **changes):
    return cfg.model_copy(update={"method": cfg.method.model_copy(update=changes)})


def grown(cfg, stage=1, steps=2, seed=0):
    """A Growing trained `steps` SGD steps at stage 0, then grown to `stage` (multipliers updated)."""
    g = growing(cfg, seed=seed)
    x, y = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(3)), torch.arange(8) % 10
    for _ in range(steps):
        g.zero_grad()
        torch.nn.functional.cross_entropy(g.model(x), y).backward()
        g.step()
    g.start_epoch(stage, torch.Generator().manual_seed(1))
    g.zero_grad()
    torch.nn.functional.cross_entropy(g.model(x), y).backward()
    return g


def test_every_stage_multiplier_is_recorded_per_epoch(params, tmp_path):
    run(params, tmp_path, "grow_vt_lr-cifar10")
    run(params, tmp_path, "grow_vt-cifar10")
    for variant in ("grow_vt_lr-cifar10", "grow_vt-cifar10"):
        rows = history(tmp_path, variant)
        for epoch, row in enumerate(rows):  # stage == epoch here: growths after epochs 1, 2, 3
            recorded = [row[f"lr_multiplier_s{k}"] for k in range(4)]
            assert all(v != "" for v in recorded[:epoch + 1]) and all(v == "" for v in recorded[epoch + 1:])
            assert float(recorded[0]) == 1.0 and row["lr_multiplier"] == recorded[epoch]
            values = [float(v) for v in recorded[1:epoch + 1]]
            assert all(v != 1.0 for v in values) if variant.startswith("grow_vt_lr") else all(v == 1.0 for v in values)
    last = history(tmp_path, "grow_vt_lr-cifar10")[-1]
    assert len({last[f"lr_multiplier_s{k}"] for k in (1, 2, 3)}) == 3  # three growth stages, three multipliers
    # the same numbers as the trained network's own multiplier tensors (here: a fresh Growing at stage 3)
    cfg = params.settings("growth", "grow_vt_lr-cifar10")
    g = grown(cfg, stage=3)
    head, mask = g.multipliers["head.weight"], g.masks["head.weight"]
    assert g.stage_multipliers() == pytest.approx([float(head[mask == k][0]) for k in range(4)])


def test_vt_lr_compensation_multiplies_the_rescaled_weights_lr_by_s_squared(params):
    cfg = params.settings("growth", "grow_vt-cifar10")
    plain, compensated = grown(cfg), grown(with_method(cfg, vt_compensate_lr=True))
    assert plain.multipliers == {} and plain.compensation == {}  # off: plain steps, no factor anywhere
    name = "stages.1.0.conv1.weight"  # reads stage 0's stream: fan-in 2 -> 4 at the first growth (smoke widths)
    (c_in, c_out), (c_in_new, _) = (growth.plan_for(cfg).stage_widths[k][:2] for k in (0, 1))
    s = (c_in / c_in_new) ** {"linear": 1.0, "sqrt": 0.5}[cfg.method.variance_factor]
    assert s < 1
    factor, old = compensated.multipliers[name], (slice(0, c_out), slice(0, c_in))
    new = torch.ones_like(factor, dtype=torch.bool)
    new[old] = False
    assert torch.allclose(factor[old], torch.full_like(factor[old], s * s))
    assert new.any() and torch.all(factor[new] == 1)  # new entries: not rescaled, no factor
    assert "head.weight" not in compensated.multipliers  # the head feeds no BN: never rescaled
    before = {k: dict(g.model.named_parameters())[name].detach().clone() for k, g in (("p", plain), ("c", compensated))}
    plain.step(), compensated.step()
    delta = {k: dict(g.model.named_parameters())[name].detach() - before[k]
             for k, g in (("p", plain), ("c", compensated))}
    assert delta["p"][old].abs().max() > 0
    assert torch.allclose(delta["c"][old], s * s * delta["p"][old], rtol=1e-4, atol=1e-7)  # float32 lerp
    assert torch.allclose(delta["c"][new], delta["p"][new], rtol=1e-4, atol=1e-7)
    both = grown(with_method(params.settings("growth", "grow_vt_lr-cifar10"), vt_compensate_lr=True))
    assert torch.allclose(both.multipliers[name], both.adapted[name] * both.compensation[name])  # LR adaptation x s^2


def test_lr_recompute_and_head_options(params):
    cfg = params.settings("growth", "grow_vt_lr-cifar10")
    for every, expect_change in (("epoch", True), ("growth", False)):
        g = grown(with_method(cfg, lr_recompute=every))
        at_growth = {n: m.clone() for n, m in g.multipliers.items()}
        for _ in range(3):  # the norms move with training
            g.step()
        g.start_epoch(1, torch.Generator())  # a new epoch in the same stage
        same = all(torch.equal(at_growth[n], g.multipliers[n]) for n in at_growth)
        assert same != expect_change
    with_head, without = grown(cfg), grown(with_method(cfg, lr_include_head=False))
    assert "head.weight" in with_head.multipliers and "head.weight" not in without.multipliers
    assert "head.bias" not in without.multipliers
    assert without.stage_multipliers()[1] != with_head.stage_multipliers()[1]  # the head's norm left out


def test_mup_gives_every_growing_layer_the_learning_rate_c0_over_c(mup_params, params, tmp_path):
    """parameterization mup: a fixed full-width network steps with C_0 / C on every weight whose fan-in is a width
    group (the stem and the BN/bias vectors keep 1); a growing one multiplies that into LR adaptation's multipliers,
    recomputed from the grown widths; a run records its weights at about mup's own fresh scale."""
    fixed = growing(mup_params.settings("growth", "fixed_full-cifar10"))
    base = growth.base_widths(mup_params.settings("growth", "fixed_full-cifar10"))
    assert base == (2, 4, 8) and tuple(fixed.model.widths) == (8, 16, 32)
    assert fixed.multipliers == mup_lr_factors(fixed.model, base)
    assert "stem.weight" not in fixed.multipliers and fixed.multipliers["stages.0.0.conv1.weight"] == 0.25
    assert fixed.multipliers["stages.2.2.conv2.weight"] == 0.25 and fixed.multipliers["head.weight"] == 0.25
    assert growing(params.settings("growth", "fixed_full-cifar10")).multipliers == {}  # kaiming: one lr
    assert growing(mup_params.settings("growth", "grow_vt_lr-cifar10")).multipliers == {}  # stage 0 = kaiming
    method = grown(mup_params.settings("growth", "grow_vt_lr-cifar10"), stage=2)
    widths = dict(zip(("stage0", "stage1", "stage2"), method.model.widths))
    name = "stages.1.1.conv1.weight"  # reads stage 1's stream: C_0 = 4
    assert torch.equal(method.multipliers[name], method.adapted[name] * (4 / widths["stage1"]))
    for variant in ("fixed_full-cifar10", "grow_vt_lr-cifar10"):
        metrics = run(mup_params, tmp_path, variant)
        assert not metrics["diverged"] and 0 <= metrics["final"] <= 1
        assert all(float(r["weight_scale"]) > 0 for r in history(tmp_path, variant))
    assert metrics["extra"]["grown_init_scale_ratio"] == pytest.approx(1.0, abs=0.05)
    kaiming_ids = {v: params.identity("growth", v) for v in ("fixed_full-cifar10", "grow_vt_lr-cifar10")}
    assert all("parameterization" not in i for i in kaiming_ids.values())  # runs made before the key stay valid
    assert {"parameterization", "schedule"} <= set(mup_params.identity("growth", "fixed_full-cifar10"))


@pytest.mark.parametrize("variant,changes", [("net2net-cifar10", {"net2net_noise": 0.1}),
                                             ("grow_vt_lr-cifar10", {"vt_compensate_lr": True})])
def test_growing_state_round_trips_at_a_later_stage(params, variant, changes):
    cfg = with_method(params.settings("growth", variant), **changes)
    plan = growth.plan_for(cfg)
    a = growing(cfg, seed=0, method_seed=1)
    a.start_epoch(2, a.method_gen)
    b = growing(cfg, seed=5, method_seed=7)  # stage 0, other weights, another growth stream
    b.load_state_dict(a.state_dict())
    assert b.stage == 2 and b.model.widths == plan.stage_widths[2]
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert b.scheduler.optimizer is b.optimizer and b.scheduler.last_epoch == a.scheduler.last_epoch
    assert a.multipliers.keys() == b.multipliers.keys()  # the multipliers in use come back, compensation included
    assert all(torch.equal(a.multipliers[n], b.multipliers[n]) for n in a.multipliers)
    assert torch.equal(b.method_gen.get_state(), a.method_gen.get_state())  # the next growth draws the same


# ---------------------------------------------------------------------------------------------- resume
@pytest.mark.parametrize("variant,pairing", [("grow_vt_lr-cifar10", "params"), ("net2net-cifar100", "params"),
                                             ("grow_vt_lr-cifar100", "mup_params")])
def test_killed_run_resumes_bit_identical_across_growths(request, tmp_path, killed_after, variant, pairing):
    params = request.getfixturevalue(pairing)
    reference = run(params, tmp_path, variant, name="whole")
    for epoch in (1, 2):  # 1: right before the first growth; 2: right after the first grown epoch's checkpoint
        with killed_after(epoch):
            run(params, tmp_path, variant, name="killed")
    resumed = run(params, tmp_path, variant, name="killed")
    assert {k: v for k, v in resumed.items() if k not in TIMING} == {k: v for k, v in reference.items() if k not in TIMING}
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("elapsed_seconds", "time")} for r in rows]
    assert strip(history(tmp_path, variant, name="killed")) == strip(history(tmp_path, variant, name="whole"))
    assert [int(r["stage"]) for r in history(tmp_path, variant, name="killed")] == [0, 1, 2, 3]


def test_real_data_is_refused_in_the_smoke_profile(params, tmp_path):
    write_meta(prepared(tmp_path, "cifar10"), "cifar10", 10, synthetic=False)
    with pytest.raises(DataError, match="holds real data"):
        run(params, tmp_path, "grow_vt-cifar10")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "runs_ckpt").exists()


def test_a_job_reads_only_the_data_it_is_given(params, tmp_path):
    """Only cifar100 given: a cifar10 variant fails with one line naming the missing --data, before any run file."""
    inputs = Inputs.from_paths(data=[prepared(tmp_path, "cifar100")])
    assert inputs.data == {"cifar100": prepared(tmp_path, "cifar100")}  # the key is the folder's meta.json dataset
    with pytest.raises(DataError, match="growth/grow_vt-cifar10: no --data for dataset 'cifar10'") as err:
        growth.train(job(params, tmp_path, "grow_vt-cifar10", inputs=inputs))
    assert "\n" not in str(err.value) and not (tmp_path / "runs").exists()
