"""prepare_dataset on tiny generated inputs: a PTB-format corpus, official-format CIFAR-10/100 tarballs, an image
folder (round trip), and the synthetic data of the smoke profile (shapes, dtypes, determinism, learnability)."""
from __future__ import annotations

import hashlib
import json
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline import config
from pipeline.data import cifar, ptb, stages
from pipeline.data.fetch import DataError


@pytest.fixture(autouse=True)
def no_env_mirror(monkeypatch):
    monkeypatch.delenv("PIPELINE_DATA_MIRROR", raising=False)


def real_params(raw, tmp_path, mirror: Path, files: dict[str, bytes | Path], **datasets):
    """quick-profile Params reading `files` (name -> content) from `mirror`, with their true checksums."""
    mirror.mkdir(exist_ok=True)
    for name, content in files.items():
        data = content.read_bytes() if isinstance(content, Path) else content
        (mirror / name).write_bytes(data)
        alg = "md5" if name.endswith(".tar.gz") else "sha256"
        raw["data"]["sources"][name]["hash"] = f"{alg}:{hashlib.new(alg, data).hexdigest()}"
    raw["data"]["root"] = str(tmp_path / "data")
    raw["data"]["mirror"] = str(mirror)
    raw["data"]["datasets"].update(datasets)
    return config.validate(raw, "quick")


def leftovers(out_dir: Path) -> list[str]:
    """Temporary directories beside an output directory (there must be none after a stage)."""
    return sorted(p.name for p in out_dir.parent.iterdir() if p.name.startswith("."))


# ---- PTB ---------------------------------------------------------------------------------------------------------
CORPUS = {
    "ptb.train.txt": b" the cat sat \n a dog sat on the mat \n the end \n",
    "ptb.valid.txt": b" the dog sat \n a cat \n",
    "ptb.test.txt": b" on the mat \n",
}


def test_ptb_prepare_tiny_corpus(raw_params, tmp_path):
    p = real_params(raw_params, tmp_path, tmp_path / "mirror", CORPUS)
    out = tmp_path / "data/prepared/ptb"
    stages.prepare_dataset(p, "ptb", out)
    vocab = ptb.load_vocab(out)
    # train types in order of first appearance, <eos> where it first appears (end of line 1)
    assert vocab == ["the", "cat", "sat", "<eos>", "a", "dog", "on", "mat", "end"]
    ids = {split: np.load(out / f"{split}.npy") for split in ptb.SPLITS}
    assert all(a.dtype == np.int64 for a in ids.values())
    assert [vocab[i] for i in ids["train"]] == "the cat sat <eos> a dog sat on the mat <eos> the end <eos>".split()
    assert [vocab[i] for i in ids["test"]] == ["on", "the", "mat", "<eos>"]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["tokens"] == {"train": 14, "valid": 7, "test": 4}
    assert meta["lines"] == {"train": 3, "valid": 2, "test": 1}
    assert meta["vocab_size"] == 9 and meta["synthetic"] is False
    assert meta["source"]["files"]["ptb.valid.txt"]["hash"] == raw_params["data"]["sources"]["ptb.valid.txt"]["hash"]
    assert int((ids["valid"] == vocab.index("<eos>")).sum()) == 2  # one <eos> per line
    assert leftovers(out) == []


def test_ptb_word_outside_train_vocabulary_is_an_error(raw_params, tmp_path):
    corpus = {**CORPUS, "ptb.test.txt": b" the zebra sat \n"}
    p = real_params(raw_params, tmp_path, tmp_path / "mirror", corpus)
    out = tmp_path / "data/prepared/ptb"
    with pytest.raises(DataError, match=r"^ptb.test.txt: word 'zebra' is not in the training vocabulary$"):
        stages.prepare_dataset(p, "ptb", out)
    assert not out.exists() and leftovers(out) == []  # a failed stage leaves nothing behind


# ---- CIFAR -------------------------------------------------------------------------------------------------------
def official_tarball(path: Path, kind: str, rng: np.random.Generator) -> dict:
    """A tiny archive in the official python-version layout; returns the arrays it holds (channels last)."""
    n_classes = 10 if kind == "cifar10" else 100
    folder, train_files, test_file, meta_file, label_key, names_key = cifar.LAYOUT[kind]
    names = [f"name{c}".encode() for c in range(n_classes)]
    batches, expected = {}, {"train": ([], []), "test": ([], [])}
    for file in [*train_files, test_file]:
        n = 3 if file == test_file else 2 + len(batches)  # unequal batch sizes catch concatenation mistakes
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = rng.integers(0, n_classes, size=n).tolist()
        batch = {b"batch_label": file.encode(), b"data": data, label_key: labels, b"filenames": [b"x.png"] * n}
        if kind == "cifar100":
            batch[b"coarse_labels"] = [c // 5 for c in labels]
        batches[file] = batch
        split = "test" if file == test_file else "train"
        expected[split][0].append(data.reshape(n, 3, 32, 32).transpose(0, 2, 3, 1))
        expected[split][1].append(np.array(labels))
    batches[meta_file] = {names_key: names, b"num_cases_per_batch": 2}
    src = path.parent / f"src-{kind}" / folder
    src.mkdir(parents=True)
    for file, obj in batches.items():
        (src / file).write_bytes(pickle.dumps(obj, protocol=2))
    with tarfile.open(path, "w:gz") as tar:
        tar.add(src, arcname=folder)
    return {split: (np.concatenate(x), np.concatenate(y)) for split, (x, y) in expected.items()}


@pytest.mark.parametrize("kind", ["cifar10", "cifar100"])
def test_cifar_prepare_from_official_tarball(raw_params, tmp_path, kind):
    archive_name = "cifar-10-python.tar.gz" if kind == "cifar10" else "cifar-100-python.tar.gz"
    archive = tmp_path / archive_name
    expected = official_tarball(archive, kind, np.random.default_rng(1))
    p = real_params(raw_params, tmp_path, tmp_path / "mirror", {archive_name: archive})
    out = tmp_path / "data/prepared" / kind
    stages.prepare_dataset(p, kind, out)
    for split in ("train", "test"):
        x, y = cifar.load_split(out, split)
        assert x.dtype == np.uint8 and x.shape[1:] == (32, 32, 3) and y.dtype == np.int64
        np.testing.assert_array_equal(x, expected[split][0])
        np.testing.assert_array_equal(y, expected[split][1])
    meta = json.loads((out / "meta.json").read_text())
    assert meta["classes"][:2] == ["name0", "name1"] and len(meta["classes"]) == (10 if kind == "cifar10" else 100)
    assert meta["counts"] == {"train": len(expected["train"][1]), "test": 3} and meta["synthetic"] is False
    assert leftovers(out) == []  # the unpacked pickles are gone too


def test_cifar_pickles_are_not_loaded_when_the_checksum_fails(raw_params, tmp_path, monkeypatch):
    archive = tmp_path / "cifar-10-python.tar.gz"
    official_tarball(archive, "cifar10", np.random.default_rng(2))
    p = real_params(raw_params, tmp_path, tmp_path / "mirror", {"cifar-10-python.tar.gz": archive})
    (tmp_path / "mirror/cifar-10-python.tar.gz").write_bytes(archive.read_bytes() + b"\0")  # tampered copy
    loads = []
    monkeypatch.setattr(cifar.pickle, "load", lambda *a, **k: loads.append(a))
    with pytest.raises(DataError, match="checksum mismatch"):
        stages.prepare_dataset(p, "cifar10", tmp_path / "data/prepared/cifar10")
    assert loads == [] and not (tmp_path / "data/prepared/cifar10").exists()


# ---- image folder ------------------------------------------------------------------------------------------------
def write_folder(root: Path, arrays: dict, classes: list[str]) -> None:
    for split, (x, y) in arrays.items():
        for i, (img, label) in enumerate(zip(x, y)):
            d = root / split / classes[label]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(d / f"{i:04d}.png")


def test_image_folder_round_trip(raw_params, tmp_path):
    rng = np.random.default_rng(3)
    classes = ["bird", "ant", "cat"]  # not sorted: the import sorts them
    arrays = {}
    for split, n in (("train", 12), ("test", 6)):
        y = np.arange(n) % 3
        arrays[split] = (rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8), y)
    write_folder(tmp_path / "folder", arrays, classes)
    (tmp_path / "folder/train/ant/notes.txt").write_text("ignored")
    folder_ds = {"kind": "imagefolder", "folder": str(tmp_path / "folder"), "subsets": {"half": 0.5}}
    p = real_params(raw_params, tmp_path, tmp_path / "mirror", {}, mine=folder_ds)
    out = tmp_path / "data/prepared/mine"
    stages.prepare_dataset(p, "mine", out)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["classes"] == ["ant", "bird", "cat"] and len(meta["source"]["sha256"]) == 64
    for split, (x, y) in arrays.items():
        got_x, got_y = cifar.load_split(out, split)
        # expected order: classes by name, files by name within a class
        new_label = np.array([meta["classes"].index(classes[c]) for c in y])
        order = np.lexsort((np.arange(len(y)), new_label))
        np.testing.assert_array_equal(got_x, x[order])
        np.testing.assert_array_equal(got_y, new_label[order])


def test_image_folder_rules(raw_params, tmp_path):
    folder = tmp_path / "folder"
    (folder / "train/a").mkdir(parents=True)
    (folder / "test/a").mkdir(parents=True)
    Image.fromarray(np.full((32, 32), 7, dtype=np.uint8)).save(folder / "train/a/grey.png")  # greyscale
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(folder / "test/a/0.png")
    p = real_params(raw_params, tmp_path, tmp_path / "mirror", {}, mine={"kind": "imagefolder", "folder": str(folder)})
    out = tmp_path / "data/prepared/mine"
    stages.prepare_dataset(p, "mine", out)
    x, _ = cifar.load_split(out, "train")
    assert x.shape == (1, 32, 32, 3) and (x == 7).all()  # grey copied to all three channels
    Image.fromarray(np.zeros((16, 32, 3), dtype=np.uint8)).save(folder / "train/a/small.png")
    with pytest.raises(DataError, match=r"small.png: image is 32x16, expected 32x32"):
        stages.prepare_dataset(p, "mine", out)


# ---- synthetic (smoke profile) -----------------------------------------------------------------------------------
def smoke_params(raw, tmp_path):
    raw["data"]["root"] = str(tmp_path / "data")
    raw["data"]["synthetic"]["text"].update(train_tokens=8000, valid_tokens=1001, test_tokens=999)
    raw["data"]["synthetic"]["images"].update(train_per_class=20, test_per_class=10, cifar100_classes=7)
    for name in ("cifar10", "cifar100"):  # 200 and 140 images: a 1% subset could not hold every class
        raw["data"]["datasets"][name]["subsets"].pop("p1")
    for experiment in ("block_size", "edba", "growth", "optimizers"):  # data preparation reads none of them
        raw.pop(experiment)
    return config.validate(raw, "smoke")


def test_synthetic_text(raw_params, tmp_path):
    p = smoke_params(raw_params, tmp_path)
    out = tmp_path / "a/ptb"
    stages.prepare_dataset(p, "ptb", out)
    vocab = ptb.load_vocab(out)
    cfg = p.data.synthetic.text
    assert len(vocab) == cfg.vocab_size and "<eos>" in vocab
    ids = {s: np.load(out / f"{s}.npy") for s in ptb.SPLITS}
    assert {s: a.size for s, a in ids.items()} == {"train": 8000, "valid": 1001, "test": 999}
    assert all(a.dtype == np.int64 and a[-1] == vocab.index("<eos>") for a in ids.values())
    eos = vocab.index("<eos>")
    line_lengths = np.diff(np.flatnonzero(ids["train"] == eos)) - 1
    assert line_lengths.min() >= 1 and abs(line_lengths.mean() - cfg.sentence_length) < 1.5
    meta = json.loads((out / "meta.json").read_text())
    assert meta["synthetic"] is True and meta["source"]["generator"]["data_seed"] == 0
    # learnable: a bigram model fitted on train predicts valid far better than uniform guessing
    counts = np.full((len(vocab), len(vocab)), 0.01)
    np.add.at(counts, (ids["train"][:-1], ids["train"][1:]), 1)
    probs = counts / counts.sum(axis=1, keepdims=True)
    ppl = np.exp(-np.log(probs[ids["valid"][:-1], ids["valid"][1:]]).mean())
    assert ppl < 3 * cfg.successors < cfg.vocab_size / 10
    # deterministic: the same bytes again
    stages.prepare_dataset(p, "ptb", tmp_path / "b/ptb")
    for s in ptb.SPLITS:
        np.testing.assert_array_equal(np.load(tmp_path / f"b/ptb/{s}.npy"), ids[s])


@pytest.mark.parametrize("name,n_classes", [("cifar10", 10), ("cifar100", 7)])
def test_synthetic_images(raw_params, tmp_path, name, n_classes):
    p = smoke_params(raw_params, tmp_path)
    out = tmp_path / "a" / name
    stages.prepare_dataset(p, name, out)
    (x, y), (xt, yt) = cifar.load_split(out, "train"), cifar.load_split(out, "test")
    assert x.dtype == np.uint8 and x.shape == (20 * n_classes, 32, 32, 3) and xt.shape == (10 * n_classes, 32, 32, 3)
    assert y.dtype == np.int64 and (np.bincount(y, minlength=n_classes) == 20).all()
    assert (np.bincount(yt, minlength=n_classes) == 10).all() and 40 < x.std() < 80
    meta = json.loads((out / "meta.json").read_text())
    assert len(meta["classes"]) == n_classes and meta["synthetic"] is True
    # learnable: nearest class mean (from train) classifies test far above chance
    means = np.stack([x[y == c].mean(axis=0) for c in range(n_classes)]).reshape(n_classes, -1)
    dist = ((xt.reshape(len(xt), 1, -1).astype(np.float64) - means[None]) ** 2).sum(axis=-1)
    assert (dist.argmin(axis=1) == yt).mean() > 0.9
    stages.prepare_dataset(p, name, tmp_path / "b" / name)
    np.testing.assert_array_equal(cifar.load_split(tmp_path / "b" / name, "train")[0], x)
    assert leftovers(out) == []


def test_unknown_dataset(raw_params, tmp_path):
    with pytest.raises(DataError, match="^nope: unknown dataset; known: ptb, cifar10, cifar100$"):
        stages.prepare_dataset(smoke_params(raw_params, tmp_path), "nope", tmp_path / "x")
