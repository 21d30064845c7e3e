"""ResNets for CIFAR (He et al. 2016, "Deep Residual Learning", Sec. 4.2), width-configurable for growth.

    ResNet20(num_classes, widths=(16, 32, 64))          3 stages x 3 BasicBlocks, 32x32 -> 16x16 -> 8x8
    ResNet18(num_classes, widths=(64, 128, 256, 512))   4 stages x 2 BasicBlocks, 32x32 -> 16 -> 8 -> 4

    x [B, 3, 32, 32] --conv3x3 3->w0, BN, ReLU--> stage 1 .. stage S --> global avg pool --> h [B, w_last]
      --> head (nn.Linear) --> logits [B, K]

BasicBlock (post-activation, He et al. 2016 Fig. 2): conv3x3-BN-ReLU-conv3x3-BN, added to the shortcut, ReLU.
Shortcut where the shape changes (first block of every stage after the first): a 1x1 conv (stride 2, no bias)
followed by BN, the paper's option B. Parameter counts this gives (10 classes): ResNet-20 272,474 (option A's
zero-padding shortcut would give 269,722: the two 1x1 convs add 16*32 + 32*64 = 2,560 and their BNs 192);
ResNet-18 11,173,962 (the usual CIFAR ResNet-18), 11,220,132 with 100 classes.
ResNet-18 for CIFAR: the ImageNet ResNet-18's BasicBlocks [2, 2, 2, 2] with a 3x3 stride-1 stem and no max-pool
(the common CIFAR adaptation, e.g. kuangliu/pytorch-cifar), as used for CIFAR-100 in NOTES.md section 2.

Widths are explicit so that a model at 1/4 width is the same class (`model.with_widths(...)`); growth
(pipeline/experiments/growth/method.py) reads `growth_layers()` and `width_groups()` to know which tensors grow together.
Interface shared with the other CIFAR models: `features(x) -> h [B, F]` and `head`, model(x) == head(features(x)).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .init import he_init


# ---------------------------------------------------------------- model pieces

class BasicBlock(nn.Module):
    """conv3x3(stride)-BN-ReLU-conv3x3-BN + shortcut, ReLU; [B, C_in, H, W] -> [B, width, H/stride, W/stride]."""

    def __init__(self, in_channels: int, width: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        # Option B: project only where the shape changes. Whether a block projects depends on the stride alone
        # (stage 1 keeps w0 -> w0), so the architecture does not change when the widths grow.
        self.shortcut: nn.Sequential | None = None
        if stride != 1:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, width, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


# ---------------------------------------------------------------- model

class CifarResNet(nn.Module):
    """A post-activation ResNet for 32x32 images; subclasses fix BLOCKS (blocks per stage) and DEFAULT_WIDTHS.

    `generator` seeds the initialisation (None: torch's global RNG).
    """

    BLOCKS: tuple[int, ...] = ()
    DEFAULT_WIDTHS: tuple[int, ...] = ()

    def __init__(self, num_classes: int, widths: tuple[int, ...] | None = None, in_channels: int = 3,
                 generator: torch.Generator | None = None):
        super().__init__()
        name = type(self).__name__
        widths = tuple(self.DEFAULT_WIDTHS if widths is None else widths)
        if len(widths) != len(self.BLOCKS) or not all(isinstance(w, int) and w > 0 for w in widths):
            raise ValueError(f"{name} widths must be {len(self.BLOCKS)} positive ints, got {widths!r}")
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"{name} num_classes must be a positive int, got {num_classes!r}")
        self.num_classes, self.widths, self.in_channels = num_classes, widths, in_channels
        self.stem = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)  # 3 -> w0, 32x32
        self.stem_bn = nn.BatchNorm2d(widths[0])
        stages, channels = [], widths[0]
        for stage, (blocks, width) in enumerate(zip(self.BLOCKS, widths)):
            stride = 1 if stage == 0 else 2  # halve H, W at the start of every later stage
            stages.append(nn.Sequential(BasicBlock(channels, width, stride),
                                        *[BasicBlock(width, width, 1) for _ in range(blocks - 1)]))
            channels = width
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(channels, num_classes)
        self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """He et al.'s initialisation (pipeline.models.init.he_init)."""
        he_init(self, self.head, generator)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, H, W] -> h [B, F] (F = widths[-1]): everything before the head."""
        out = F.relu(self.stem_bn(self.stem(x)))             # [B, w0, H, W]
        out = self.stages(out)                                # [B, w_last, H / 2^(S-1), W / 2^(S-1)]
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)  # global average pool -> [B, w_last]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, H, W] -> logits [B, num_classes]."""
        return self.head(self.features(x))

    # ------------------------------------------------------------ what growth needs

    def with_widths(self, widths: tuple[int, ...]) -> "CifarResNet":
        """The same architecture at other widths (its weights are placeholders for growth to overwrite)."""
        return type(self)(self.num_classes, tuple(widths), self.in_channels, generator=torch.Generator())

    def width_groups(self) -> dict[str, int]:
        """Unit group -> index into `widths`. 'stage<i>' is the residual stream of stage i: the stem (or the
        projection shortcut) and every block's conv2 write the same channels, so they grow together;
        'stages.<i>.<j>.mid' is block j's inner width (conv1's output)."""
        groups = {}
        for i, blocks in enumerate(self.BLOCKS):
            groups[f"stage{i}"] = i
            groups.update({f"stages.{i}.{j}.mid": i for j in range(blocks)})
        return groups

    def growth_layers(self) -> list[tuple[str, str | None, str, str]]:
        """(layer, BatchNorm after it or None, input group, output group) for every Conv2d/Linear; the groups
        'input' (image channels) and 'classes' (logits) never grow."""
        layers = [("stem", "stem_bn", "input", "stage0")]
        for i, blocks in enumerate(self.BLOCKS):
            for j in range(blocks):
                name, stream_in = f"stages.{i}.{j}", f"stage{i - 1 if (i > 0 and j == 0) else i}"
                layers += [(f"{name}.conv1", f"{name}.bn1", stream_in, f"{name}.mid"),
                           (f"{name}.conv2", f"{name}.bn2", f"{name}.mid", f"stage{i}")]
                if self.stages[i][j].shortcut is not None:
                    layers.append((f"{name}.shortcut.0", f"{name}.shortcut.1", stream_in, f"stage{i}"))
        layers.append(("head", None, f"stage{len(self.BLOCKS) - 1}", "classes"))
        return layers


class ResNet20(CifarResNet):
    """ResNet-20 (depth 6n+2 with n = 3): 16/32/64 filters, 272,474 parameters for 10 classes (option B)."""

    BLOCKS = (3, 3, 3)
    DEFAULT_WIDTHS = (16, 32, 64)  # He et al. 2016 Sec. 4.2


class ResNet18(CifarResNet):
    """CIFAR ResNet-18: BasicBlocks [2, 2, 2, 2] at 64/128/256/512, 3x3 stem, no max-pool."""

    BLOCKS = (2, 2, 2, 2)
    DEFAULT_WIDTHS = (64, 128, 256, 512)
