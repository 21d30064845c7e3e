"""Pre-activation ResNet for CIFAR (He et al. 2016, "Identity Mappings in Deep Residual Networks").

    x [B, 3, 32, 32] --conv3x3 3->w0--> stage 1 (n blocks, w0, 32x32) --> stage 2 (n blocks, w1, 16x16)
      --> stage 3 (n blocks, w2, 8x8) --> BN-ReLU --> global avg pool --> flatten h [B, w2] --> head --> [B, K]

depth = 6n + 2 (2 convs per block x 3n blocks + first conv + head). Basic pre-activation block (paper Fig. 4e,
"full pre-activation"): BN-ReLU-conv3x3-BN-ReLU-conv3x3, added to the shortcut.

Shortcut where the shape changes (first block of stages 2 and 3): a 1x1 conv with stride 2, no bias and no BN
(the paper's option B). This is the choice that gives PreResNet-56 exactly the 855,578 parameters (10 classes)
that EDBA reports: without any shortcut parameters (option A, zero-padding) the count is 853,018; the two
1x1 convs add 16*32 + 32*64 = 2,560; a BN after each would add 192 more (855,770).
As in the authors' Torch code (resnet-1k-layers, 'both_preact'), the block's BN-ReLU is shared by both
branches when the shortcut is a projection: the 1x1 conv sees the pre-activated input.

EDBA interface: `features(x) -> h [B, F]` (all up to and including pooling + flatten) and `head` (the final
nn.Linear), so that model(x) == model.head(model.features(x)).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .init import he_init


# ---------------------------------------------------------------- configuration

DEFAULT_WIDTHS = (16, 32, 64)  # paper Sec. 4 / He et al. 2015 Sec. 4.2: CIFAR ResNets with 16, 32, 64 filters


def blocks_per_stage(depth: int) -> int:
    """n from depth = 6n + 2; a one-line ValueError for any other depth."""
    if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6 != 0:
        raise ValueError(f"PreResNet depth must be 6n+2 with n >= 1 (8, 14, 20, ..., 56, 110), got {depth!r}")
    return (depth - 2) // 6


# ---------------------------------------------------------------- model pieces

class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3(stride)-BN-ReLU-conv3x3 + shortcut; [B, C_in, H, W] -> [B, C_out, H/stride, W/stride]."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Conv2d | None = None  # identity where the shape is unchanged
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)  # option B

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        residual = x if self.shortcut is None else self.shortcut(pre)  # projection sees the pre-activation
        out = self.conv1(pre)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + residual


# ---------------------------------------------------------------- model

class PreResNet(nn.Module):
    """PreResNet-(6n+2) for 32x32 images; `generator` seeds the initialisation (None: torch's global RNG)."""

    def __init__(self, depth: int, num_classes: int, widths: tuple[int, int, int] = DEFAULT_WIDTHS,
                 in_channels: int = 3, generator: torch.Generator | None = None):
        super().__init__()
        n = blocks_per_stage(depth)
        widths = tuple(widths)
        if len(widths) != 3 or not all(isinstance(w, int) and w > 0 for w in widths):
            raise ValueError(f"PreResNet widths must be 3 positive ints, got {widths!r}")
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"PreResNet num_classes must be a positive int, got {num_classes!r}")
        self.depth, self.widths = depth, widths
        self.stem = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)  # 3 -> w0, 32x32
        stages, channels = [], widths[0]
        for stage, width in enumerate(widths):
            stride = 1 if stage == 0 else 2  # halve H, W at the start of stages 2 and 3
            blocks = [PreActBlock(channels, width, stride)]
            blocks += [PreActBlock(width, width, 1) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            channels = width
        self.stages = nn.Sequential(*stages)
        self.final_bn = nn.BatchNorm2d(channels)  # pre-activation nets end with BN-ReLU before pooling
        self.head = nn.Linear(channels, num_classes)
        self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """He et al.'s initialisation (pipeline.models.init.he_init)."""
        he_init(self, self.head, generator)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, H, W] -> h [B, F] (F = widths[-1]): everything before the head."""
        out = self.stages(self.stem(x))                   # [B, w2, H/4, W/4]
        out = F.relu(self.final_bn(out))
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)  # global average pool -> [B, w2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, H, W] -> logits [B, num_classes]."""
        return self.head(self.features(x))


def preresnet(depth: int, num_classes: int, widths: tuple[int, int, int] = DEFAULT_WIDTHS,
              generator: torch.Generator | None = None) -> PreResNet:
    """PreResNet-`depth` (6n+2) for CIFAR with `num_classes` outputs, e.g. preresnet(56, 10) for EDBA."""
    return PreResNet(depth, num_classes, widths, generator=generator)
