"""Start a run safely: refuse to overwrite finished results of another config, and check the data's kind.

Experiments call `Job.start(...)` (pipeline/train/jobs.py: `start_run`) and then a loop's `fit(...)`;
`finish_run(...)` writes the run files.
A run's identity (its config hash: checkpoint name, conflict check) includes `input_digests(...)`, the sha256 of
every data file it reads and a digest of the training code, so that a checkpoint written before the data or the
code changed is never resumed as if it were this run's.
"""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

from ..data.fetch import DataError
from ..errors import PipelineError, check_writable
from .engine import Run, RunSpec, environment
from ..seeding import generator, seed_global


class RunConflict(PipelineError, RuntimeError):
    """The run directory holds finished results of a different configuration."""


def start_run(spec: RunSpec, run_dir: Path, checkpoint_root: Path, device, log=print, speed=None) -> Run:
    """A Run for `spec`, with the global RNG seeded; checkpoints go to <root>/<exp>/<variant>/seed<k>/. `speed`: the
    profile's speed options (a Speed; None: all off), which the loops read from the Run."""
    run_dir = Path(run_dir)
    existing = run_dir / "config.json"
    if existing.exists():
        old = json.loads(existing.read_text()).get("config_hash")
        if old != spec.config_hash():
            raise RunConflict(f"{run_dir}: holds a finished run of another config ({old}); move it away first")
    ckpt = Path(checkpoint_root) / spec.experiment / spec.variant / f"seed{spec.seed}"
    for folder in (run_dir, ckpt):  # before any training: results that cannot be written would be work lost
        check_writable(folder, "the run's files")
    seed_global(spec.seed)
    return Run(spec, run_dir, ckpt, device, log=log, speed=speed)


@functools.cache
def _file_sha256(path: str, mtime_ns: int, size: int) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def input_digests(files: list[Path], code: str) -> dict:
    """{"data": {path: sha256}, "code": `code`, the digest of the training code} for the files a run reads."""
    data = {}
    for f in files:
        st = Path(f).stat()
        data[str(f)] = _file_sha256(str(f), st.st_mtime_ns, st.st_size)
    return {"data": data, "code": code}


def prepared_files(prepared_dir: Path) -> list[Path]:
    """Every file of a prepared dataset directory (arrays, vocabulary, meta.json), in a stable order."""
    return sorted(p for p in Path(prepared_dir).iterdir() if p.is_file())


def finish_run(run: Run) -> dict:
    return run.finish(environment(run.device))


def seed_generators(seed: int, purposes: tuple[str, ...] = ("data_order", "augment", "method")) -> dict:
    """One CPU torch.Generator per purpose, derived from (seed, purpose)."""
    return {p: generator(seed, p) for p in purposes}


def check_data_kind(prepared_dir: Path, synthetic: bool) -> dict:
    """meta.json of a prepared dataset; a synthetic/real mismatch with the profile is a one-line error."""
    meta_file = Path(prepared_dir) / "meta.json"
    if not meta_file.exists():
        raise DataError(f"{meta_file}: missing; run `python -m pipeline prepare` for this dataset first")
    meta = json.loads(meta_file.read_text())
    if bool(meta.get("synthetic")) != synthetic:
        kind = "synthetic" if meta.get("synthetic") else "real"
        raise DataError(f"{prepared_dir} holds {kind} data but the profile wants "
                           f"{'synthetic' if synthetic else 'real'} data; rerun the prepare stage")
    return meta
