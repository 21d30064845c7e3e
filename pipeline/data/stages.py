"""The data stages the CLI calls: fetch sources, prepare a dataset, write its subsets. Thin: the work is in
fetch / ptb / cifar / imagefolder / synthetic / subsets; this module only picks the path and writes atomically.

    download_dataset(params, name)                 -> {role: verified local source file}
    prepare_dataset(params, name, out_dir)         -> out_dir/ in the prepared format + meta.json
    write_subsets(params, name, prepared_dir, out_dir) -> out_dir/seed<k>/<subset>.npy + subsets.json

Every output directory is built in a temporary sibling (".<name>.tmp-<pid>") and renamed at the end, so a killed
job never leaves a half-written directory under the final name (both orchestrators treat it as missing).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from . import cifar, fetch, imagefolder, ptb, subsets, synthetic
from .fetch import DataError
from ..schemas.base import IMAGE_KINDS



def dataset_config(params, name: str):
    if name not in params.data.datasets:
        raise DataError(f"{name}: unknown dataset; known: {', '.join(params.data.datasets)}")
    return params.data.datasets[name]


def _alive(pid: int) -> bool:
    """Is a process with this pid running (on this machine)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def staging(out_dir: Path):
    """Yield a fresh temporary directory beside out_dir; on success it replaces out_dir, on failure it vanishes."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.parent.glob(f".{out_dir.name}.*-*"):  # left over by a killed job: no process owns it
        pid = stale.name.rpartition("-")[2]
        if stale.name.rpartition("-")[0] in (f".{out_dir.name}.tmp", f".{out_dir.name}.old") and pid.isdigit() \
                and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)  # left over by a killed job with the same pid
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
    if out_dir.exists():
        out_dir.rename(old)  # a directory cannot be replaced in one rename; keep the window tiny
    tmp.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", encoding="utf-8")


# ---- download -----------------------------------------------------------------------------------------------------
def download_dataset(params, name: str) -> dict[str, Path]:
    """Fetch (mirror or download) and verify every source file of a dataset; nothing to do when synthetic."""
    ds = dataset_config(params, name)
    if params.synthetic:
        return {}
    return {role: fetch.fetch(params, file) for role, file in ds.files.items()}


# ---- prepare ------------------------------------------------------------------------------------------------------
def prepare_dataset(params, name: str, out_dir: Path) -> None:
    """Write dataset `name` in its prepared format into out_dir (synthetic data in the synthetic profile)."""
    ds = dataset_config(params, name)
    base = {"dataset": name, "kind": ds.kind, "synthetic": params.synthetic}
    with staging(out_dir) as tmp:
        if params.synthetic:
            meta = _prepare_synthetic(params, ds.kind, tmp)
            source = {"generator": meta.pop("generator")}
        else:
            meta, source = _prepare_real(params, ds, tmp)
        _write_json(tmp / "meta.json", {**base, "source": source, **meta})


def _prepare_synthetic(params, kind: str, tmp: Path) -> dict:
    cfg = params.data.synthetic
    if kind == "ptb":
        return synthetic.write_synthetic_text(cfg.text, tmp, kind)
    return synthetic.write_synthetic_images(cfg.images, cfg.images.classes(kind), kind, tmp)


def _prepare_real(params, ds, tmp: Path) -> tuple[dict, dict]:
    """(meta counts, source record) of a real dataset; every source file is checksum-verified before it is read."""
    if ds.kind == "imagefolder":
        meta = imagefolder.import_folder(Path(ds.folder), tmp)
        return meta, {"folder": str(ds.folder), "sha256": meta.pop("folder_sha256")}
    paths = {role: fetch.fetch(params, file) for role, file in ds.files.items()}
    mirror = params.mirror()
    source = {"files": {file: {"url": params.data.sources[file].url, "hash": params.data.sources[file].hash}
                        for file in ds.files.values()},
              "mirror": str(mirror) if mirror is not None else None}
    if ds.kind == "ptb":
        return ptb.prepare_ptb(paths, tmp), source
    return cifar.prepare_cifar(paths["archive"], ds.kind, tmp), source


# ---- subsets ------------------------------------------------------------------------------------------------------
def write_subsets(params, name: str, prepared_dir: Path, out_dir: Path) -> None:
    """For every seed and subset of dataset `name`: out_dir/seed<k>/<subset>.npy (sorted int64), + subsets.json."""
    ds = dataset_config(params, name)
    if ds.kind not in IMAGE_KINDS:
        raise DataError(f"{name}: a {ds.kind} dataset has no training subsets")
    prepared_dir = Path(prepared_dir)
    if not (prepared_dir / "meta.json").is_file():
        raise DataError(f"{prepared_dir}: no prepared dataset here; run `python -m pipeline prepare {name}` first")
    meta = json.loads((prepared_dir / "meta.json").read_text(encoding="utf-8"))
    with np.load(prepared_dir / "train.npz") as f:
        labels = f["y"]
    n_classes = len(meta["classes"])
    sizes = subsets.subset_sizes(ds.subsets, len(labels), n_classes, name)  # fail before writing anything
    per_seed = {}
    with staging(out_dir) as tmp:
        for seed in params.seeds:
            drawn, counts = subsets.draw_subsets(labels, n_classes, ds.subsets, seed, name)
            (tmp / f"seed{seed}").mkdir()
            for subset, indices in drawn.items():
                np.save(tmp / f"seed{seed}" / f"{subset}.npy", indices)
            per_seed[f"seed{seed}"] = counts
        _write_json(tmp / "subsets.json", {
            "dataset": name, "train_size": int(len(labels)), "classes": n_classes, "seeds": list(params.seeds),
            "spec": ds.subsets, "sizes": sizes, "nesting": subsets.nesting_order(sizes),
            "rule": "per seed one random permutation per class; a subset of size k takes the first k // C of each "
                    "class, plus one for the first k % C classes of a random class order; smaller subsets lie "
                    "inside larger ones",
            "per_class_counts": per_seed})
