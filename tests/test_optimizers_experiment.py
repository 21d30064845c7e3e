"""Experiment 4 wiring: schema, lr tuning on a held-out validation split (never the test split), training at the
tuned lr, normalisation modes, and the errors a user meets. Tiny generated images in a tmp data root."""
from __future__ import annotations

import json
import typing
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn.utils import parametrize

from pipeline import config, dag
from pipeline.experiments import optimizers as ex
from pipeline.methods import lr_schedules, normalization, optimizers as methods
from pipeline.schemas import optimizers as schema

OPTIMIZERS = ["sgd", "momentum", "nesterov", "adagrad", "adadelta", "rmsprop", "adam", "adamw", "adamax", "nadam",
              "amsgrad", "adabound", "amsbound", "kfac"]
CPU = torch.device("cpu")


# ---------------------------------------------------------------------------------------------- tiny problem
def write_images(root, classes=4, train_per_class=20, test_per_class=5):
    """Each class a distinct flat colour plus noise (learnable in a few steps); test images differ from train."""
    gen = np.random.default_rng(0)
    colours = gen.uniform(40, 215, size=(classes, 3))
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        y = np.repeat(np.arange(classes), n).astype(np.int64)
        x = colours[y][:, None, None, :] + gen.normal(0, 25, size=(len(y), 32, 32, 3))
        np.savez(root / f"{split}.npz", x=np.clip(x, 0, 255).astype(np.uint8), y=y)
    (root / "meta.json").write_text(json.dumps({"classes": [f"c{i}" for i in range(classes)], "synthetic": True}))


@pytest.fixture
def tiny(tmp_path, raw_params, monkeypatch):
    """Smoke params pointed at a tmp data root with tiny CIFAR-like images; the working dir is tmp_path, so the
    tuning files land in tmp_path/results/tuning/optimizers/."""
    write_images(tmp_path / "data" / "prepared" / "cifar10")
    raw_params["data"]["root"] = str(tmp_path / "data")
    raw_params["optimizers"]["profiles"]["smoke"] = {
        "model": {"widths": [4, 4, 4]}, "train": {"subset": "full", "epochs": 2, "batch_size": 8},
        "tuning": {"epochs": 3, "points": 3, "step_decades": 1.5, "validation_fraction": 0.25}}
    monkeypatch.chdir(tmp_path)
    return config.validate(raw_params, "smoke")


def tune(params, name, tmp_path):
    return ex.tune(params, name, tmp_path / dag.tuning_file("optimizers", name), CPU, tmp_path / "ckpt")


# ---------------------------------------------------------------------------------------------- schema
def test_schema_names_are_the_names_the_methods_build():
    assert list(schema.OPTIMIZERS) == list(typing.get_args(schema.OptimizerName)) == list(methods.KNOWN)
    assert set(typing.get_args(schema.ScheduleName)) == set(lr_schedules.KNOWN)
    assert set(typing.get_args(schema.NormalizationName)) == set(normalization.MODES)


def test_grid_and_tuning_jobs_are_the_same_in_every_profile(raw_params):
    grids = []
    for profile in config.PROFILES:
        section = config.validate(raw_params, profile).optimizers
        names = section.variant_names()
        assert names[:14] == OPTIMIZERS
        assert {n for n in names if n.startswith("norm-")} == {"norm-batch", "norm-weight", "norm-both", "norm-none"}
        assert {n for n in names if n.startswith("lr-")} == {"lr-constant", "lr-step", "lr-cosine", "lr-clr",
                                                             "lr-onecycle"}
        # the families' reference arms are exactly `momentum`, so they reuse its lr; everything else tunes its own
        assert section.variant_tuning("norm-batch") == section.variant_tuning("lr-cosine") == ["momentum"]
        assert section.resolve("norm-batch") == section.resolve("lr-cosine") == section.resolve("momentum")
        assert section.variant_tuning("norm-none") == ["norm-none"]
        grids.append((names, section.tuning_names()))
        for name in section.tuning_names():
            grid = section.lr_grid(name)
            assert grid == sorted(grid) and len(grid) == section.tuning.points
            assert section.lr_center[section.variants[name].optimizer] in grid  # odd points: the centre is on it
    assert grids[0] == grids[1] == grids[2]


def test_smoke_grid_is_log_spaced_around_the_centre(raw_params):
    section = config.validate(raw_params, "smoke").optimizers
    assert section.lr_grid("momentum") == pytest.approx([0.01, 0.1, 1.0])
    assert section.lr_grid("adam") == pytest.approx([1e-4, 1e-3, 1e-2])


def test_dag_trains_each_variant_after_its_tuning_job(raw_params):
    params = config.validate(raw_params, "smoke")
    stages = {s.name: s for s in dag.stages(params)}
    assert "tune_optimizers_kfac" in stages and "tune_optimizers_norm-batch" not in stages
    assert dag.tuning_file("optimizers", "momentum") in stages["train_optimizers_norm-batch"].deps
    assert dag.tuning_file("optimizers", "lr-clr") in stages["train_optimizers_lr-clr"].deps


def test_unknown_optimizer_is_a_one_line_config_error_naming_the_key(raw_params):
    raw_params["optimizers"]["variants"]["adam"]["optimizer"] = "adamm"
    with pytest.raises(config.ConfigError) as err:
        config.validate(raw_params, "smoke")
    message = str(err.value)
    assert "optimizers.variants.adam.optimizer" in message and "\n" not in message


@pytest.mark.parametrize("change, key", [
    (lambda o: o["variants"]["norm-batch"].update(lr_from="nope"), "variants.norm-batch.lr_from"),
    (lambda o: o["variants"]["norm-batch"].update(lr_from="lr-cosine"), "variants.norm-batch.lr_from"),
    (lambda o: o["lr_center"].pop("kfac"), "lr_center"),
    (lambda o: o["variants"]["adam"].update(schedule="cosin"), "optimizers.variants.adam.schedule"),
    (lambda o: o["optimizer_options"]["kfac"].update(dampnig=1e-3), "optimizers.optimizer_options.kfac.dampnig"),
    (lambda o: o["optimizer_options"]["kfac"].update(fisher="true"), "optimizers.optimizer_options.kfac.fisher"),
    (lambda o: o["optimizer_options"]["kfac"].update(damping=0.0), "optimizers.optimizer_options.kfac.damping"),
    (lambda o: o["optimizer_options"]["adabound"].pop("gamma"), "optimizers.optimizer_options.adabound.gamma"),
    (lambda o: o["optimizer_options"].update(adam={"eps": 1e-8}), "optimizers.optimizer_options.adam"),
    (lambda o: o["schedule_options"]["cyclical"].update(base_ratio=1.5),
     "optimizers.schedule_options.cyclical.base_ratio"),
    (lambda o: o["schedule_options"]["one_cycle"].pop("pct_start"), "optimizers.schedule_options.one_cycle.pct_start"),
    (lambda o: o["schedule_options"]["one_cycle"].update(base_momentum=0.99),
     "optimizers.schedule_options.one_cycle"),
])
def test_bad_variant_settings_fail_at_load(raw_params, change, key):
    change(raw_params["optimizers"])
    with pytest.raises(config.ConfigError, match=key.replace(".", r"\.")):
        config.validate(raw_params, "smoke")


@pytest.mark.parametrize("profile", config.PROFILES)
def test_every_variant_builds_its_model_optimizer_and_schedule(raw_params, profile):
    section = config.validate(raw_params, profile).optimizers
    for variant in section.variant_names():
        cfg = section.resolve(variant).model_copy(update={"model": section.model.model_copy(update={"widths": [2, 2, 2]})})
        model = ex.build_network(cfg, 10, 0, CPU)
        optimizer, scheduler = ex.build_optimization(cfg, variant, model, 0.1, steps_per_epoch=3, epochs=2)
        assert isinstance(optimizer, methods.optimizer_class(cfg.optimizer))
        assert isinstance(scheduler, torch.optim.lr_scheduler.LRScheduler)
        assert optimizer.param_groups[0]["weight_decay"] == cfg.options["weight_decay"]


# ---------------------------------------------------------------------------------------------- settings from params.yaml
def _built(section, variant, lr=0.1, steps_per_epoch=5, epochs=4):
    """(optimizer, scheduler) of `variant` as a run builds them (a 2-channel model: only the settings matter)."""
    cfg = section.resolve(variant)
    cfg = cfg.model_copy(update={"model": section.model.model_copy(update={"widths": [2, 2, 2]})})
    return ex.build_optimization(cfg, variant, ex.build_network(cfg, 10, 0, CPU), lr, steps_per_epoch, epochs)


def _trace(section, variant, key="lr", steps=20):
    """param_groups[0][key] at each of `steps` iterations (optimizer and schedule stepped as in training)."""
    optimizer, scheduler = _built(section, variant)
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0][key])
        optimizer.step()
        scheduler.step()
    return out


def test_optimizer_settings_in_params_reach_the_built_optimizer(raw_params):
    options = raw_params["optimizers"]["optimizer_options"]
    options["kfac"].update(momentum=0.5, damping=0.05, stat_decay=0.8, inv_every=7, stats_every=2, kl_clip=0.01,
                           fisher="sampled")
    options["adabound"].update(final_lr=0.2, gamma=0.01)
    options["amsbound"].update(final_lr=0.3)
    raw_params["optimizers"]["variants"]["kfac"]["options"] = {"weight_decay": 0.0}  # a variant's options still win
    section = config.validate(raw_params, "smoke").optimizers
    kfac, _ = _built(section, "kfac")
    group = kfac.param_groups[0]
    assert (group["momentum"], group["damping"], group["weight_decay"]) == (0.5, 0.05, 0.0)
    assert (kfac.stat_decay, kfac.inv_every, kfac.stats_every, kfac.kl_clip, kfac.fisher) == (0.8, 7, 2, 0.01,
                                                                                            "sampled")
    adabound, amsbound = _built(section, "adabound")[0].param_groups[0], _built(section, "amsbound")[0].param_groups[0]
    assert (adabound["final_lr"], adabound["gamma"], adabound["ams_bound"]) == (0.2, 0.01, False)
    assert (amsbound["final_lr"], amsbound["gamma"], amsbound["ams_bound"]) == (0.3, 1e-3, True)


def test_sampled_fisher_kfac_steps_the_experiments_resnet(raw_params):
    # the ResNet's in-place ops (ReLU(inplace), out += shortcut) under the extra sampled-label backward
    raw_params["optimizers"]["optimizer_options"]["kfac"]["fisher"] = "sampled"
    section = config.validate(raw_params, "smoke").optimizers
    cfg = section.resolve("kfac")
    cfg = cfg.model_copy(update={"model": section.model.model_copy(update={"widths": [2, 2, 2]})})
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


def test_schedule_settings_in_params_reach_the_lr_trace(raw_params):
    before = config.validate(raw_params, "smoke").optimizers
    schedules = raw_params["optimizers"]["schedule_options"]
    schedules["cyclical"].update(base_ratio=0.5, epochs_per_cycle=2)
    schedules["one_cycle"].update(div_factor=10.0, cycle_momentum=True)
    schedules["step"].update(milestones=[0.25], gamma=0.5)
    schedules["cosine"].update(eta_min=0.01)
    after = config.validate(raw_params, "smoke").optimizers
    # 4 epochs of 5 steps, tuned lr 0.1. CLR: base 1/4 -> 1/2 of the lr; one 8-epoch-ish cycle -> two of 2 epochs
    clr_before, clr_after = _trace(before, "lr-clr"), _trace(after, "lr-clr")
    assert clr_before[0] == pytest.approx(0.025) and clr_before.index(max(clr_before)) == 10
    assert clr_after[0] == pytest.approx(0.05) and clr_after[5] == pytest.approx(0.1) == clr_after[15]
    assert clr_after[10] == pytest.approx(0.05)
    assert _trace(before, "lr-onecycle")[0] == pytest.approx(0.1 / 25)
    assert _trace(after, "lr-onecycle")[0] == pytest.approx(0.1 / 10)
    assert len(set(_trace(before, "lr-onecycle", key="momentum"))) == 1  # momentum fixed at 0.9
    assert len(set(_trace(after, "lr-onecycle", key="momentum"))) > 1  # cycled
    assert _trace(after, "lr-step") == pytest.approx([0.1] * 5 + [0.05] * 15)
    assert min(_trace(after, "lr-cosine", steps=21)) == pytest.approx(0.01)


def test_params_values_reproduce_the_builders_defaults(raw_params):
    """Moving the settings into params.yaml changed no result: in every profile the built optimizers and the lr
    traces equal those of the builders' own defaults (update this test when a value is changed on purpose)."""
    from pipeline.methods import kfac as kfac_module

    for profile in config.PROFILES:
        section = config.validate(raw_params, profile).optimizers
        kfac = _built(section, "kfac")[0]
        assert (kfac.param_groups[0]["momentum"], kfac.param_groups[0]["damping"], kfac.stat_decay, kfac.inv_every,
                kfac.stats_every, kfac.kl_clip, kfac.fisher) == (
            kfac_module.MOMENTUM, kfac_module.DAMPING, kfac_module.STAT_DECAY, kfac_module.INV_EVERY,
            kfac_module.STATS_EVERY, kfac_module.KL_CLIP, "empirical")
        for name in ("adabound", "amsbound"):
            group = _built(section, name)[0].param_groups[0]
            assert (group["final_lr"], group["gamma"]) == (methods.DEFAULTS[name]["final_lr"],
                                                           methods.DEFAULTS[name]["gamma"])
        for variant, schedule in (("lr-clr", "cyclical"), ("lr-onecycle", "one_cycle"), ("lr-step", "step"),
                                  ("lr-cosine", "cosine")):
            optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
            scheduler = lr_schedules.build_scheduler(schedule, optimizer, 5, 4)  # the builder's defaults
            expected = []
            for _ in range(20):
                expected.append(optimizer.param_groups[0]["lr"])
                optimizer.step()
                scheduler.step()
            assert _trace(section, variant) == expected, (profile, variant)


def test_bad_optimizer_option_names_the_variant(tiny):
    section = tiny.optimizers
    cfg = section.resolve("adam").model_copy(update={"options": {"weight_decay": 0.0, "momentum": 0.9}})
    model = ex.build_network(cfg, 4, 0, CPU)
    with pytest.raises(ValueError, match=r"optimizers\.variants\.adam: optimizer 'adam' does not take"):
        ex.build_optimization(cfg, "adam", model, 1e-3, 2, 1)


# ---------------------------------------------------------------------------------------------- validation split
def test_validation_split_is_class_balanced_disjoint_and_deterministic():
    labels = np.repeat(np.arange(5), 40)
    fit, val = ex.validation_split(labels, 0.1, seed=0)
    assert np.bincount(labels[val]).tolist() == [4] * 5
    assert len(np.intersect1d(fit, val)) == 0 and len(fit) + len(val) == len(labels)
    again_fit, again_val = ex.validation_split(labels, 0.1, seed=0)
    assert np.array_equal(val, again_val) and np.array_equal(fit, again_fit)
    assert not np.array_equal(val, ex.validation_split(labels, 0.1, seed=1)[1])
    with pytest.raises(ValueError, match="validation_fraction"):
        ex.validation_split(np.array([0, 1]), 0.5, seed=0)  # one image per class: nothing left to fit


# ---------------------------------------------------------------------------------------------- tuning
def test_pick_is_the_best_validation_accuracy_ties_to_lower_loss_diverged_last():
    def s(acc, loss, diverged=False):
        return {"val_acc": None if diverged else acc, "val_loss": None if diverged else loss, "diverged": diverged}

    assert ex.pick([s(0.2, 1.0), s(0.6, 0.9), s(0.4, 0.5)]) == 1
    assert ex.pick([s(0.5, 1.0), s(0.5, 0.7), s(0, 0, diverged=True)]) == 1  # tie -> lower loss
    assert ex.pick([s(0.5, 1.0), s(0.5, 1.0)]) == 0  # full tie -> smaller lr
    assert ex.pick([s(0, 0, True), s(0.1, 2.3), s(0, 0, True)]) == 1
    assert ex.pick([s(0, 0, True), s(0, 0, True)]) == 0


def test_tuning_never_reads_the_test_split(tiny, tmp_path, monkeypatch):
    prepared = tiny.prepared_dir("cifar10")
    with np.load(prepared / "train.npz") as train:
        x_train, y_train = train["x"], train["y"]
    (prepared / "test.npz").unlink()  # tuning must not need it
    opened, real_load = [], np.load
    monkeypatch.setattr(np, "load", lambda file, *a, **k: opened.append(str(file)) or real_load(file, *a, **k))
    evaluated, real_evaluate = [], ex.image.evaluate
    monkeypatch.setattr(ex.image, "evaluate",
                        lambda model, data, batch=500: evaluated.append(data.test_x.clone()) or real_evaluate(model, data, batch))

    record = tune(tiny, "adam", tmp_path)

    assert [Path(name).name for name in opened] == ["train.npz"]
    _, val = ex.validation_split(y_train, 0.25, seed=0)
    expected = torch.from_numpy(x_train[val].transpose(0, 3, 1, 2).copy())
    assert len(evaluated) == 3 * 3 and all(torch.equal(x, expected) for x in evaluated)  # 3 lrs x 3 epochs: validation only
    assert record["split"] == {"seed": 0, "purpose": "tuning/validation", "subset": "full", "training_set": 80,
                               "fit": 60, "validation": 20, "validation_fraction": 0.25}
    assert json.loads((tmp_path / dag.tuning_file("optimizers", "adam")).read_text()) == record


def test_tuning_picks_the_argmax_of_validation_accuracy(tiny, tmp_path):
    record = tune(tiny, "momentum", tmp_path)
    assert record["grid"] == pytest.approx([0.1 * 10 ** -1.5, 0.1, 0.1 * 10 ** 1.5])
    accs = [s["val_acc"] if not s["diverged"] else -1.0 for s in record["scores"]]
    assert len(set(accs)) > 1  # the grid points differ, so the argmax means something
    assert record["pick"] == record["grid"][record["pick_index"]]
    assert accs[record["pick_index"]] == max(accs)
    assert record["budget"]["epochs"] == 3 and record["budget"]["steps_per_epoch"] == 8  # 60 fit images / 8
    assert all(len(s["val_acc_per_epoch"]) == s["epochs"] == 3 for s in record["scores"] if not s["diverged"])


# ---------------------------------------------------------------------------------------------- training
def test_variant_trains_end_to_end_at_the_tuned_lr(tiny, tmp_path):
    record = tune(tiny, "momentum", tmp_path)
    run_dir = tmp_path / "runs" / "norm-batch" / "seed0"
    metrics = ex.train(tiny, "norm-batch", 0, run_dir, tmp_path / "ckpt", CPU)  # lr_from: momentum

    assert json.loads((run_dir / "metrics.json").read_text()) == metrics
    assert (metrics["method"], metrics["dataset"], metrics["subset"]) == ("norm-batch", "cifar10", "full")
    assert metrics["epochs"] == 2 and metrics["metric"] == "test_acc" and not metrics["diverged"]
    assert metrics["extra"]["tuned_lr"] == record["pick"] and metrics["extra"]["lr_from"] == "momentum"
    assert (metrics["extra"]["optimizer"], metrics["extra"]["schedule"], metrics["extra"]["normalization"]) == \
        ("momentum", "cosine", "batch")
    run_config = json.loads((run_dir / "config.json").read_text())["run"]["config"]
    assert run_config["lr"] == record["pick"] and run_config["optimizer"] == "momentum"
    history = (run_dir / "history.csv").read_text().splitlines()
    assert len(history) == 3 and "test_acc" in history[0]
    # the cosine schedule starts at the tuned lr and anneals over the whole budget (lr: each epoch's first step)
    lrs = [float(row.split(",")[history[0].split(",").index("lr")]) for row in history[1:]]
    assert lrs[0] == pytest.approx(record["pick"]) and 0 < lrs[-1] < lrs[0]


def test_weight_norm_variant_has_weight_norm_parametrizations(tiny):
    section = tiny.optimizers
    data = ex.tuning_data(tiny, section, CPU)[0]
    for variant, has_bn in (("norm-weight", False), ("norm-both", True)):
        cfg = section.resolve(variant)
        model = ex.build_network(cfg, data.num_classes, 0, CPU)
        ex.init_weight_norm(model, cfg, data, seed=0)
        layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        assert layers and all(parametrize.is_parametrized(m, "weight") for m in layers)
        assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == has_bn
        # data-dependent init: the stem's pre-activations on its init batch have std 1 per channel, and mean 0
        # where the conv has a bias to shift them (weight mode; in `both` the BatchNorm after it centres them)
        rows = torch.randperm(len(data.y), generator=ex.generator(0, "weight_norm_init"))[:cfg.train.batch_size]
        with torch.no_grad():
            out = model.stem(data.normalize(data.x[rows]))
        assert (out.std(dim=(0, 2, 3), unbiased=False) - 1).abs().max() < 1e-3
        assert (out.mean(dim=(0, 2, 3)).abs().max() < 1e-4) == (not has_bn)
    plain = ex.build_network(section.resolve("norm-none"), 4, 0, CPU)
    assert not any(parametrize.is_parametrized(m) for m in plain.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())


def test_missing_tuning_file_is_a_one_line_error_naming_it(tiny, tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        ex.train(tiny, "lr-cosine", 0, tmp_path / "run", tmp_path / "ckpt", CPU)
    message = str(err.value)
    assert dag.tuning_file("optimizers", "momentum") in message and "\n" not in message
    assert not (tmp_path / "run").exists()


def test_tuning_file_of_another_configuration_is_refused(tiny, tmp_path, raw_params):
    tune(tiny, "adam", tmp_path)
    raw_params["data"]["root"] = str(tmp_path / "data")
    raw_params["optimizers"]["profiles"]["smoke"] = {"model": {"widths": [4, 4, 4]}, "train": {"subset": "full"}}
    other = config.validate(raw_params, "smoke")  # the repository's smoke tuning budget, not the tiny one
    with pytest.raises(RuntimeError, match=r"adam\.json: tuned for another profile or configuration"):
        ex.train(other, "adam", 0, tmp_path / "run", tmp_path / "ckpt", CPU)
