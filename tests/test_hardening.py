"""Bad files and a filesystem that refuses: one line naming the culprit, exit code 2, and nothing half-written."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from pipeline import config
from pipeline.data import stages
from pipeline.data.fetch import DataError


def cli(args, cwd, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **env})


def one_line_error(out: subprocess.CompletedProcess, *expected: str) -> str:
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def smoke_dir(tmp_path, raw_params):
    """A working directory with the repository's params (data root inside it) and the synthetic PTB prepared."""
    raw_params["data"]["root"] = str(tmp_path / "data")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw_params, sort_keys=False))
    stages.prepare_dataset(config.load(tmp_path / "params.yaml"), "ptb", tmp_path / "data" / "prepared" / "ptb")
    return tmp_path


def test_a_decompression_bomb_is_refused_from_its_header(tmp_path, raw_params):
    for split in ("train", "test"):
        folder = tmp_path / "images" / split / "cat"
        folder.mkdir(parents=True)
        Image.new("RGB", (32, 32)).save(folder / "ok.png")
    buf = io.BytesIO()
    Image.new("RGB", (16000, 16000)).save(buf, "PNG")  # 256 Mpx: PIL refuses it before decoding
    (tmp_path / "images" / "train" / "cat" / "bomb.png").write_bytes(buf.getvalue())
    raw_params["data"]["datasets"]["folder"] = {"kind": "imagefolder", "folder": str(tmp_path / "images")}
    params = config.validate(raw_params, "quick")
    with pytest.raises(DataError, match="bomb.png: image is far larger than 32x32"):
        stages.prepare_dataset(params, "folder", tmp_path / "prepared")
    assert not (tmp_path / "prepared").exists() and not list(tmp_path.glob(".prepared.*"))


def test_a_prepare_killed_midway_leaves_nothing_behind_the_next_one(tmp_path, raw_params):
    out = tmp_path / "prepared" / "ptb"
    out.parent.mkdir()
    dead = out.parent / ".ptb.tmp-999999999"  # a pid no process has
    (dead / "junk").mkdir(parents=True)
    (out.parent / ".ptb.old-999999999").mkdir()
    mine = out.parent / f".ptb.tmp-{os.getppid()}"  # a live process's staging folder is left alone
    mine.mkdir()
    stages.prepare_dataset(config.validate(raw_params), "ptb", out)
    assert (out / "meta.json").is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(["ptb", mine.name])


def test_training_into_a_folder_it_cannot_write_stops_before_training(smoke_dir):
    blocker = smoke_dir / "results"
    blocker.write_text("a file where the results folder should be")
    out = cli(["train", "block_size", "fixed16", "--seeds", "0", "--data", "data/prepared/ptb",
               "--out", "results/runs/block_size/fixed16", "--checkpoints", "ckpt"], smoke_dir)
    one_line_error(out, "results/runs/block_size/fixed16/seed0: cannot write the run's files there")
    assert not (smoke_dir / "ckpt").exists()  # no epoch was trained, no checkpoint written


def test_prepare_and_collect_into_a_folder_they_cannot_write(smoke_dir):
    (smoke_dir / "blocked").write_text("a file")
    one_line_error(cli(["prepare", "ptb", "--out", "blocked/ptb"], smoke_dir), "blocked")
    (smoke_dir / "runs").mkdir()
    one_line_error(cli(["collect", "--runs", "runs", "--out", "blocked/tables"], smoke_dir), "blocked")


def test_track_refuses_before_writing_mlflow_when_its_receipt_cannot_be_written(smoke_dir, tmp_path):
    run = smoke_dir / "runs" / "v" / "seed0"
    run.mkdir(parents=True)
    for name, text in (("metrics.json", json.dumps({"profile": "smoke"})), ("history.csv", "epoch\n1\n"),
                       ("config.json", "{}")):
        (run / name).write_text(text)
    (smoke_dir / "blocked").write_text("a file")
    uri = f"sqlite:///{smoke_dir / 'mlflow.db'}"
    out = cli(["track", "block_size", "--runs", "runs", "--out", "blocked/receipt.json"], smoke_dir,
              MLFLOW_TRACKING_URI=uri)
    one_line_error(out, "blocked")
    assert not (smoke_dir / "mlflow.db").exists()  # MLflow was never written to


def test_a_corrupt_mlflow_store_is_named_in_one_line(smoke_dir):
    run = smoke_dir / "runs" / "v" / "seed0"
    run.mkdir(parents=True)
    for name, text in (("metrics.json", json.dumps({"profile": "smoke"})), ("history.csv", "epoch\n1\n"),
                       ("config.json", "{}")):
        (run / name).write_text(text)
    db = smoke_dir / "mlflow.db"
    db.write_text("this is not a database")
    out = cli(["track", "block_size", "--runs", "runs", "--out", "receipt.json"], smoke_dir,
              MLFLOW_TRACKING_URI=f"sqlite:///{db}")
    one_line_error(out, f"{db}: the MLflow store cannot be used")
    assert not (smoke_dir / "receipt.json").exists()
    assert Path(db).read_text() == "this is not a database"
