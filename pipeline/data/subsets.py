"""Class-balanced, nested training subsets, one draw per (seed, dataset): sorted int64 indices into train.

    labels int64 [N], spec {name: fraction in (0, 1] or whole count >= 2}, seed
        -> sizes: a fraction f gives round(f * N) samples (nearest whole number), a count gives itself;
           a size equal to N is the whole training set
        -> per seed, from pipeline.seeding.rng(seed, f"subsets/{dataset}"): one random order of the classes and
           one random permutation of each class's indices (drawn in class order, so adding a class to the
           dataset changes nothing but its own permutation)
        -> subset of size k: the first count_c(k) indices of every class's permutation, with
           count_c(k) = k // C, plus one for the first k % C classes of the random class order (the remainder rule)
        -> {name: sorted int64 indices}

Prefixes of one permutation per class give balance and nesting at once: for sizes k1 < k2 every class count
satisfies count_c(k1) <= count_c(k2) (equal quotients: the remainder classes are a prefix of the same class order;
larger quotient: k1 // C + 1 <= k2 // C), so the smaller subset lies inside the larger one (EDBA paper Table 1:
100 samples inside 1% inside 10% inside 100% of CIFAR-10). Subsets of equal size are identical.

A subset larger than the training set, smaller than the number of classes, or needing more samples of a class
than it has (an unbalanced image folder), is a one-line error naming the dataset and the subset; the whole
training set is always allowed, balanced or not.
"""
from __future__ import annotations

import numpy as np

from ..seeding import rng
from .fetch import DataError


def subset_sizes(spec: dict[str, float], n_train: int, n_classes: int, dataset: str) -> dict[str, int]:
    """Number of samples of every subset, checked against the training set size and the class count."""
    sizes = {}
    for name, value in spec.items():
        k = int(round(value * n_train)) if value <= 1 else int(value)
        if k > n_train:
            raise DataError(f"{dataset}: subset {name} wants {k} samples but the training set has {n_train}")
        if k < n_train and k < n_classes:
            raise DataError(f"{dataset}: subset {name} has {k} samples, fewer than its {n_classes} classes, "
                            "so it cannot be class-balanced")
        sizes[name] = k
    return sizes


def nesting_order(sizes: dict[str, int]) -> list[str]:
    """Subset names from smallest to largest (ties by name); each lies inside every later one."""
    return sorted(sizes, key=lambda name: (sizes[name], name))


def per_class_counts(k: int, class_order: np.ndarray) -> np.ndarray:
    """int64 [C]: samples of each class in a subset of size k (k // C each, +1 for the first k % C of class_order)."""
    n_classes = len(class_order)
    counts = np.full(n_classes, k // n_classes, dtype=np.int64)
    counts[class_order[: k % n_classes]] += 1
    return counts


def draw_subsets(labels: np.ndarray, n_classes: int, spec: dict[str, float], seed: int,
                 dataset: str) -> tuple[dict[str, np.ndarray], dict[str, list[int]]]:
    """({name: sorted int64 indices into train}, {name: per-class counts}) for one seed."""
    labels = np.asarray(labels)
    n_train = len(labels)
    sizes = subset_sizes(spec, n_train, n_classes, dataset)
    gen = rng(seed, f"subsets/{dataset}")
    class_order = gen.permutation(n_classes)
    # one permutation per class, of that class's indices into train
    orders = [gen.permutation(np.flatnonzero(labels == c)) for c in range(n_classes)]
    available = np.array([len(o) for o in orders])
    subsets, counts_out = {}, {}
    for name in nesting_order(sizes):
        k = sizes[name]
        if k == n_train:  # the whole training set, balanced or not
            subsets[name] = np.arange(n_train, dtype=np.int64)
            counts_out[name] = available.tolist()
            continue
        counts = per_class_counts(k, class_order)
        short = np.flatnonzero(counts > available)
        if short.size:
            c = int(short[0])
            raise DataError(f"{dataset}: subset {name} needs {counts[c]} samples of class {c} but it has "
                            f"{available[c]}, so it cannot be class-balanced")
        picked = np.concatenate([o[:n] for o, n in zip(orders, counts)])
        subsets[name] = np.sort(picked).astype(np.int64)
        counts_out[name] = counts.tolist()
    return subsets, counts_out
