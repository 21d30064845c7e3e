"""Experiment 4 on data: lr tuning on a held-out validation split (never the test split), training at the tuned
lr, normalisation modes, and the errors a user meets. Tiny generated images in a tmp folder; jobs are built as the
command line builds them (pipeline.train.jobs.Job, reading only the paths they are given)."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.nn.utils import parametrize

from pipeline import config, dag
from pipeline.data.fetch import DataError
from pipeline.errors import ConfigError, PipelineError
from pipeline.experiments.optimizers import train as ex
from pipeline.experiments.optimizers import tune as tuning
from pipeline.seeding import generator
from pipeline.train import image
from pipeline.train.jobs import Inputs, Job

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
    (root / "meta.json").write_text(json.dumps({"dataset": "cifar10", "classes": [f"c{i}" for i in range(classes)],
                                                "synthetic": True}))


def tiny_raw(raw_params, tmp_path) -> dict:
    """Smoke params with a tiny model and budget, the data root in tmp_path."""
    raw_params["data"]["root"] = str(tmp_path / "data")
    raw_params["optimizers"]["profiles"]["smoke"] = {
        "model": {"widths": [4, 4, 4]}, "train": {"subset": "full", "epochs": 2, "batch_size": 8},
        "tuning": {"epochs": 3, "points": 3, "step_decades": 1.5, "validation_fraction": 0.25}}
    return raw_params


@pytest.fixture
def tiny(tmp_path, raw_params, monkeypatch):
    """The tiny params, tiny CIFAR-like images in tmp_path/data/prepared/cifar10; the working dir is tmp_path, so
    the default paths (dag.job_inputs: data/prepared/..., results/tuning/...) are tmp_path's."""
    write_images(tmp_path / "data" / "prepared" / "cifar10")
    subsets = tmp_path / "data" / "subsets" / "cifar10"  # the stage passes it; subset "full" reads no file from it
    subsets.mkdir(parents=True)
    (subsets / "subsets.json").write_text(json.dumps({"dataset": "cifar10"}))
    monkeypatch.chdir(tmp_path)
    return config.validate(tiny_raw(raw_params, tmp_path), "smoke")


def job(params, variant, tmp_path, seed=0, tuning_files=None, run_dir=None) -> Job:
    """A job of `variant` given the tiny dataset and `tuning_files` ({tuning job: file})."""
    inputs = Inputs(data={"cifar10": tmp_path / "data" / "prepared" / "cifar10"}, tuning=tuning_files or {})
    return Job(params, "optimizers", variant, seed, inputs, run_dir or tmp_path / "runs" / variant / f"seed{seed}",
               tmp_path / "ckpt", CPU)


def tuning_out(tmp_path, name) -> Path:
    return tmp_path / dag.tuning_file("optimizers", name)


def tune(params, name, tmp_path):
    return tuning.tune(job(params, name, tmp_path, seed=None), tuning_out(tmp_path, name))


# ---------------------------------------------------------------------------------------------- validation split
def test_validation_split_is_class_balanced_disjoint_and_deterministic():
    labels = np.repeat(np.arange(5), 40)
    fit, val = tuning.validation_split(labels, 0.1, seed=0)
    assert np.bincount(labels[val]).tolist() == [4] * 5
    assert len(np.intersect1d(fit, val)) == 0 and len(fit) + len(val) == len(labels)
    again_fit, again_val = tuning.validation_split(labels, 0.1, seed=0)
    assert np.array_equal(val, again_val) and np.array_equal(fit, again_fit)
    assert not np.array_equal(val, tuning.validation_split(labels, 0.1, seed=1)[1])
    with pytest.raises(ConfigError, match="validation_fraction") as err:
        tuning.validation_split(np.array([0, 1]), 0.5, seed=0)  # one image per class: nothing left to fit
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------- tuning
def test_pick_is_the_best_validation_accuracy_ties_to_lower_loss_diverged_last():
    def s(acc, loss, diverged=False):
        return {"val_acc": None if diverged else acc, "val_loss": None if diverged else loss, "diverged": diverged}

    assert tuning.pick([s(0.2, 1.0), s(0.6, 0.9), s(0.4, 0.5)]) == 1
    assert tuning.pick([s(0.5, 1.0), s(0.5, 0.7), s(0, 0, diverged=True)]) == 1  # tie -> lower loss
    assert tuning.pick([s(0.5, 1.0), s(0.5, 1.0)]) == 0  # full tie -> smaller lr
    assert tuning.pick([s(0, 0, True), s(0.1, 2.3), s(0, 0, True)]) == 1
    assert tuning.pick([s(0, 0, True), s(0, 0, True)]) == 0


def test_score_is_the_last_validation_epoch_and_a_non_finite_one_is_a_divergence():
    def run(rows, diverged=False):
        return SimpleNamespace(history=rows, diverged=diverged, epoch=len(rows), train_seconds=1.5)

    rows = [{"test_acc": 0.25, "test_loss": 1.4}, {"test_acc": 0.5, "test_loss": 1.1}]
    assert tuning.score_of(run(rows)) == {"val_acc": 0.5, "val_loss": 1.1, "diverged": False, "epochs": 2,
                                          "train_seconds": 1.5, "val_acc_per_epoch": [0.25, 0.5]}
    for bad in (run(rows, diverged=True), run(rows[:1] + [{"test_acc": 0.5, "test_loss": float("nan")}]),
                run(rows[:1] + [{"train_loss": float("nan")}]), run([])):
        score = tuning.score_of(bad)
        assert score["diverged"] and score["val_acc"] is None and score["val_loss"] is None
        assert tuning.pick([score, tuning.score_of(run(rows))]) == 1  # ranked below every finished point


def test_tuning_never_reads_the_test_split(tiny, tmp_path, monkeypatch):
    prepared = tmp_path / "data" / "prepared" / "cifar10"
    with np.load(prepared / "train.npz") as train:
        x_train, y_train = train["x"], train["y"]
    (prepared / "test.npz").unlink()  # tuning must not need it
    opened, real_load = [], np.load
    monkeypatch.setattr(np, "load", lambda file, *a, **k: opened.append(str(file)) or real_load(file, *a, **k))
    evaluated, real_evaluate = [], image.evaluate
    monkeypatch.setattr(image, "evaluate", lambda model, data, batch=500: evaluated.append(data.test_x.clone())
                        or real_evaluate(model, data, batch))

    record = tune(tiny, "adam", tmp_path)

    assert [Path(name).name for name in opened] == ["train.npz"]
    _, val = tuning.validation_split(y_train, 0.25, seed=0)
    expected = torch.from_numpy(x_train[val].transpose(0, 3, 1, 2).copy())
    # 3 lrs x 3 epochs, every evaluation on the validation slice only
    assert len(evaluated) == 3 * 3 and all(torch.equal(x, expected) for x in evaluated)
    assert record["split"] == {"seed": 0, "purpose": "tuning/validation", "subset": "full", "training_set": 80,
                               "fit": 60, "validation": 20, "validation_fraction": 0.25}
    # the file holds the record (as JSON: the optimizer's betas are a list there)
    assert json.loads(tuning_out(tmp_path, "adam").read_text()) == json.loads(json.dumps(record))
    assert record["config"] == tuning.tuning_config(tiny, "adam")


def test_tuning_picks_the_argmax_of_validation_accuracy(tiny, tmp_path):
    record = tune(tiny, "momentum", tmp_path)
    assert record["grid"] == pytest.approx([0.1 * 10 ** -1.5, 0.1, 0.1 * 10 ** 1.5])
    assert record["grid"] == tiny.settings("optimizers", "momentum").lr_grid()
    accs = [s["val_acc"] if not s["diverged"] else -1.0 for s in record["scores"]]
    assert len(set(accs)) > 1  # the grid points differ, so the argmax means something
    assert record["pick"] == record["grid"][record["pick_index"]]
    assert accs[record["pick_index"]] == max(accs)
    assert record["budget"]["epochs"] == 3 and record["budget"]["steps_per_epoch"] == 8  # 60 fit images / 8
    assert all(len(s["val_acc_per_epoch"]) == s["epochs"] == 3 for s in record["scores"] if not s["diverged"])


def test_a_tuning_job_reads_only_the_data_it_is_given(tiny, tmp_path):
    no_data = Job(tiny, "optimizers", "adam", None, Inputs(), tmp_path / "run", tmp_path / "ckpt", CPU)
    with pytest.raises(DataError, match=r"^optimizers/adam: no --data for dataset 'cifar10'") as err:
        tuning.tune(no_data, tuning_out(tmp_path, "adam"))
    assert "\n" not in str(err.value) and not tuning_out(tmp_path, "adam").exists()


# ---------------------------------------------------------------------------------------------- training
def test_variant_trains_end_to_end_at_the_tuned_lr(tiny, tmp_path):
    record = tune(tiny, "momentum", tmp_path)
    run_dir = tmp_path / "runs" / "norm-batch" / "seed0"
    inputs = Inputs.from_paths(**dag.job_inputs(tiny, "optimizers", "norm-batch"))  # the stage's own arguments
    assert inputs.tuning == {"momentum": Path(dag.tuning_file("optimizers", "momentum"))}  # lr_from: momentum
    metrics = ex.train(Job(tiny, "optimizers", "norm-batch", 0, inputs, run_dir, tmp_path / "ckpt", CPU))

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


def test_weight_norm_variant_has_weight_norm_parametrizations(tiny, tmp_path):
    data, _ = tuning.tuning_data(job(tiny, "norm-weight", tmp_path))
    for variant, has_bn in (("norm-weight", False), ("norm-both", True)):
        cfg = tiny.settings("optimizers", variant)
        model = ex.build_network(cfg, data.num_classes, 0, CPU)
        ex.init_weight_norm(model, cfg, data, seed=0)
        layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        assert layers and all(parametrize.is_parametrized(m, "weight") for m in layers)
        assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == has_bn
        # data-dependent init: the stem's pre-activations on its init batch have std 1 per channel, and mean 0
        # where the conv has a bias to shift them (weight mode; in `both` the BatchNorm after it centres them)
        rows = torch.randperm(len(data.y), generator=generator(0, "weight_norm_init"))[:cfg.train.batch_size]
        with torch.no_grad():
            out = model.stem(data.normalize(data.x[rows]))
        assert (out.std(dim=(0, 2, 3), unbiased=False) - 1).abs().max() < 1e-3
        assert (out.mean(dim=(0, 2, 3)).abs().max() < 1e-4) == (not has_bn)
    plain = ex.build_network(tiny.settings("optimizers", "norm-none"), 4, 0, CPU)
    assert not any(parametrize.is_parametrized(m) for m in plain.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())


def test_missing_tuning_file_is_a_one_line_error_naming_it(tiny, tmp_path):
    # not given on the command line: the error names the tuning job the variant reads (lr-cosine reuses momentum's)
    with pytest.raises(DataError) as err:
        ex.train(job(tiny, "lr-cosine", tmp_path, run_dir=tmp_path / "run"))
    message = str(err.value)
    assert "no --tuning for tuning job 'momentum'" in message and "\n" not in message
    # given, but not there (the tune stage has not run)
    missing = tuning_out(tmp_path, "momentum")
    with pytest.raises(DataError) as err:
        ex.train(job(tiny, "lr-cosine", tmp_path, tuning_files={"momentum": missing}, run_dir=tmp_path / "run"))
    message = str(err.value)
    assert str(missing) in message and "missing" in message and "\n" not in message
    assert not (tmp_path / "run").exists()


def test_tuning_file_of_another_configuration_is_refused(tiny, tmp_path, raw_params):
    tune(tiny, "adam", tmp_path)
    given = {"adam": tuning_out(tmp_path, "adam")}
    for change in (lambda o: o["profiles"]["smoke"]["tuning"].update(epochs=4),  # another tuning budget
                   lambda o: o["optimizer_options"]["adam"].update(eps=1e-6)):  # a setting the tuning did not see
        raw = copy.deepcopy(tiny_raw(raw_params, tmp_path))
        change(raw["optimizers"])
        other = config.validate(raw, "smoke")
        with pytest.raises(PipelineError, match=r"adam\.json: tuned for another profile or configuration") as err:
            ex.train(job(other, "adam", tmp_path, tuning_files=given, run_dir=tmp_path / "run"))
        assert "\n" not in str(err.value) and not (tmp_path / "run").exists()
    # the same configuration in another profile: refused as well
    raw = copy.deepcopy(tiny_raw(raw_params, tmp_path))
    raw["optimizers"]["profiles"]["quick"] = raw["optimizers"]["profiles"]["smoke"]
    raw["profiles"]["quick"]["synthetic"] = True  # the tiny data are synthetic
    raw.pop("block_size")  # its quick settings read more text than the synthetic corpus has
    with pytest.raises(PipelineError, match=r"adam\.json: tuned for another profile or configuration"):
        ex.train(job(config.validate(raw, "quick"), "adam", tmp_path, tuning_files=given, run_dir=tmp_path / "run"))
    # and the file's own configuration trains
    assert ex.train(job(tiny, "adam", tmp_path, tuning_files=given))["extra"]["lr_from"] == "adam"
