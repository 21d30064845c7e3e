"""A folder of images -> the prepared image format (train.npz / test.npz: uint8 [N,32,32,3], int64 [N]).

    <folder>/train/<class>/*.png|*.jpg|*.jpeg      (extensions case-insensitive; any other file is ignored)
    <folder>/test/<class>/*                        (every test class must also be a train class)

Classes are the train sub-folder names sorted by name (label = position). Samples are ordered class by class,
files sorted by name within a class. Image rule: every image must already be 32 x 32; nothing is resampled,
because resizing silently changes pixels and the models of this harness are built for CIFAR's 32 x 32. Colour
modes are converted losslessly where that is possible: RGB as is, greyscale (L) copied to all three channels,
palette (P) looked up; RGBA / LA lose their alpha channel (not composited onto any background). Other modes
(16-bit, float, CMYK, ...) are refused. Either refusal is a one-line error naming the file.

PNG round-trips exactly; JPEG is lossy, so a JPEG folder imports the decoded pixels, not the original ones.
meta.json gets a sha256 over every imported file (relative path + bytes), so a changed folder is visible.
"""
from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from .cifar import SIDE, write_image_dataset
from .fetch import DataError

EXTENSIONS = (".png", ".jpg", ".jpeg")
CONVERTIBLE = ("RGB", "L", "P", "RGBA", "LA")  # modes whose conversion to RGB loses no colour information


def class_names(folder: Path) -> list[str]:
    """Sorted names of the class folders under <folder>/train."""
    train = Path(folder) / "train"
    if not train.is_dir():
        raise DataError(f"{folder}: image folder has no train/ directory")
    classes = sorted(p.name for p in train.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{train}: no class folders")
    return classes


def image_files(class_dir: Path) -> list[Path]:
    """Image files of one class folder, sorted by name (hidden files and other extensions are skipped)."""
    return sorted(p for p in class_dir.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in EXTENSIONS)


def read_image(data: bytes, name: str) -> np.ndarray:
    """uint8 [32, 32, 3] pixels of one encoded image, following the module's image rule."""
    try:
        with warnings.catch_warnings():  # a large image warns (DecompressionBombWarning); its size is refused below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
        with img:
            if img.size != (SIDE, SIDE):
                raise DataError(f"{name}: image is {img.size[0]}x{img.size[1]}, expected {SIDE}x{SIDE} (not resampled)")
            if img.mode not in CONVERTIBLE:
                raise DataError(f"{name}: colour mode {img.mode} cannot be converted to RGB without loss")
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except Image.DecompressionBombError:  # a huge image: refused from its header, before any pixel is decoded
        raise DataError(f"{name}: image is far larger than {SIDE}x{SIDE} (a decompression bomb?); not read") from None
    except (OSError, SyntaxError) as err:  # Pillow's errors for unreadable/corrupt files
        raise DataError(f"{name}: not a readable image ({err})") from None


def read_split(folder: Path, split: str, classes: list[str], digest) -> tuple[np.ndarray, np.ndarray]:
    """(x uint8 [N,32,32,3], y int64 [N]) of one split; feeds every file's path and bytes into `digest`."""
    root = Path(folder) / split
    if not root.is_dir():
        raise DataError(f"{folder}: image folder has no {split}/ directory")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DataError(f"{root}: class folder {unknown[0]!r} is not a train class")
    images, labels = [], []
    for label, name in enumerate(classes):
        files = image_files(root / name) if (root / name).is_dir() else []
        if split == "train" and not files:
            raise DataError(f"{root / name}: no .png/.jpg images in a train class")
        for path in files:
            data = path.read_bytes()
            digest.update(f"{split}/{name}/{path.name}\n".encode())
            digest.update(data)
            images.append(read_image(data, str(path)))
            labels.append(label)
    if not images:
        raise DataError(f"{root}: no images")
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def import_folder(folder: Path, out_dir: Path) -> dict:
    """Import <folder>/train and <folder>/test into out_dir; returns classes, counts and the content sha256."""
    folder = Path(folder)
    classes = class_names(folder)
    digest = hashlib.sha256()
    arrays = {split: read_split(folder, split, classes, digest) for split in ("train", "test")}
    return {"classes": classes, **write_image_dataset(arrays, out_dir), "folder_sha256": digest.hexdigest()}
