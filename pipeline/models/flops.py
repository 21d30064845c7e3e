"""Analytic FLOPs of a conv net: forward floating-point operations of one sample, from the model's own layers.

    conv_linear_flops(preresnet(56, 10)) -> forward FLOPs of one 3x32x32 image (an int)
    train_flops(forward_flops, samples)  -> training FLOPs of `samples` samples
    schedule_flops(build, stage_widths, stage_epochs, samples_per_epoch)  -> a growth schedule's FLOPs vs full width

Counted: every nn.Conv2d and nn.Linear call, one multiply-add = 2 FLOPs, plus 1 FLOP per output element for a
bias. Ignored, because they are a few percent of a conv net's cost and have no agreed count: BatchNorm, ReLU,
pooling, residual additions, softmax/loss. The numbers are comparable across methods of this harness (same
convention everywhere), not against profiler counts.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

# Training cost per sample = forward + backward, with backward ~ 2x forward (gradients w.r.t. activations and
# w.r.t. weights, one forward-sized product each): the usual convention (e.g. Kaplan et al. 2020, "6N" per token).
TRAIN_TO_FORWARD = 3


def _conv2d_flops(module: nn.Conv2d, output: torch.Tensor) -> int:
    """k_h * k_w * C_in / groups multiply-adds per output element (x2), + 1 per output element for the bias."""
    k_h, k_w = module.kernel_size
    per_output = k_h * k_w * (module.in_channels // module.groups)
    outputs = output.numel()  # C_out * H_out * W_out for one image
    return 2 * per_output * outputs + (outputs if module.bias is not None else 0)


def _linear_flops(module: nn.Linear, output: torch.Tensor) -> int:
    """in * out multiply-adds per input row (x2), + out per row for the bias; rows = all leading dims."""
    outputs = output.numel()  # rows * out_features
    return 2 * module.in_features * outputs + (outputs if module.bias is not None else 0)


def conv_linear_flops(model: nn.Module, input_shape: tuple[int, ...] = (3, 32, 32)) -> int:
    """Forward FLOPs of one sample of shape `input_shape` (C, H, W), summed over every Conv2d/Linear call.

    Measured by one forward pass of a zero tensor [1, *input_shape] with forward hooks, so spatial sizes,
    strides and layers called more than once are counted as the model really runs. The pass runs under
    no_grad in eval mode (BatchNorm running statistics stay untouched) on the model's own device; the
    model's train/eval mode is restored afterwards.
    """
    total = 0

    def count(module: nn.Module, _inputs, output) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            total += _conv2d_flops(module, output)
        else:
            total += _linear_flops(module, output)

    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None else torch.float32
    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), device=device, dtype=dtype))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return int(total)


def train_flops(forward_flops: int, samples: int) -> int:
    """Training FLOPs of `samples` samples (or tokens) at `forward_flops` each: 3x forward per sample."""
    return int(TRAIN_TO_FORWARD * forward_flops * samples)


def schedule_flops(build: Callable[[tuple[int, ...]], nn.Module], stage_widths: list[tuple[int, ...]],
                   stage_epochs: list[int], samples_per_epoch: int,
                   input_shape: tuple[int, ...] = (3, 32, 32)) -> dict:
    """Analytic training FLOPs (3x forward per sample, pipeline.models.flops) of every stage of a schedule and
    their total, against a fixed model at the last stage's widths for the same epochs. build(widths) -> model
    (give it a seeded generator so the global RNG is left alone)."""
    if len(stage_widths) != len(stage_epochs):
        raise ValueError(f"{len(stage_widths)} stage widths but {len(stage_epochs)} stage lengths")
    forward = [conv_linear_flops(build(tuple(w)), input_shape) for w in stage_widths]
    stage = [train_flops(f, e * samples_per_epoch) for f, e in zip(forward, stage_epochs)]
    full = train_flops(forward[-1], sum(stage_epochs) * samples_per_epoch)
    return {"stage_forward_flops": forward, "stage_train_flops": stage, "total": sum(stage),
            "full_width_total": full, "fraction": sum(stage) / full}
