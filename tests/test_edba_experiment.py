"""Experiment 2 (EDBA on CIFAR subsets): the grid, the schema, end-to-end runs of both methods on tiny generated
images, batch bounds, the leak guards (subset-only training indices, test-only evaluation, distinct samples), the
baseline's independence from EDBA code, and resume."""
from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pipeline import config
from pipeline.data.fetch import DataError
from pipeline.experiments.edba import method as edba_method
from pipeline.experiments.edba import train as experiment
from pipeline.train import engine, image
from pipeline.train.jobs import Inputs, Job

CLASSES = 10
N_TRAIN, N_TEST = 60, 20  # per dataset; every image different (random pixels)
SUBSETS = {"full": N_TRAIN, "p10": 20, "p1": 10, "n100": 30}  # names of params.yaml's cifar10 subsets
SEEDS = (0, 1)


# ---- tiny data in a tmp root, laid out like the pipeline's prepare/subsets stages -----------------------------
def write_dataset(root: Path, name: str, classes: int, gen: np.random.Generator) -> None:
    prepared = root / "prepared" / name
    prepared.mkdir(parents=True)
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        np.savez(prepared / f"{split}.npz", x=gen.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                 y=(np.arange(n) % classes).astype(np.int64))
    meta = {"dataset": name, "kind": name, "synthetic": True, "source": "test",
            "classes": [f"class{c}" for c in range(classes)]}
    (prepared / "meta.json").write_text(json.dumps(meta))
    for seed in SEEDS:
        out = root / "subsets" / name / f"seed{seed}"
        out.mkdir(parents=True)
        for subset, k in SUBSETS.items():
            index = np.sort(np.random.default_rng(seed).permutation(N_TRAIN)[:k]).astype(np.int64)
            np.save(out / f"{subset}.npy", index)
    (root / "subsets" / name / "subsets.json").write_text(json.dumps({"dataset": name, "seeds": list(SEEDS)}))


@pytest.fixture
def data_root(tmp_path) -> Path:
    gen = np.random.default_rng(0)
    write_dataset(tmp_path / "data", "cifar10", CLASSES, gen)
    write_dataset(tmp_path / "data", "cifar100", 100, gen)
    return tmp_path / "data"


def make_params(raw: dict, root: Path, **smoke):
    """params.yaml with data.root at `root` and the smoke profile's edba overrides updated by `smoke`."""
    raw = copy.deepcopy(raw)
    raw["data"]["root"] = str(root)
    overrides = raw["edba"]["profiles"]["smoke"]
    overrides["train"] = {**overrides.get("train", {}), "samples_per_epoch": 60, "epochs": 2, "eval_every": 1,
                          **smoke.pop("train", {})}
    overrides["edba"] = {**overrides.get("edba", {}), **smoke.pop("edba", {})}
    assert not smoke, f"unknown override groups {sorted(smoke)}"
    return config.validate(raw, "smoke")


def inputs(root: Path) -> Inputs:
    """The stage's --data / --subsets arguments for both tiny datasets (keys read from meta.json / subsets.json)."""
    return Inputs.from_paths(data=[root / "prepared" / d for d in ("cifar10", "cifar100")],
                             subsets=[root / "subsets" / d for d in ("cifar10", "cifar100")])


def job(params, variant, tmp: Path, seed: int = 0, name: str = "run", given: Inputs | None = None) -> Job:
    return Job(params, "edba", variant, seed, given if given is not None else inputs(Path(params.data.root)),
               tmp / name / variant / f"seed{seed}", tmp / f"ckpt-{name}", torch.device("cpu"))


def train(params, variant, tmp: Path, seed: int = 0, name: str = "run") -> dict:
    return experiment.train(job(params, variant, tmp, seed, name))


def history(tmp: Path, variant: str, seed: int = 0, name: str = "run") -> list[dict]:
    with open(tmp / name / variant / f"seed{seed}" / "history.csv") as f:
        return list(csv.DictReader(f))


def without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("elapsed_seconds", "time")} for r in rows]


# ---- the grid and the schema --------------------------------------------------------------------------------
def test_grid_is_the_papers_table_in_every_profile(raw_params):
    grids = {p: config.validate(raw_params, p).variants("edba") for p in config.PROFILES}
    assert grids["smoke"] == grids["quick"] == grids["paper"] and len(grids["paper"]) == 17  # 2 x (4 + 3) + 3 one-pass baselines
    assert "edba-cifar10-n100" in grids["paper"] and "baseline-cifar100-n100" not in grids["paper"]
    params = config.validate(raw_params, "paper")
    assert params.describe("edba", "edba-cifar100-p1") == {"method": "edba", "dataset": "cifar100", "subset": "p1"}
    for variant in grids["paper"]:  # the grid's coordinates are the settings the variant trains with
        method, dataset, subset = variant.split("-")
        cfg = params.settings("edba", variant)
        assert (cfg.dataset, cfg.subset, cfg.policy) == (dataset, subset, {"edba": "edba", "baseline": "fixed",
                                                                     "baseline_pass": "fixed"}[method])
        assert params.data_of("edba", variant) == [(dataset, subset)]
    # the experiment's claims.yaml: its value claims name exactly these (method, dataset, subset) cells
    ledger = yaml.safe_load(params.experiment("edba").file("claims.yaml").read_text())
    cells = {(c["arm"], c["dataset"], c["subset"]) for c in ledger["claims"] if c["kind"] == "value"}
    assert cells == {tuple(params.describe("edba", v).values()) for v in grids["paper"]}
    with pytest.raises(config.ConfigError, match="unknown variant 'edba-cifar100-n100'"):
        params.settings("edba", "edba-cifar100-n100")


def test_paper_profile_settings(raw_params):
    params = config.validate(raw_params, "paper")
    cfg = params.settings("edba", "edba-cifar10-n100")
    t = cfg.train
    assert (cfg.model.depth, cfg.model.widths, t.lr, t.momentum, t.nesterov, t.weight_decay, t.batch_size) == \
        (56, [16, 32, 64], 0.001, 0.9, True, 1e-5, 100)
    assert (cfg.edba.min_batch, cfg.edba.max_batch, cfg.edba.forward, t.augment) == (10, 1000, "two_pass", True)
    assert t.oversize_batch == "wrap"  # how a batch larger than the subset is drawn is a stated setting
    # the baseline never builds EDBA: its identity (config hash) leaves EDBA's settings out, EDBA's includes them
    baseline, edba = params.identity("edba", "baseline-cifar10-n100"), params.identity("edba", "edba-cifar10-n100")
    assert "edba" not in baseline and edba["edba"] == cfg.edba.model_dump(mode="json")
    assert {k: v for k, v in edba.items() if k not in ("edba", "policy")} == \
        {k: v for k, v in baseline.items() if k != "policy"}  # the two arms differ in the policy only


def test_samples_per_epoch_readings(raw_params):
    from types import SimpleNamespace

    data = SimpleNamespace(local_of=torch.zeros(500), y=torch.zeros(40))  # training set of 500, subset of 40
    paper = config.validate(raw_params, "paper").settings("edba", "edba-cifar10-p1")
    readings = {}
    for setting in ("train_set", "subset", 123):
        cfg = paper.model_copy(update={"train": paper.train.model_copy(update={"samples_per_epoch": setting})})
        readings[setting] = experiment.samples_per_epoch(cfg, data)
    assert readings == {"train_set": 500, "subset": 40, 123: 123}


@pytest.mark.parametrize("path,value,message", [
    (("train", "batch_size"), 5, "train.batch_size 5"),
    (("edba", "min_batch"), 2000, "edba.edba: min_batch 2000 is above max_batch"),
    (("grid", "axes", "method", "sgd"), {"policy": "sgd"}, r"edba.grid.axes.method.sgd.policy: Input should be"),
    (("grid", "axes", "subset"), ["p1", "p10"], "edba.grid.axes.subset: must be a mapping"),
    (("grid", "axes", "subset", "p5"), {}, "subset 'p5' is not in data.datasets.cifar10.subsets"),
    (("grid", "exclude"), [{"dataset": "cifar100", "subset": "n1000"}], r"edba.grid.exclude\[0\]"),
    (("grid", "axes", "method", "baseline"), {"policy": "fixed", "policy_": 1}, "policy_: unknown key"),
    (("edba", "forward"), "one_pass", "edba.edba.forward"),
    (("model", "depth"), 12, "6n\\+2"),
    (("train", "oversize_batch"), "cap", "edba.train.oversize_batch"),
])
def test_bad_settings_are_one_line_errors(raw_params, path, value, message):
    raw = copy.deepcopy(raw_params)
    node = raw["edba"]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(config.ConfigError, match=message) as err:
        config.validate(raw, "paper")
    assert "\n" not in str(err.value)


def test_unknown_subset_is_named_before_training(raw_params, data_root, tmp_path):
    """A grid subset missing from data.datasets stops the params load, before any job (or checkpoint) exists."""
    raw = copy.deepcopy(raw_params)
    raw["data"]["datasets"]["cifar10"]["subsets"].pop("p1")
    with pytest.raises(config.ConfigError,
                       match="edba variant 'baseline-cifar10-p1': subset 'p1' is not in data.datasets.cifar10"):
        make_params(raw, data_root)
    assert not (tmp_path / "ckpt-run").exists()


# ---- what a job is given --------------------------------------------------------------------------------------
def test_a_job_reads_only_the_inputs_it_is_given(raw_params, data_root, tmp_path):
    """A missing --data / --subsets is a one-line DataError before any run file or checkpoint exists; the `full`
    subset reads no subsets file."""
    params = make_params(raw_params, data_root)
    cifar10 = data_root / "prepared" / "cifar10"
    assert inputs(data_root).data == {"cifar10": cifar10, "cifar100": data_root / "prepared" / "cifar100"}
    with pytest.raises(DataError, match=r"^edba/edba-cifar10-p1: no --subsets for dataset 'cifar10'") as err:
        experiment.train(job(params, "edba-cifar10-p1", tmp_path, given=Inputs.from_paths(data=[cifar10])))
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match=r"^edba/edba-cifar100-p1: no --data for dataset 'cifar100'"):
        experiment.train(job(params, "edba-cifar100-p1", tmp_path, given=Inputs(
            data={"cifar10": cifar10}, subsets=inputs(data_root).subsets)))
    with pytest.raises(DataError, match="no --data for dataset 'cifar10'"):
        experiment.train(job(params, "baseline-cifar10-full", tmp_path, given=Inputs()))
    assert not (tmp_path / "run").exists() and not (tmp_path / "ckpt-run").exists()
    m = experiment.train(job(params, "baseline-cifar10-full", tmp_path, given=Inputs.from_paths(data=[cifar10])))
    assert m["extra"]["subset_size"] == m["extra"]["train_set_size"] == N_TRAIN


def test_real_data_is_refused_by_a_synthetic_profile(raw_params, data_root, tmp_path):
    meta_file = data_root / "prepared" / "cifar10" / "meta.json"
    meta_file.write_text(json.dumps({**json.loads(meta_file.read_text()), "synthetic": False}))
    params = make_params(raw_params, data_root)
    assert params.synthetic
    with pytest.raises(DataError, match="holds real data but the profile wants synthetic data"):
        train(params, "edba-cifar10-p1", tmp_path)
    assert not (tmp_path / "run").exists()


# ---- end to end --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["baseline-cifar10-n100", "edba-cifar10-n100", "edba-cifar100-p10"])
def test_variant_trains_end_to_end(raw_params, data_root, tmp_path, variant):
    params = make_params(raw_params, data_root)
    cfg = params.settings("edba", variant)
    m = train(params, variant, tmp_path)
    method, dataset, subset = variant.split("-")
    assert (m["method"], m["dataset"], m["subset"], m["metric"]) == (method, dataset, subset, "test_acc")
    assert 0 <= m["final"] <= 1 and m["best"] >= m["final"] and m["epochs"] == 2 and not m["diverged"]
    assert 0 < m["distinct_samples"] <= m["extra"]["subset_size"] == SUBSETS[subset]
    assert m["extra"]["samples_per_epoch"] == 60 and m["train_flops"] > 0
    rows = history(tmp_path, variant)
    assert len(rows) == 2 and all(r["test_acc"] for r in rows)
    if method == "baseline":
        assert {r["batch_size"] for r in rows} == {str(cfg.train.batch_size)}
        assert not any(k.startswith("edba_") for k in rows[0]) and "forward" not in m["extra"]
        assert m["train_flops"] == 3 * m["extra"]["forward_flops"] * int(rows[-1]["samples"])
    else:
        for column in ("edba_batch_mean", "edba_kept_fraction", "edba_margin", "edba_model_metric", "edba_grad_metric"):
            assert column in rows[0]
        assert all(0 < float(r["edba_kept_fraction"]) <= 1 and float(r["edba_grad_metric"]) > 0 for r in rows)
        assert m["extra"]["forward"] == cfg.edba.forward


def test_oversize_batch_reaches_the_loop_and_a_batch_above_the_subset_wraps(raw_params, data_root, tmp_path,
                                                                           monkeypatch):
    params = make_params(raw_params, data_root, train={"batch_size": 25})  # the p1 subset has 10 images
    seen, take = {}, image.IndexStream.take
    fit = image.fit

    def watched_fit(run, model, optimizer, scheduler, data, policy, loop, gens, hook=None):
        seen["mode"] = loop.oversize_batch
        return fit(run, model, optimizer, scheduler, data, policy, loop, gens, hook)

    def recorded(self, k):
        idx = take(self, k)
        seen.setdefault("batches", []).append(idx)
        return idx

    monkeypatch.setattr(image, "fit", watched_fit)
    monkeypatch.setattr(image.IndexStream, "take", recorded)
    train(params, "baseline-cifar10-p1", tmp_path)
    assert seen["mode"] == "wrap"
    first = torch.bincount(seen["batches"][0], minlength=N_TRAIN)
    assert len(seen["batches"][0]) == 25 and set(first[first > 0].tolist()) <= {2, 3}  # 2.5 passes of 10 images
    raw = copy.deepcopy(raw_params)
    del raw["edba"]["train"]["oversize_batch"]
    with pytest.raises(config.ConfigError, match="oversize_batch"):  # params.yaml must state it
        config.validate(raw, "paper")


def test_batch_size_stays_within_bounds(raw_params, data_root, tmp_path):
    params = make_params(raw_params, data_root, train={"samples_per_epoch": 400, "eval_every": 2},
                         edba={"window": 1, "factor": 2.0, "margin_tolerance": 0.0, "min_batch": 10,
                               "max_batch": 150, "batch_rule": "margin"})
    train(params, "edba-cifar10-p10", tmp_path)
    rows = history(tmp_path, "edba-cifar10-p10")
    lows, highs = [float(r["edba_batch_min"]) for r in rows], [float(r["edba_batch_max"]) for r in rows]
    assert min(lows) >= 10 and max(highs) <= 150
    assert all(10 <= int(r["batch_size"]) <= 150 for r in rows)
    assert set(lows + highs) != {100.0}  # the batch did adapt, so the bounds were exercised


# ---- leak guards -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["not_in_subset", "negative", "past_the_end"])
def test_leak_guard_fires_on_a_planted_index(raw_params, data_root, tmp_path, monkeypatch, kind):
    params = make_params(raw_params, data_root)
    subset = set(np.load(data_root / "subsets/cifar10/seed0/p1.npy").tolist())
    outside = {"not_in_subset": min(set(range(N_TRAIN)) - subset),
               "negative": max(subset) - N_TRAIN,  # would wrap to a subset image if not checked
               "past_the_end": N_TRAIN}[kind]
    take = image.IndexStream.take

    def planted(self, k):  # the stream's indices with one training image from outside the subset
        idx = take(self, k).clone()
        idx[0] = outside
        return idx

    monkeypatch.setattr(image.IndexStream, "take", planted)
    for variant in ("edba-cifar10-p1", "baseline-cifar10-p1"):
        with pytest.raises(image.LeakError, match=rf"\[{outside}\]"):
            train(params, variant, tmp_path, name=f"{variant}-{kind}")


@pytest.mark.parametrize("variant", ["baseline-cifar10-p10", "edba-cifar10-p10"])
def test_training_reads_the_subset_and_evaluation_only_the_test_split(raw_params, data_root, tmp_path, monkeypatch,
                                                                      variant):
    params = make_params(raw_params, data_root, train={"augment": False})  # unaugmented: inputs match image rows
    subset = np.load(data_root / "subsets/cifar10/seed0/p10.npy")
    with np.load(data_root / "prepared/cifar10/train.npz") as f:
        not_in_subset = np.delete(f["x"], subset, axis=0)
    drawn, inputs = [], []
    rows = image.ImageData.rows
    monkeypatch.setattr(image.ImageData, "rows", lambda self, g: (drawn.append(g.clone()), rows(self, g))[1])
    fit = image.fit

    def watched_fit(run, model, optimizer, scheduler, data, *rest):
        assert data.global_index.tolist() == subset.tolist()  # the run's training rows are its subset's
        model.register_forward_pre_hook(lambda mod, args: inputs.append((mod.training, args[0].detach().clone())))
        watched_fit.data = data
        return fit(run, model, optimizer, scheduler, data, *rest)

    monkeypatch.setattr(image, "fit", watched_fit)
    m = train(params, variant, tmp_path)
    data = watched_fit.data
    assert set(torch.cat(drawn).tolist()) <= set(subset.tolist())  # every index a step drew
    assert m["distinct_samples"] <= len(subset)

    def matches(batch: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """bool [len(batch)]: row i equals some row of images (both normalised)."""
        return (batch[:, None] == images[None]).flatten(2).all(2).any(1)

    test = data.normalize(data.test_x)
    subset_images = data.normalize(data.x)
    other_train = data.normalize(torch.from_numpy(not_in_subset).permute(0, 3, 1, 2))
    evaluated = [x for training, x in inputs if not training]
    trained = [x for training, x in inputs if training]
    assert evaluated and trained
    assert sum(len(x) for x in evaluated) == N_TEST * m["epochs"]  # every test image once per evaluation
    assert all(matches(x, test).all() and not matches(x, subset_images).any() for x in evaluated)
    assert all(matches(x, subset_images).all() and not matches(x, test).any() and not matches(x, other_train).any()
               for x in trained)


# ---- the baseline is untouched by EDBA; same seed, same run ---------------------------------------------------
def test_baseline_never_constructs_edba(raw_params, data_root, tmp_path, monkeypatch):
    params = make_params(raw_params, data_root)
    reference = train(params, "baseline-cifar10-p10", tmp_path, name="plain")

    def refuse(*args, **kwargs):
        raise AssertionError("EDBA constructed")

    monkeypatch.setattr(edba_method.EDBA, "__init__", refuse)
    monkeypatch.setattr(edba_method.EDBASampler, "__init__", refuse)
    again = train(params, "baseline-cifar10-p10", tmp_path, name="patched")
    assert without_timing(history(tmp_path, "baseline-cifar10-p10", name="patched")) == \
        without_timing(history(tmp_path, "baseline-cifar10-p10", name="plain"))
    assert again["final"] == reference["final"] and again["distinct_samples"] == reference["distinct_samples"]
    with pytest.raises(AssertionError, match="EDBA constructed"):  # the patch does bite where EDBA is used
        train(params, "edba-cifar10-p10", tmp_path, name="patched")


def test_killed_edba_run_resumes_identically(raw_params, data_root, tmp_path, monkeypatch):
    params = make_params(raw_params, data_root, train={"epochs": 3}, edba={"window": 1})
    train(params, "edba-cifar10-n100", tmp_path, seed=1, name="whole")
    end_epoch = engine.Run.end_epoch

    class Killed(Exception):
        pass

    def killed_after_first(self, row, objects, done=False):
        end_epoch(self, row, objects, done)
        raise Killed

    monkeypatch.setattr(engine.Run, "end_epoch", killed_after_first)
    with pytest.raises(Killed):
        train(params, "edba-cifar10-n100", tmp_path, seed=1, name="killed")
    monkeypatch.setattr(engine.Run, "end_epoch", end_epoch)
    train(params, "edba-cifar10-n100", tmp_path, seed=1, name="killed")
    whole, resumed = (history(tmp_path, "edba-cifar10-n100", 1, n) for n in ("whole", "killed"))
    assert len(whole) == 3 and without_timing(resumed) == without_timing(whole)
