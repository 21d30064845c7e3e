"""Every source of randomness derives from (seed, purpose), so runs are reproducible and methods compare on
identical data: the same seed gives the same subset, data order and augmentation for every method.

    derive_seed(3, "data_order") -> a stable 63-bit integer (sha256, not Python's salted hash())
"""
from __future__ import annotations

import hashlib
import random

import numpy as np


def derive_seed(seed: int, purpose: str) -> int:
    """A stable integer from (seed, purpose); different purposes give independent streams."""
    digest = hashlib.sha256(f"{int(seed)}/{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def rng(seed: int, purpose: str) -> np.random.Generator:
    """A NumPy generator for (seed, purpose)."""
    return np.random.default_rng(derive_seed(seed, purpose))


def generator(seed: int, purpose: str, device: "str | None" = None):
    """A torch.Generator for (seed, purpose), on `device` (CPU by default)."""
    import torch

    g = torch.Generator(device=device or "cpu")
    g.manual_seed(derive_seed(seed, purpose))
    return g


def seed_global(seed: int) -> None:
    """Seed the global RNGs that torch uses implicitly (parameter init, dropout) and turn on determinism.

    On CPU the kernels used here are deterministic already (the resume test checks bit-identity), and
    torch.use_deterministic_algorithms costs about a second per process (it imports the compiler stack), so it is
    switched on only where CUDA is present, together with cuDNN's deterministic mode and cuBLAS's workspace setting.
    """
    import os

    import torch

    random.seed(derive_seed(seed, "python"))
    np.random.seed(derive_seed(seed, "numpy") % (2**32))
    torch.manual_seed(derive_seed(seed, "torch_global"))
    if torch.cuda.is_available():
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True, warn_only=True)
