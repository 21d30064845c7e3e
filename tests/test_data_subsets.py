"""Training subsets: class-balanced, deterministic per (seed, dataset), different across seeds, nested by size."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from pipeline import config
from pipeline.data import stages, subsets
from pipeline.data.fetch import DataError

LABELS = np.random.default_rng(0).permutation(np.repeat(np.arange(10), 50))  # 500 samples, 50 per class
SPEC = {"full": 1.0, "p10": 0.1, "p1": 0.02, "n100": 100}  # 500, 50, 10, 100 samples


def draw(seed, spec=SPEC, labels=LABELS, dataset="toy"):
    return subsets.draw_subsets(labels, 10, spec, seed, dataset)[0]


def test_subsets_are_sorted_unique_and_class_balanced():
    for name, idx in draw(0).items():
        assert idx.dtype == np.int64 and (np.diff(idx) > 0).all() and idx.min() >= 0 and idx.max() < len(LABELS)
        counts = np.bincount(LABELS[idx], minlength=10)
        assert (counts == counts[0]).all(), name
    assert {n: len(i) for n, i in draw(0).items()} == {"p1": 10, "p10": 50, "n100": 100, "full": 500}


def test_same_seed_same_subsets_other_seed_other_subsets():
    a, b, c = draw(3), draw(3), draw(4)
    for name in SPEC:
        np.testing.assert_array_equal(a[name], b[name])
    assert all(not np.array_equal(a[n], c[n]) for n in ("p1", "p10", "n100"))
    other = subsets.draw_subsets(LABELS, 10, SPEC, 3, "other-dataset")[0]
    assert not np.array_equal(a["p10"], other["p10"])  # the stream is per (seed, dataset)


def test_subsets_are_nested_by_size():
    drawn = draw(1)
    sizes = {n: len(i) for n, i in drawn.items()}
    order = subsets.nesting_order(sizes)
    assert order == ["p1", "p10", "n100", "full"]
    for small, large in zip(order, order[1:]):
        assert np.isin(drawn[small], drawn[large]).all(), (small, large)


def test_remainders_keep_balance_within_one_and_nesting():
    spec = {f"k{k}": k for k in range(10, 500, 7)}
    drawn, counts = subsets.draw_subsets(LABELS, 10, spec, 2, "toy")
    names = subsets.nesting_order({n: len(i) for n, i in drawn.items()})
    for name in names:
        per_class = np.bincount(LABELS[drawn[name]], minlength=10)
        k = spec[name]
        assert per_class.sum() == k and per_class.max() - per_class.min() <= (1 if k % 10 else 0)
        assert per_class.tolist() == counts[name]
    for small, large in zip(names, names[1:]):
        assert np.isin(drawn[small], drawn[large]).all()


@pytest.mark.parametrize("spec,message", [
    ({"big": 501}, "toy: subset big wants 501 samples but the training set has 500"),
    ({"tiny": 0.01}, "toy: subset tiny has 5 samples, fewer than its 10 classes, so it cannot be class-balanced"),
])
def test_impossible_subsets_are_errors(spec, message):
    with pytest.raises(DataError) as info:
        draw(0, spec)
    assert str(info.value) == message


def test_unbalanced_training_set():
    labels = np.concatenate([np.zeros(3, dtype=np.int64), np.ones(40, dtype=np.int64)])
    drawn = subsets.draw_subsets(labels, 2, {"full": 1.0, "six": 6}, 0, "lopsided")[0]
    assert len(drawn["full"]) == 43 and np.bincount(labels[drawn["six"]]).tolist() == [3, 3]
    with pytest.raises(DataError, match="^lopsided: subset eight needs 4 samples of class 0 but it has 3"):
        subsets.draw_subsets(labels, 2, {"eight": 8}, 0, "lopsided")


def smoke(raw, tmp_path, per_class):
    raw["data"]["root"] = str(tmp_path / "data")
    raw["seeds"] = [0, 1, 2]
    raw["data"]["synthetic"]["images"].update(train_per_class=per_class, test_per_class=2)
    return config.validate(raw, "smoke")


def test_write_subsets_files_and_summary(raw_params, tmp_path):
    p = smoke(raw_params, tmp_path, per_class=100)  # 1,000 training images: 1% = 10 samples < 100 samples
    prepared, out = tmp_path / "prepared/cifar10", tmp_path / "subsets/cifar10"
    stages.prepare_dataset(p, "cifar10", prepared)
    stages.write_subsets(p, "cifar10", prepared, out)
    summary = json.loads((out / "subsets.json").read_text())
    assert summary["sizes"] == {"full": 1000, "p10": 100, "p1": 10, "n100": 100}
    assert summary["nesting"] == ["p1", "n100", "p10", "full"] and summary["seeds"] == [0, 1, 2]
    labels = np.load(prepared / "train.npz")["y"]
    for seed in (0, 1, 2):
        files = {name: np.load(out / f"seed{seed}" / f"{name}.npy") for name in summary["nesting"]}
        expected = subsets.draw_subsets(labels, 10, p.data.datasets["cifar10"].subsets, seed, "cifar10")[0]
        for name, idx in files.items():
            np.testing.assert_array_equal(idx, expected[name])
            assert summary["per_class_counts"][f"seed{seed}"][name] == np.bincount(labels[idx], minlength=10).tolist()
        for small, large in zip(summary["nesting"], summary["nesting"][1:]):
            assert np.isin(files[small], files[large]).all()
        np.testing.assert_array_equal(files["n100"], files["p10"])  # equal sizes: the same samples
    assert not np.array_equal(np.load(out / "seed0/p1.npy"), np.load(out / "seed1/p1.npy"))


def test_write_subsets_refuses_an_unbalanceable_subset_before_writing(raw_params, tmp_path):
    # synthetic data: `check` already knows the training set's size and refuses the params
    with pytest.raises(config.ConfigError, match="data.datasets.cifar10.subsets: cifar10: subset p1 has 5 samples, "
                                                 "fewer than its 10 classes"):
        smoke(copy.deepcopy(raw_params), tmp_path, per_class=50)  # 500 training images: 1% = 5 samples for 10 classes
    # real data: only the prepared set tells its size; the subsets stage refuses before writing anything
    prepared, out = tmp_path / "prepared/cifar10", tmp_path / "subsets/cifar10"
    small = copy.deepcopy(raw_params)
    for name in ("cifar10", "cifar100"):
        small["data"]["datasets"][name]["subsets"].pop("p1")
    for experiment in ("edba", "optimizers"):
        small.pop(experiment)
    stages.prepare_dataset(smoke(small, tmp_path, per_class=50), "cifar10", prepared)  # 500 images
    p = smoke(raw_params, tmp_path, per_class=100)  # params for 1,000 images, but the prepared set has 500
    with pytest.raises(DataError, match="^cifar10: subset p1 has 5 samples, fewer than its 10 classes"):
        stages.write_subsets(p, "cifar10", prepared, out)
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_text_datasets_have_no_subsets(raw_params, tmp_path):
    p = smoke(raw_params, tmp_path, per_class=100)
    with pytest.raises(DataError, match="^ptb: a ptb dataset has no training subsets$"):
        stages.write_subsets(p, "ptb", tmp_path, tmp_path / "out")
