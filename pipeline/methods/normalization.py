"""Weight normalisation, batch normalisation, both or neither, applied to an already built model (experiment 4).

    model = apply_normalization(build_model(...), "weight")      # in place; returns the same model
    data_dependent_init(model, first_training_batch)             # optional, Salimans & Kingma 2016 §3

Modes (the survey's comparison: weight norm vs batch norm vs their combination):
    batch   the model as built, with its BatchNorm layers
    weight  weight normalisation w = g v / ||v|| on every Conv2d and Linear (Salimans & Kingma 2016 §2, one g per
            output unit: torch.nn.utils.parametrizations.weight_norm, dim 0) and every BatchNorm replaced by Identity
    both    weight normalisation and the BatchNorm layers kept
    none    every BatchNorm replaced by Identity, no weight normalisation (the unnormalised baseline)
    layer   every BatchNorm2d replaced by layer normalisation over (C, H, W) per sample, with a per-channel affine
            (Ba et al. 2016 for convolutions: nn.GroupNorm with one group, weight 1, bias 0)
    instance  every BatchNorm2d replaced by instance normalisation over (H, W) per sample and channel, with a
            per-channel affine (Ulyanov et al. 2016: nn.GroupNorm with one group per channel)

Removing BatchNorm also removes its learned shift (beta), which was the only bias of the bias-free convolutions
that precede it in ResNets/VGGs. Salimans & Kingma's layers have a bias (y = phi(w . x + b)), so by default
(`add_missing_bias=True`, our choice) every bias-free Conv2d/Linear gets a zero-initialised bias in the modes
that remove BatchNorm; the unnormalised baseline gets the same, so weight vs none differ only by the
reparameterisation.

Data-dependent initialisation (Salimans & Kingma 2016 §3) is implemented as `data_dependent_init`: on one batch,
each weight-normalised layer in forward order gets g = 1/sigma and b = -mu/sigma, mu and sigma being the
per-unit mean and standard deviation of its pre-activation (v . x)/||v||, so every pre-activation starts with
zero mean and unit variance. It is a separate call because it needs data; the experiment decides whether to use it.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

from . import NORMALIZATIONS

# ---------------------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------------------
MODES = NORMALIZATIONS  # batch, weight, both, none (the one list: pipeline/methods/__init__.py)
WEIGHTED = (nn.Conv2d, nn.Linear)  # the layers that get weight normalisation
BATCH_NORM = nn.modules.batchnorm._BatchNorm  # BatchNorm1d/2d/3d and SyncBatchNorm
INIT_EPS = 1e-5  # our choice: guard on sigma for units that are constant over the init batch (e.g. dead ReLUs)


# ---------------------------------------------------------------------------------------------------------------
# Applying a mode
# ---------------------------------------------------------------------------------------------------------------
def remove_batch_norm(model: nn.Module) -> int:
    """Replace every BatchNorm submodule by nn.Identity, in place; returns how many were replaced."""
    targets = [name for name, module in model.named_modules() if isinstance(module, BATCH_NORM) and name]
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, nn.Identity())
    return len(targets)


def add_zero_bias(model: nn.Module) -> None:
    """Give every bias-free Conv2d/Linear a zero-initialised bias (their forward already reads self.bias)."""
    for module in model.modules():
        if isinstance(module, WEIGHTED) and module.bias is None:
            module.bias = nn.Parameter(torch.zeros(module.out_channels if isinstance(module, nn.Conv2d)
                                                   else module.out_features,
                                                   dtype=module.weight.dtype, device=module.weight.device))


def add_weight_norm(model: nn.Module) -> None:
    """w = g v / ||v||, one g per output unit (dim 0), on every Conv2d/Linear not already parametrised."""
    for module in list(model.modules()):
        if isinstance(module, WEIGHTED) and not parametrize.is_parametrized(module, "weight"):
            weight_norm(module, name="weight", dim=0)


def replace_batch_norm(model: nn.Module, groups_of) -> int:
    """Replace every BatchNorm2d by nn.GroupNorm(groups_of(C), C) (weight 1, bias 0), in place; returns how many."""
    targets = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d) and name]
    for name, bn in targets:
        parent_name, _, child = name.rpartition(".")
        norm = nn.GroupNorm(groups_of(bn.num_features), bn.num_features, eps=bn.eps).to(bn.weight.device)
        setattr(model.get_submodule(parent_name) if parent_name else model, child, norm)
    return len(targets)


def apply_normalization(model: nn.Module, mode: str, add_missing_bias: bool = True) -> nn.Module:
    """Apply normalisation `mode` (batch | weight | both | none | layer | instance) to `model` in place, return it."""
    if mode not in MODES:
        raise ValueError(f"unknown normalization mode {mode!r}; known: {', '.join(MODES)}")
    if isinstance(model, BATCH_NORM) and mode in ("weight", "none"):
        raise ValueError(f"normalization {mode!r}: the model itself is a BatchNorm layer; nothing would remain")
    if mode in ("weight", "none"):
        remove_batch_norm(model)
        if add_missing_bias:
            add_zero_bias(model)
    if mode in ("weight", "both"):
        add_weight_norm(model)
    if mode in ("layer", "instance"):
        replace_batch_norm(model, (lambda c: 1) if mode == "layer" else (lambda c: c))
    return model


# ---------------------------------------------------------------------------------------------------------------
# Data-dependent initialisation (Salimans & Kingma 2016 §3)
# ---------------------------------------------------------------------------------------------------------------
def _unit_view(module: nn.Module, output: torch.Tensor) -> tuple[int, ...]:
    """Broadcast shape of a per-unit vector against `output`: Conv2d [n, out, h, w] -> (1, out, 1, 1);
    Linear [..., out] -> (out,)."""
    return (1, -1) + (1,) * (output.dim() - 2) if isinstance(module, nn.Conv2d) else (-1,)


def _unit_statistics(t: torch.Tensor, unit_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-unit mean and std of a pre-activation, over examples (and locations / time steps)."""
    dims = [d for d in range(t.dim()) if d != unit_dim % t.dim()]
    return t.mean(dim=dims), t.std(dim=dims, unbiased=False)


@torch.no_grad()
def data_dependent_init(model: nn.Module, batch: torch.Tensor) -> nn.Module:
    """Set g and b of every weight-normalised layer so its pre-activations on `batch` have mean 0 and std 1.

    One forward pass; each layer is initialised as the pass reaches it and passes its normalised output on, so
    later layers see the initialised earlier ones, as in the paper. Runs in eval mode (dropout off, BatchNorm
    running statistics untouched) and restores the model's mode.
    """
    layers = [m for m in model.modules() if isinstance(m, WEIGHTED) and parametrize.is_parametrized(m, "weight")]
    if not layers:
        raise ValueError("data_dependent_init: the model has no weight-normalised layer; apply_normalization first")

    def initialise(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        g = module.parametrizations.weight.original0  # [out, 1, ...]: the norm of the current weight
        bias = module.bias if module.bias is not None else torch.zeros_like(g.reshape(-1))
        shape = _unit_view(module, output)
        t = (output - bias.reshape(shape)) / g.reshape(shape)  # (v . x) / ||v||
        mu, sigma = _unit_statistics(t, 1 if isinstance(module, nn.Conv2d) else -1)
        sigma = sigma.clamp_min(INIT_EPS)
        g.copy_((1.0 / sigma).reshape(g.shape))
        if module.bias is not None:
            module.bias.copy_(-mu / sigma)
            return (t - mu.reshape(shape)) / sigma.reshape(shape)
        return t / sigma.reshape(shape)

    was_training = model.training
    handles = [m.register_forward_hook(initialise) for m in layers]
    try:
        model.eval()
        model(batch)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return model
