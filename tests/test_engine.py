"""The training engine on tiny synthetic images: learning, resume bit-identity, divergence, leak guard, run files."""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.seeding import generator
from pipeline.train import image
from pipeline.train.engine import RunSpec
from pipeline.train.runner import (RunConflict, finish_run, input_digests, prepared_files, seed_generators,
                                   start_run)


class TinyNet(nn.Module):
    def __init__(self, classes: int = 4):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.head = nn.Linear(32, classes)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.features(x))


def write_images(root, n_per_class=40, classes=4, seed=0):
    """Class = which image quadrant is bright, plus noise: learnable in a few epochs."""
    g = np.random.default_rng(seed)
    def make(n):
        y = np.repeat(np.arange(classes), n)
        x = g.normal(90, 40, size=(len(y), 32, 32, 3))
        for i, c in enumerate(y):
            r, col = divmod(int(c), 2)
            x[i, r * 16:(r + 1) * 16, col * 16:(col + 1) * 16] += 100
        return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int64)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_per_class), ("test", 10)):
        x, y = make(n)
        np.savez(root / f"{split}.npz", x=x, y=y)
    (root / "meta.json").write_text(json.dumps({"classes": [str(c) for c in range(classes)], "synthetic": True}))
    return root


def spec(seed=0, **config) -> RunSpec:
    return RunSpec(experiment="unit", variant="tiny", seed=seed, profile="smoke", method="baseline",
                   dataset="toy", subset=None, metric="test_acc", mode="max",
                   target={"metric": "test_acc", "value": 0.5, "mode": "max"}, config=config)


def train_tiny(tmp_path, epochs=4, seed=0, lr=0.05, policy=None, name="run"):
    data = image.ImageData.load(write_images(tmp_path / "data"), None, torch.device("cpu"))
    run = start_run(spec(seed, epochs=epochs, lr=lr), tmp_path / name, tmp_path / "ckpt", torch.device("cpu"))
    model = TinyNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    loop = image.ImageLoop(epochs=epochs, samples_per_epoch=len(data.y), eval_every=1, eval_batch=500, augment=True,
                           oversize_batch="wrap", forward_flops=1000)
    image.fit(run, model, optimizer, None, data, policy or image.FixedBatch(32), loop, seed_generators(seed))
    return finish_run(run)


def test_image_loop_beats_chance_and_writes_run_files(tmp_path):
    metrics = train_tiny(tmp_path, epochs=4)
    assert metrics["final"] > 0.5  # chance is 0.25
    assert metrics["distinct_samples"] == 160 and not metrics["diverged"] and metrics["epochs"] == 4
    assert metrics["train_flops"] == 4 * 160 * 3 * 1000  # forward + 2x forward for backward, every sample
    rows = list(csv.DictReader(open(tmp_path / "run" / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert float(rows[-1]["elapsed_seconds"]) == pytest.approx(metrics["train_seconds"])
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["environment"]["torch"] == torch.__version__ and config["run"]["config"]["epochs"] == 4


def test_killed_run_resumes_bit_identical(tmp_path, killed_after):
    reference = train_tiny(tmp_path / "a", epochs=4)
    with killed_after(2):
        train_tiny(tmp_path / "b", epochs=4)
    resumed = train_tiny(tmp_path / "b", epochs=4)
    timing = {"train_seconds", "seconds_to_target", "started_at", "ended_at"}
    assert {k: v for k, v in resumed.items() if k not in timing} == {k: v for k, v in reference.items() if k not in timing}
    hist = lambda d: [{k: v for k, v in r.items() if k not in ("elapsed_seconds", "time")} for r in csv.DictReader(open(d / "run" / "history.csv"))]
    assert hist(tmp_path / "b") == hist(tmp_path / "a")


def test_nan_loss_marks_the_run_diverged(tmp_path):
    metrics = train_tiny(tmp_path, epochs=3, lr=float("nan"))
    assert metrics["diverged"] is True and metrics["final"] is None
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["diverged"] is True


def test_same_seed_same_numbers_different_seed_different(tmp_path):
    a = train_tiny(tmp_path / "a", epochs=2, seed=1)
    b = train_tiny(tmp_path / "b", epochs=2, seed=1)
    c = train_tiny(tmp_path / "c", epochs=2, seed=2)
    assert a["final"] == b["final"] and a["best"] == b["best"]
    hist = lambda d: [r["train_loss"] for r in csv.DictReader(open(d / "run" / "history.csv"))]
    assert hist(tmp_path / "a") == hist(tmp_path / "b") != hist(tmp_path / "c")


def test_finished_results_of_another_config_are_not_overwritten(tmp_path):
    train_tiny(tmp_path, epochs=1)
    with pytest.raises(RunConflict, match="holds a finished run of another config"):
        train_tiny(tmp_path, epochs=2)


def test_leak_guard_fires_on_an_out_of_subset_index(tmp_path):
    root = write_images(tmp_path / "data")
    subset = tmp_path / "subset.npy"
    np.save(subset, np.arange(0, 160, 2))  # even indices only
    data = image.ImageData.load(root, subset, torch.device("cpu"))
    assert data.rows(torch.tensor([0, 2, 158])).tolist() == [0, 1, 79]
    with pytest.raises(image.LeakError, match=r"\[3\]"):
        data.rows(torch.tensor([0, 3]))


def test_index_stream_covers_the_subset_each_pass_and_wraps(tmp_path):
    stream = image.IndexStream(torch.arange(10, 20), generator(0, "order"), "wrap")
    batch = stream.take(25)  # larger than the subset: 2.5 passes
    assert sorted(batch[:10].tolist()) == list(range(10, 20)) == sorted(batch[10:20].tolist())
    state = stream.state_dict()
    nxt = stream.take(7)
    stream.load_state_dict(state)
    assert torch.equal(stream.take(7), nxt)


def test_input_digests_name_every_data_file_and_the_code(tmp_path):
    """A run's identity holds the sha256 of each file it reads and the code digest it is given: changed data gives
    another config hash, so a checkpoint of the old data is never resumed."""
    root = write_images(tmp_path / "data")
    files = prepared_files(root)
    assert [f.name for f in files] == ["meta.json", "test.npz", "train.npz"]
    digests = input_digests(files, "code-digest")
    assert digests["code"] == "code-digest"
    assert digests["data"] == {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
    before = dataclasses.replace(spec(), inputs=digests)
    assert before.config_hash() != dataclasses.replace(spec(), inputs=input_digests(files, "other")).config_hash()
    (root / "meta.json").write_text(json.dumps({"classes": ["0", "1", "2", "3"], "synthetic": True, "v": 2}))
    after = dataclasses.replace(spec(), inputs=input_digests(files, "code-digest"))
    assert after.inputs["data"][str(root / "meta.json")] != digests["data"][str(root / "meta.json")]
    assert after.config_hash() != before.config_hash()


def test_augment_is_a_crop_of_the_padded_image_or_its_mirror():
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).reshape(2, 3, 32, 32)
    out = image.augment(x, generator(0, "augment"))
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(2):
        windows = [padded[i, :, dy:dy + 32, dx:dx + 32] for dy in range(9) for dx in range(9)]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(2)) for w in windows)


def test_each_job_claims_a_different_gpu(tmp_path, monkeypatch):
    """The GPU claim is a lock file per GPU index, held for the life of the process (no GPU needed to test it)."""
    from pipeline import device

    monkeypatch.setattr(device, "LOCK_DIR", tmp_path)
    monkeypatch.setattr(device, "_held", [])
    assert [device._claim_gpu(2), device._claim_gpu(2)] == [0, 1]
    with pytest.raises(RuntimeError, match="no free GPU slot among 2"):
        device._claim_gpu(2, wait_seconds=0)
    device._held.pop().release()  # the job on GPU 1 ends
    assert device._claim_gpu(2) == 1
