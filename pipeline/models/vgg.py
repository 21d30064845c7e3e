"""VGG-11 with BatchNorm for CIFAR (Simonyan & Zisserman 2015, configuration "A"; Ioffe & Szegedy's BN after
every conv), width-configurable for growth.

    x [B, 3, 32, 32] --8 x (conv3x3 + BN + ReLU), max-pool 2x2 after convs 1, 2, 4, 6, 8--> [B, w7, 1, 1]
      --> global avg pool (a no-op at 1x1) --> h [B, w7] --> head (nn.Linear) --> logits [B, K]

    widths = (64, 128, 256, 256, 512, 512, 512, 512): the 8 conv layers of configuration A.

The CIFAR form (e.g. kuangliu/pytorch-cifar, the VGG-11 of the growth literature): one Linear classifier on the
512 features instead of ImageNet's three 4096-wide FC layers. Convs keep their bias as in torchvision's
vgg11_bn, which gives 9,231,114 parameters for 10 classes. The global average pool makes F = w7 for any input
size; on 32x32 inputs five 2x2 pools already leave 1x1, so it changes nothing there.
Interface shared with the other CIFAR models: `features(x) -> h [B, F]` and `head`, model(x) == head(features(x)).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .init import he_init


# ---------------------------------------------------------------- configuration

DEFAULT_WIDTHS = (64, 128, 256, 256, 512, 512, 512, 512)  # configuration A, Simonyan & Zisserman Table 1
POOL_AFTER = (0, 1, 3, 5, 7)  # 2x2 max-pool after these convs (0-based): 32 -> 16 -> 8 -> 4 -> 2 -> 1


# ---------------------------------------------------------------- model

class VGG11(nn.Module):
    """VGG-11-BN for 32x32 images; `generator` seeds the initialisation (None: torch's global RNG)."""

    DEFAULT_WIDTHS = DEFAULT_WIDTHS

    def __init__(self, num_classes: int, widths: tuple[int, ...] | None = None, in_channels: int = 3,
                 generator: torch.Generator | None = None):
        super().__init__()
        widths = tuple(self.DEFAULT_WIDTHS if widths is None else widths)
        if len(widths) != len(DEFAULT_WIDTHS) or not all(isinstance(w, int) and w > 0 for w in widths):
            raise ValueError(f"VGG11 widths must be {len(DEFAULT_WIDTHS)} positive ints, got {widths!r}")
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"VGG11 num_classes must be a positive int, got {num_classes!r}")
        self.num_classes, self.widths, self.in_channels = num_classes, widths, in_channels
        channels_in = (in_channels,) + widths[:-1]
        self.convs = nn.ModuleList(nn.Conv2d(c_in, w, 3, padding=1) for c_in, w in zip(channels_in, widths))
        self.bns = nn.ModuleList(nn.BatchNorm2d(w) for w in widths)
        self.head = nn.Linear(widths[-1], num_classes)
        self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """He et al.'s initialisation as torchvision's VGG (pipeline.models.init.he_init)."""
        he_init(self, self.head, generator)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, H, W] -> h [B, F] (F = widths[-1]): everything before the head."""
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            x = F.relu(bn(conv(x)))                          # [B, w_i, H_i, W_i]
            if i in POOL_AFTER:
                x = F.max_pool2d(x, 2)                       # halve H, W
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)  # [B, w7]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, H, W] -> logits [B, num_classes]."""
        return self.head(self.features(x))

    # ------------------------------------------------------------ what growth needs

    def with_widths(self, widths: tuple[int, ...]) -> "VGG11":
        """The same architecture at other widths (its weights are placeholders for growth to overwrite)."""
        return VGG11(self.num_classes, tuple(widths), self.in_channels, generator=torch.Generator())

    def width_groups(self) -> dict[str, int]:
        """Unit group -> index into `widths`: every conv's output channels are their own group."""
        return {f"conv{i}": i for i in range(len(self.widths))}

    def growth_layers(self) -> list[tuple[str, str | None, str, str]]:
        """(layer, BatchNorm after it or None, input group, output group) for every Conv2d/Linear; the groups
        'input' (image channels) and 'classes' (logits) never grow."""
        layers = [(f"convs.{i}", f"bns.{i}", "input" if i == 0 else f"conv{i - 1}", f"conv{i}")
                  for i in range(len(self.widths))]
        return layers + [("head", None, f"conv{len(self.widths) - 1}", "classes")]
