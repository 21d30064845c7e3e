"""Digests of the code a stage runs: part of a run's identity, and of the orchestrators' rerun decisions.

    train_code(experiment)         the files a tuning or training job of `experiment` runs: the shared training
                                   code (TRAIN_CORE) and the experiment's own package folder
    code_digest(path)              sha256 of a file, or of every file under a folder (no bytecode)
    train_code_digest(experiment)  one digest of train_code(experiment): a run trained by other code is another run

Paths are relative to the working directory (the repository root) where they lie under it, else absolute (a
plug-in folder elsewhere). Analysis, report and tracking code is not here: editing those reruns no training.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
# the shared code every tuning and training job runs, relative to the package
TRAIN_CORE = ("__main__.py", "code.py", "config.py", "device.py", "errors.py", "registry.py", "seeding.py",
              "variants.py", "schemas", "data", "models", "methods", "train", "experiments/__init__.py")


def shown(path: Path) -> str:
    """`path` as the orchestrators show it: relative to the working directory when under it."""
    return _shown(str(path), os.getcwd())


@functools.cache
def _shown(path: str, cwd: str) -> str:
    resolved = Path(cwd, path).resolve()
    try:
        return resolved.relative_to(Path(cwd).resolve()).as_posix()
    except ValueError:
        return os.path.relpath(resolved, cwd) if resolved.is_relative_to(PACKAGE.parent) else str(resolved)


def train_code(experiment) -> list[str]:
    """The code a tuning or training job of `experiment` (a registry.Experiment) runs, as shown paths."""
    return [shown(PACKAGE / p) for p in TRAIN_CORE] + [shown(experiment.folder)]


@functools.cache
def _digest(path: str, stamp: tuple) -> str:
    top = Path(path)
    files = [top] if top.is_file() else sorted(
        f for f in top.rglob("*") if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc")
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(top.parent).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def code_digest(path: str | Path) -> str:
    """sha256 of a code file, or of every file under a code folder (names relative to its parent, contents)."""
    top = Path(path).resolve()
    files = [top] if top.is_file() else [f for f in top.rglob("*") if f.is_file() and "__pycache__" not in f.parts]
    stamp = tuple(sorted((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files))  # a changed file: anew
    return _digest(str(top), stamp)


def train_code_digest(experiment) -> str:
    """One digest of the code every tuning and training job of `experiment` runs: part of a run's identity."""
    blob = json.dumps({Path(p).name if Path(p).is_absolute() else p: code_digest(p)
                       for p in train_code(experiment)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
