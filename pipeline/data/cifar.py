"""Official CIFAR-10 / CIFAR-100 python-version tarballs -> train.npz / test.npz (uint8 [N,32,32,3], int64 [N]).

    cifar-10-python.tar.gz:  cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}
    cifar-100-python.tar.gz: cifar-100-python/{train, test, meta}
        each batch is a pickle {b"data": uint8 [N, 3072], b"labels" | b"fine_labels": [N]}; a row of 3072 bytes is
        the 1024 red, then 1024 green, then 1024 blue values of a 32 x 32 image in row-major order.

CIFAR-100 uses the 100 fine labels (the EDBA and growing-networks papers train on them). The archive is unpacked
with `fetch.safe_extract` into a temporary folder, and the pickles are read from there. Pickles can run code when
loaded, so this module must only ever get an archive whose checksum already passed (`fetch.fetch` returns only
such paths); the stage calls it exactly that way.
"""
from __future__ import annotations

import pickle
import tempfile
from pathlib import Path

import numpy as np

from .fetch import DataError, safe_extract

# Layout of each official archive: (top folder, train batches, test batch, meta file, label key, names key).
LAYOUT = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", "batches.meta",
                b"labels", b"label_names"),
    "cifar100": ("cifar-100-python", ["train"], "test", "meta", b"fine_labels", b"fine_label_names"),
}
SIDE = 32  # pixels


def _unpickle(path: Path, archive: str) -> dict:
    if not path.is_file():
        raise DataError(f"{archive}: member {path.parent.name}/{path.name} is missing")
    with open(path, "rb") as f:
        return pickle.load(f, encoding="bytes")  # the official files were pickled by Python 2: keys are bytes


def _images(batch: dict, label_key: bytes, n_classes: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [N, 32, 32, 3] images (channels last) and int64 [N] labels of one batch, checked."""
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * SIDE * SIDE or data.shape[0] != labels.shape[0]:
        raise DataError(f"{where}: expected data [N, 3072] and N labels, got {data.shape} and {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise DataError(f"{where}: labels outside 0..{n_classes - 1}")
    # [N, 3072] -> [N, 3, 32, 32] (planes R, G, B) -> [N, 32, 32, 3]
    x = data.reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x), labels


def read_extracted(root: Path, kind: str, archive: str) -> dict:
    """Arrays and class names from an unpacked archive: {"train": (x, y), "test": (x, y), "classes": [...]}."""
    folder, train_files, test_file, meta_file, label_key, names_key = LAYOUT[kind]
    base = Path(root) / folder
    meta = _unpickle(base / meta_file, archive)
    classes = [name.decode("utf-8") for name in meta[names_key]]
    parts = [_images(_unpickle(base / f, archive), label_key, len(classes), f"{archive}:{f}") for f in train_files]
    train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    test = _images(_unpickle(base / test_file, archive), label_key, len(classes), f"{archive}:{test_file}")
    return {"train": train, "test": test, "classes": classes}


def write_image_dataset(arrays: dict, out_dir: Path) -> dict:
    """Write train.npz / test.npz (keys x, y) from {"train": (x, y), "test": (x, y)}; returns counts for meta."""
    counts = {}
    for split in ("train", "test"):
        x, y = arrays[split]
        if x.dtype != np.uint8 or x.shape[1:] != (SIDE, SIDE, 3) or y.dtype != np.int64 or len(x) != len(y):
            raise DataError(f"{split}: expected uint8 [N,32,32,3] and int64 [N], "
                            f"got {x.dtype} {x.shape} and {y.dtype} {y.shape}")
        np.savez(Path(out_dir) / f"{split}.npz", x=x, y=y)  # uncompressed: loading is a plain read
        counts[split] = int(y.shape[0])
    return {"counts": counts}


def prepare_cifar(archive: Path, kind: str, out_dir: Path) -> dict:
    """Prepare a checksum-verified official CIFAR archive into out_dir; returns classes and counts for meta.json."""
    if kind not in LAYOUT:
        raise DataError(f"{kind}: not a CIFAR kind ({', '.join(LAYOUT)})")
    archive = Path(archive)
    # Unpack next to out_dir (same disk), and delete the unpacked pickles as soon as the arrays are read.
    with tempfile.TemporaryDirectory(prefix=".extract-", dir=Path(out_dir).parent) as tmp:
        safe_extract(archive, Path(tmp))
        arrays = read_extracted(Path(tmp), kind, archive.name)
    return {"classes": arrays["classes"], **write_image_dataset(arrays, out_dir)}


def load_split(prepared_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(x uint8 [N,32,32,3], y int64 [N]) of a prepared image dataset."""
    with np.load(Path(prepared_dir) / f"{split}.npz") as f:
        return f["x"], f["y"]
