"""How a growing network's weights scale with width (params growth.parameterization): the two consistent pairs of
an initialisation and a variance-transfer factor.

    kaiming  every weight ~ N(0, 2 / (k*k*C)) at every width, C its fan-in channels (Kaiming's fan-in law,
             conv_init he_fan_in), old weights x sqrt(C_old / C_new) at a growth, one learning rate: the default.
    mup      every weight whose fan-in is a width group ~ N(0, 2 / (k*k*C_0)) x (C_0 / C)^2 in variance (so the
             variance goes as 1 / fan_in^2), the head likewise from PyTorch's 1 / sqrt(3 C_0); old weights
             x C_old / C_new at a growth (the linear factor keeps that law); and the learning rate of every such
             weight x C_0 / C, recomputed at each growth.

C_0 is the channel count of the same group at the schedule's stage-0 widths, for growing and fixed networks alike
(muP's base shapes): at stage 0 both parameterizations are the same network. Our reading of "muP style", the
secondary sources give no constant: the 1/fan_in^2 variance with a 1/fan_in learning rate is muP's rule for the
output layer under SGD (Yang et al. 2021, Tensor Programs V, Table 3), applied here to every layer whose fan-in
grows. Under BatchNorm a conv's effective step goes as lr / ||w||^2; at C times the base width its rows are
C_0 / C smaller in squared norm and its learning rate is x C_0 / C, so the gradient step matches the kaiming
network's, while (coupled) weight decay is relatively C_0 / C weaker. The head, which feeds no BatchNorm, gets
muP's output-layer scaling.

    mup_lr_factors(model, base_widths)   weight name -> C_0 / C: the lr multiplier (and mup's std over kaiming's at C_0)
    to_mup(model, base_widths)           a fresh kaiming network at any widths -> the same draws under mup, in place
"""
from __future__ import annotations

import torch
from torch import nn


def mup_lr_factors(model: nn.Module, base_widths: tuple[int, ...]) -> dict[str, float]:
    """C_0 / C for the weight of every layer whose fan-in is a width group (model.growth_layers()); C the group's
    channels in `model`, C_0 at `base_widths`. Factors of 1 are left out: layers with a fixed fan-in (the stem
    reads the 3 image channels), biases, BatchNorm, and every layer at the base widths (so a stage-0 network steps
    exactly as the kaiming one)."""
    groups, widths = model.width_groups(), tuple(model.widths)
    factors = {f"{layer}.weight": base_widths[groups[g_in]] / widths[groups[g_in]]
               for layer, _norm, g_in, _g_out in model.growth_layers() if g_in in groups}
    return {name: f for name, f in factors.items() if f != 1.0}


@torch.no_grad()
def to_mup(model: nn.Module, base_widths: tuple[int, ...]) -> nn.Module:
    """Multiply every weight of mup_lr_factors() by the square root of its factor, in place: a kaiming (he_fan_in)
    network at any widths, std c / sqrt(C), becomes the mup network with the same draws, std c / sqrt(C_0) x C_0 / C
    = c / sqrt(C) x sqrt(C_0 / C) (the head's PyTorch std likewise); at the base widths nothing changes."""
    weights = dict(model.named_parameters())
    for name, factor in mup_lr_factors(model, base_widths).items():
        weights[name].mul_(factor ** 0.5)
    return model
