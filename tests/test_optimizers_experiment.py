"""Experiment 4 wiring, without data: the grid and its tuning jobs, the errors a bad params.yaml gives, and every
variant's model, optimizer and schedule built from params.yaml's settings. Tuning and training on tiny generated
images: tests/test_optimizers_tuning.py."""
from __future__ import annotations

import pytest
import torch

from pipeline import config, dag
from pipeline.errors import ConfigError
from pipeline.experiments.optimizers import schema
from pipeline.experiments.optimizers import train as ex
from pipeline.methods import optimizers as methods

OPTIMIZERS = ["sgd", "momentum", "nesterov", "adagrad", "adadelta", "rmsprop", "adam", "adamw", "adamax", "nadam",
              "amsgrad", "adabound", "amsbound", "kfac"]
CPU = torch.device("cpu")


# ---------------------------------------------------------------------------------------------- the grid
def test_grid_and_tuning_jobs_are_the_same_in_every_profile(raw_params):
    grids = []
    for profile in config.PROFILES:
        params = config.validate(raw_params, profile)
        names = params.variants("optimizers")
        assert names[:14] == OPTIMIZERS
        assert [params.settings("optimizers", n).optimizer for n in OPTIMIZERS] == OPTIMIZERS
        assert {n for n in names if n.startswith("norm-")} == {"norm-batch", "norm-weight", "norm-both", "norm-none",
                                                               "norm-layer", "norm-instance"}
        assert {n for n in names if n.startswith("tech-")} == {"tech-dropout", "tech-clip"}
        assert {n for n in names if n.startswith("lr-")} == {"lr-constant", "lr-step", "lr-cosine", "lr-clr",
                                                             "lr-onecycle"}
        # the families' reference arms are exactly `momentum`, so they reuse its lr; everything else tunes its own
        assert params.tuning_of("optimizers", "norm-batch") == params.tuning_of("optimizers", "lr-cosine") == "momentum"
        assert (params.identity("optimizers", "norm-batch") == params.identity("optimizers", "lr-cosine")
                == params.identity("optimizers", "momentum"))
        assert params.tuning_of("optimizers", "norm-none") == "norm-none"
        jobs = params.tuning_jobs("optimizers")
        assert set(jobs) == set(names) - {"norm-batch", "lr-cosine"}
        grids.append((names, jobs))
        for name in jobs:
            settings = params.settings("optimizers", name)
            grid = settings.lr_grid()
            assert grid == sorted(grid) and len(grid) == settings.tuning.points
            assert settings.lr_center[settings.optimizer] in grid  # odd points: the centre is on it
    assert grids[0] == grids[1] == grids[2]


def test_smoke_grid_is_log_spaced_around_the_centre(raw_params):
    params = config.validate(raw_params, "smoke")
    assert params.settings("optimizers", "momentum").lr_grid() == pytest.approx([0.01, 0.1, 1.0])
    assert params.settings("optimizers", "adam").lr_grid() == pytest.approx([1e-4, 1e-3, 1e-2])


def test_dag_trains_each_variant_after_its_tuning_job(raw_params):
    params = config.validate(raw_params, "smoke")
    stages = {s.name: s for s in dag.stages(params)}
    assert "tune_optimizers@kfac" in stages and "tune_optimizers@norm-batch" not in stages
    assert dag.tuning_file("optimizers", "momentum") in stages["train_optimizers@norm-batch"].deps
    assert dag.tuning_file("optimizers", "lr-clr") in stages["train_optimizers@lr-clr"].deps
    assert f"--tuning {dag.tuning_file('optimizers', 'momentum')}" in stages["train_optimizers@norm-batch"].cmd
    assert stages["tune_optimizers@kfac"].outs == [dag.tuning_file("optimizers", "kfac")]


# ---------------------------------------------------------------------------------------------- bad settings
def test_unknown_optimizer_is_a_one_line_config_error_naming_the_key(raw_params):
    raw_params["optimizers"]["variants"]["adam"]["optimizer"] = "adamm"
    with pytest.raises(ConfigError) as err:
        config.validate(raw_params, "smoke")
    message = str(err.value)
    assert "optimizers.variants.adam.optimizer" in message and "\n" not in message


@pytest.mark.parametrize("change, expected", [
    (lambda o: o["variants"]["norm-batch"].update(lr_from="nope"),
     r"optimizers variant 'norm-batch': reads the tuning of 'nope'"),
    (lambda o: o["variants"]["norm-batch"].update(lr_from="lr-cosine"),  # lr-cosine does not tune itself
     r"optimizers variant 'norm-batch': reads the tuning of 'lr-cosine'"),
    (lambda o: o["lr_center"].pop("kfac"), r"optimizers\.variants\.kfac: lr_center: no entry for optimizer 'kfac'"),
    (lambda o: o["variants"]["adam"].update(schedule="cosin"), r"optimizers\.variants\.adam\.schedule: "),
    (lambda o: o["optimizer_options"]["kfac"].update(dampnig=1e-3),
     r"optimizers\.optimizer_options\.kfac\.dampnig: unknown key"),
    (lambda o: o["optimizer_options"]["kfac"].update(fisher="true"), r"optimizers\.optimizer_options\.kfac\.fisher: "),
    (lambda o: o["optimizer_options"]["kfac"].update(damping=0.0), r"optimizers\.optimizer_options\.kfac\.damping: "),
    (lambda o: o["variants"]["kfac"].update(optimizer_options={"kfac": {"damping": -1.0}}),
     r"optimizers\.variants\.kfac\.optimizer_options\.kfac\.damping: "),
    (lambda o: o["optimizer_options"]["adabound"].pop("gamma"),
     r"optimizers\.optimizer_options\.adabound\.gamma: required key is missing"),
    (lambda o: o["optimizer_options"].update(adam={"eps": 1e-8}),
     r"optimizers\.optimizer_options\.adam\.betas: required key is missing"),
    (lambda o: o["optimizer_options"].pop("nadam"),
     r"optimizers\.optimizer_options\.nadam: required key is missing"),
    (lambda o: o["schedule_options"]["cyclical"].update(base_ratio=1.5),
     r"optimizers\.schedule_options\.cyclical\.base_ratio: "),
    (lambda o: o["schedule_options"]["one_cycle"].pop("pct_start"),
     r"optimizers\.schedule_options\.one_cycle\.pct_start: required key is missing"),
    (lambda o: o["schedule_options"]["one_cycle"].update(base_momentum=0.99),
     r"optimizers\.schedule_options\.one_cycle: base_momentum must not exceed max_momentum"),
])
def test_bad_variant_settings_fail_at_load_with_one_line(raw_params, change, expected):
    change(raw_params["optimizers"])
    with pytest.raises(ConfigError, match=expected) as err:
        config.validate(raw_params, "smoke")
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------- building a variant
def _small(settings: schema.Settings) -> schema.Settings:
    """The variant's settings with a 2-channel model: only the optimizer's and the schedule's settings matter."""
    return settings.model_copy(update={"model": settings.model.model_copy(update={"widths": [2, 2, 2]})})


def _built(params, variant, lr=0.1, steps_per_epoch=5, epochs=4, seed=0):
    """(optimizer, scheduler) of `variant` as a run builds them."""
    cfg = _small(params.settings("optimizers", variant))
    return ex.build_optimization(cfg, variant, ex.build_network(cfg, 10, 0, CPU), lr, steps_per_epoch, epochs, seed)


def _trace(params, variant, key="lr", steps=20):
    """param_groups[0][key] at each of `steps` iterations (optimizer and schedule stepped as in training)."""
    optimizer, scheduler = _built(params, variant)
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0][key])
        optimizer.step()
        scheduler.step()
    return out


@pytest.mark.parametrize("profile", config.PROFILES)
def test_every_variant_builds_its_model_optimizer_and_schedule(raw_params, profile):
    params = config.validate(raw_params, profile)
    for variant in params.variants("optimizers"):
        cfg = _small(params.settings("optimizers", variant))
        model = ex.build_network(cfg, 10, 0, CPU)
        optimizer, scheduler = ex.build_optimization(cfg, variant, model, 0.1, steps_per_epoch=3, epochs=2, seed=0)
        assert isinstance(optimizer, methods.optimizer_class(cfg.optimizer))
        assert isinstance(scheduler, torch.optim.lr_scheduler.LRScheduler)
        assert optimizer.param_groups[0]["weight_decay"] == cfg.options()["weight_decay"]
        # the L2 of train, except where the optimizer's own settings name a (decoupled) decay: AdamW's
        own = getattr(cfg.optimizer_options, cfg.optimizer).model_dump()
        assert cfg.options()["weight_decay"] == own.get("weight_decay", cfg.train.weight_decay)


def test_optimizer_settings_in_params_reach_the_built_optimizer(raw_params):
    options = raw_params["optimizers"]["optimizer_options"]
    options["kfac"].update(momentum=0.5, damping=0.05, stat_decay=0.8, inv_every=7, stats_every=2, kl_clip=0.01,
                           fisher="sampled")
    options["adabound"].update(final_lr=0.2, gamma=0.01)
    options["amsbound"].update(final_lr=0.3)
    options["adam"].update(betas=[0.8, 0.99], eps=1e-6)
    options["rmsprop"].update(alpha=0.95, centered=True)
    # a variant's own settings still win over the section's
    raw_params["optimizers"]["variants"]["kfac"].update(train={"weight_decay": 0.0},
                                                        optimizer_options={"kfac": {"inv_every": 9}})
    params = config.validate(raw_params, "smoke")
    kfac, _ = _built(params, "kfac")
    group = kfac.param_groups[0]
    assert (group["momentum"], group["damping"], group["weight_decay"]) == (0.5, 0.05, 0.0)
    assert (kfac.stat_decay, kfac.inv_every, kfac.stats_every, kfac.kl_clip, kfac.fisher) == (0.8, 9, 2, 0.01,
                                                                                            "sampled")
    adabound, amsbound = _built(params, "adabound")[0].param_groups[0], _built(params, "amsbound")[0].param_groups[0]
    assert (adabound["final_lr"], adabound["gamma"], adabound["ams_bound"]) == (0.2, 0.01, False)
    assert (amsbound["final_lr"], amsbound["gamma"], amsbound["ams_bound"]) == (0.3, 1e-3, True)
    assert not adabound["weight_decouple"] and adabound["weight_decay"] == params.settings(
        "optimizers", "adabound").train.weight_decay
    adam = _built(params, "adam")[0].param_groups[0]
    assert (adam["betas"], adam["eps"], adam["amsgrad"]) == ((0.8, 0.99), 1e-6, False)
    rmsprop = _built(params, "rmsprop")[0].param_groups[0]
    assert (rmsprop["alpha"], rmsprop["centered"]) == (0.95, True)
    assert _built(params, "sgd")[0].param_groups[0]["momentum"] == 0.0  # plain SGD: its definition
    assert _built(params, "momentum")[0].param_groups[0]["momentum"] == options["momentum"]["momentum"]


def test_sampled_fisher_kfac_steps_the_experiments_resnet(raw_params):
    # the ResNet's in-place ops (ReLU(inplace), out += shortcut) under the extra sampled-label backward
    raw_params["optimizers"]["optimizer_options"]["kfac"]["fisher"] = "sampled"
    params = config.validate(raw_params, "smoke")
    cfg = _small(params.settings("optimizers", "kfac"))
    model = ex.build_network(cfg, 4, 0, CPU)
    optimizer, _ = ex.build_optimization(cfg, "kfac", model, 0.05, 5, 1, seed=3)
    assert optimizer.fisher == "sampled" and optimizer.seed == 3
    before = [p.detach().clone() for p in model.parameters()]
    gen = torch.Generator().manual_seed(0)
    for _ in range(2):
        x, y = torch.randn(8, 3, 32, 32, generator=gen), torch.randint(0, 4, (8,), generator=gen)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    assert all("A_inv" in optimizer.state[m.weight] for m in optimizer.layers)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))


def _set_schedules(raw_params, cyclical, one_cycle, step, cosine):
    schedules = raw_params["optimizers"]["schedule_options"]
    for name, values in (("cyclical", cyclical), ("one_cycle", one_cycle), ("step", step), ("cosine", cosine)):
        schedules[name].update(values)
    return config.validate(raw_params, "smoke")


def test_schedule_settings_in_params_reach_the_lr_trace(raw_params):
    before = _set_schedules(raw_params, cyclical=dict(base_ratio=0.25, epochs_per_cycle=8),
                            one_cycle=dict(div_factor=25.0, cycle_momentum=False),
                            step=dict(milestones=[0.5, 0.75], gamma=0.1), cosine=dict(eta_min=0.0))
    after = _set_schedules(raw_params, cyclical=dict(base_ratio=0.5, epochs_per_cycle=2),
                           one_cycle=dict(div_factor=10.0, cycle_momentum=True),
                           step=dict(milestones=[0.25], gamma=0.5), cosine=dict(eta_min=0.01))
    # 4 epochs of 5 steps, tuned lr 0.1. CLR: base 1/4 -> 1/2 of the lr; one 8-epoch-ish cycle -> two of 2 epochs
    clr_before, clr_after = _trace(before, "lr-clr"), _trace(after, "lr-clr")
    assert clr_before[0] == pytest.approx(0.025) and clr_before.index(max(clr_before)) == 10
    assert clr_after[0] == pytest.approx(0.05) and clr_after[5] == pytest.approx(0.1) == clr_after[15]
    assert clr_after[10] == pytest.approx(0.05)
    assert _trace(before, "lr-onecycle")[0] == pytest.approx(0.1 / 25)
    assert _trace(after, "lr-onecycle")[0] == pytest.approx(0.1 / 10)
    assert len(set(_trace(before, "lr-onecycle", key="momentum"))) == 1  # momentum fixed at 0.9
    assert len(set(_trace(after, "lr-onecycle", key="momentum"))) > 1  # cycled
    assert _trace(before, "lr-step") == pytest.approx([0.1] * 10 + [0.01] * 5 + [0.001] * 5)
    assert _trace(after, "lr-step") == pytest.approx([0.1] * 5 + [0.05] * 15)
    assert min(_trace(before, "lr-cosine", steps=21)) == pytest.approx(0.0, abs=1e-12)
    assert min(_trace(after, "lr-cosine", steps=21)) == pytest.approx(0.01)


def test_bad_optimizer_input_is_a_one_line_config_error_naming_the_variant(raw_params, monkeypatch):
    params = config.validate(raw_params, "smoke")
    cfg = _small(params.settings("optimizers", "adam"))
    model = ex.build_network(cfg, 4, 0, CPU)
    with pytest.raises(ConfigError, match=r"^optimizers\.variants\.adam: optimizer 'adam': lr must be a positive"):
        ex.build_optimization(cfg, "adam", model, 0.0, 2, 1, seed=0)
    # an option the optimizer does not take (the schema forbids it in params.yaml; a hand-made Settings could not)
    monkeypatch.setattr(schema.Settings, "options", lambda self: {"weight_decay": 0.0, "momentum": 0.9})
    with pytest.raises(ConfigError, match=r"^optimizers\.variants\.adam: optimizer 'adam' does not take") as err:
        ex.build_optimization(cfg, "adam", model, 1e-3, 2, 1, seed=0)
    assert "\n" not in str(err.value)
