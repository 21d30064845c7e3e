"""The initialisation every CIFAR model of this package shares (He et al.'s Torch code, torchvision):

    conv weight ~ N(0, 2 / (k*k*C_out)) (fan-out), conv bias 0; BN weight 1, bias 0;
    head weight ~ U(+-1/sqrt(F)) (PyTorch's default for Linear), head bias 0.
"""
from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def he_init(model: nn.Module, head: nn.Linear, generator: torch.Generator | None = None) -> None:
    """Initialise `model` in place; `generator` seeds every draw (None: torch's global RNG)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    bound = 1.0 / head.in_features ** 0.5
    nn.init.uniform_(head.weight, -bound, bound, generator=generator)
    nn.init.zeros_(head.bias)
