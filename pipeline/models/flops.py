"""FLOPs of a conv net: forward floating-point operations of one sample, counted by torch's own flop counter.

    conv_linear_flops(preresnet(56, 10)) -> forward FLOPs of one 3x32x32 image (an int)
    train_flops(forward_flops, samples)  -> training FLOPs of `samples` samples
    schedule_flops(build, stage_widths, stage_epochs, samples_per_epoch)  -> a growth schedule's FLOPs vs full width

Counted by torch.utils.flop_counter.FlopCounterMode on one real forward pass: every matrix product and
convolution the model runs (convs, linears; 1 multiply-add = 2 FLOPs), with the shapes, strides and repeated
calls as they really are. Not counted (torch's counter has no count for them, and they are a few percent of a conv
net's cost): biases, BatchNorm, ReLU, pooling, residual additions, softmax/loss. Against the hand count this
module used before (forward hooks on Conv2d/Linear, bias adds included) the only difference is the bias adds:
10 FLOPs of ResNet-20's 81,626,378 (tests/test_flops.py). The LSTM language model keeps its analytic count
(lstm_lm.flops_per_token): on CPU torch runs nn.LSTM as one fused kernel the counter does not see.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

# Training cost per sample = forward + backward, with backward ~ 2x forward (gradients w.r.t. activations and
# w.r.t. weights, one forward-sized product each): the usual convention (e.g. Kaplan et al. 2020, "6N" per token).
# torch's counter on a real backward gives 2.99x for ResNet-20 (the first conv needs no input gradient).
TRAIN_TO_FORWARD = 3


def conv_linear_flops(model: nn.Module, input_shape: tuple[int, ...] = (3, 32, 32)) -> int:
    """Forward FLOPs of one sample of shape `input_shape` (C, H, W), as torch's flop counter counts them.

    One forward pass of a zero tensor [1, *input_shape] under no_grad in eval mode (BatchNorm running statistics
    stay untouched) on the model's own device; the model's train/eval mode is restored afterwards.
    """
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None else torch.float32
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros((1, *input_shape), device=device, dtype=dtype))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


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
