"""The initialisation every CIFAR model of this package shares (He et al.'s Torch code, torchvision):

    conv weight ~ N(0, 2 / (k*k*C_out)) (fan-out), conv bias 0; BN weight 1, bias 0;
    head weight ~ U(+-1/sqrt(F)) (PyTorch's default for Linear), head bias 0.

and the other convolution initialisation an experiment may choose (`conv_init`, pipeline.models.CONV_INITS):

    he_fan_in       weight ~ N(0, 2 / (k*k*C_in)) (Kaiming's fan-in mode: forward variance kept, the law variance
                    transfer follows when a layer's fan-in grows)
    torch_default   PyTorch's own nn.Conv2d init: weight ~ U(+-sqrt(1 / fan_in)) (kaiming_uniform, a = sqrt(5)),
                    bias ~ U(+-1/sqrt(fan_in))
Either is drawn after He's fan-out init, from the same generator.
"""
from __future__ import annotations

import math

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


@torch.no_grad()
def redraw_convs(model: nn.Module, conv_init: str, generator: torch.Generator | None = None) -> None:
    """Re-draw every convolution at `conv_init` ("he_fan_in" or "torch_default", see above), in place."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and conv_init == "he_fan_in":
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu", generator=generator)
        elif isinstance(m, nn.Conv2d):
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
            if m.bias is not None:
                bound = 1.0 / math.sqrt(m.weight[0].numel())
                nn.init.uniform_(m.bias, -bound, bound, generator=generator)
