"""FLOP counts: torch's flop counter (pipeline.models.flops) against a hand count and against a real backward."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pipeline.models import build_model
from pipeline.models.flops import TRAIN_TO_FORWARD, conv_linear_flops
from pipeline.models.lstm_lm import LSTMLM, LSTMConfig, flops_per_token


def hand_count(model: nn.Module) -> tuple[int, int]:
    """(multiply-add FLOPs, bias adds) of every Conv2d/Linear call of one 3x32x32 forward, by forward hooks."""
    products, biases = 0, 0

    def count(module, _inputs, output):
        nonlocal products, biases
        if isinstance(module, nn.Conv2d):
            k_h, k_w = module.kernel_size
            products += 2 * k_h * k_w * (module.in_channels // module.groups) * output.numel()
        else:
            products += 2 * module.in_features * output.numel()
        biases += output.numel() if module.bias is not None else 0

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    return products, biases


@pytest.mark.parametrize("name,widths", [("resnet20", (16, 32, 64)), ("preresnet20", None), ("vgg11", None)])
def test_torch_counts_every_product_the_hand_count_does_and_no_bias(name, widths):
    model = build_model(name, 10, widths, generator=torch.Generator().manual_seed(0))
    products, biases = hand_count(model)
    assert conv_linear_flops(model) == products  # the earlier hand count was products + biases
    if name == "resnet20":
        assert (products + biases, biases) == (81_626_378, 10)  # the module docstring's figures


def test_a_real_backward_costs_about_twice_the_forward():
    model = build_model("resnet20", 10, (8, 16, 32), generator=torch.Generator().manual_seed(0))
    forward = conv_linear_flops(model)
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(4, 3, 32, 32)).sum().backward()
    per_sample = counter.get_total_flops() / 4
    assert 0.98 * TRAIN_TO_FORWARD * forward < per_sample <= TRAIN_TO_FORWARD * forward  # 2.99x: no input gradient


def test_the_lstm_keeps_its_analytic_count_because_torch_sees_only_the_decoder_on_cpu():
    cfg = LSTMConfig(vocab_size=50, embed_size=16, hidden_size=16, num_layers=2, dropout=0.0)
    model = LSTMLM(cfg, torch.Generator().manual_seed(0)).eval()
    tokens = torch.zeros(5, 3, dtype=torch.long)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(tokens, model.init_hidden(3))
    seen = counter.get_total_flops() / tokens.numel()
    assert seen == 2 * cfg.hidden_size * cfg.vocab_size  # the decoder only: the fused LSTM kernel is not counted
    assert flops_per_token(cfg, train=False) > seen
