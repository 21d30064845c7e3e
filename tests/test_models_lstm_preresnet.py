"""LSTM language model, PreResNet and the analytic FLOPs counters: shapes, parameter counts, hand counts."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pipeline.models.flops import TRAIN_TO_FORWARD, conv_linear_flops, train_flops
from pipeline.models.lstm_lm import LSTMConfig, LSTMLM, detach_hidden, flops_per_token
from pipeline.models.preresnet import PreActBlock, preresnet


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------- PreResNet

def test_preresnet56_has_edba_parameter_count():
    model = preresnet(56, 10)
    assert n_params(model) == 855_578
    # the finding behind the shortcut choice: two bias-free 1x1 projections (16*32 + 32*64), no BN on them
    shortcuts = [m.shortcut for m in model.modules() if isinstance(m, PreActBlock) and m.shortcut is not None]
    assert [tuple(s.weight.shape) for s in shortcuts] == [(32, 16, 1, 1), (64, 32, 1, 1)]
    assert all(s.bias is None and s.stride == (2, 2) for s in shortcuts)
    assert n_params(model) - sum(s.weight.numel() for s in shortcuts) == 853_018  # option A would give this


def test_preresnet20_output_shape_and_features_head_identity():
    model = preresnet(20, 10, generator=torch.Generator().manual_seed(0)).eval()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    logits = model(x)
    assert logits.shape == (4, 10)
    h = model.features(x)
    assert h.shape == (4, 64)
    assert isinstance(model.head, nn.Linear) and model.head.in_features == 64
    torch.testing.assert_close(model.head(h), logits, rtol=0, atol=0)


def test_preresnet_widths_and_seeded_init():
    a = preresnet(8, 100, widths=(4, 8, 12), generator=torch.Generator().manual_seed(3))
    b = preresnet(8, 100, widths=(4, 8, 12), generator=torch.Generator().manual_seed(3))
    assert a.features(torch.zeros(2, 3, 32, 32)).shape == (2, 12)
    assert a(torch.zeros(2, 3, 32, 32)).shape == (2, 100)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


@pytest.mark.parametrize("depth", [7, 21, 2, 0])
def test_preresnet_rejects_bad_depth(depth):
    with pytest.raises(ValueError, match="6n\\+2"):
        preresnet(depth, 10)


# ---------------------------------------------------------------- FLOPs

def test_conv_linear_flops_hand_count():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    conv = 3 * 3 * 3 * 4 * 32 * 32 * 2  # k*k*Cin*Cout*Hout*Wout multiply-adds x2 (torch's counter: no bias adds)
    linears = 4 * 8 * 2 + 8 * 2 * 2
    model.train()
    assert conv_linear_flops(model) == conv + linears == 221_280
    assert model.training  # mode restored
    assert train_flops(conv + linears, 10) == TRAIN_TO_FORWARD * 10 * 221_280


def test_conv_flops_follow_stride_and_groups_and_leave_bn_stats_alone():
    model = nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2, bias=False), nn.BatchNorm2d(8))
    before = model[1].running_mean.clone()
    assert conv_linear_flops(model, (4, 16, 16)) == 3 * 3 * (4 // 2) * 8 * 8 * 8 * 2
    assert torch.equal(model[1].running_mean, before) and model[1].num_batches_tracked.item() == 0


# ---------------------------------------------------------------- LSTM language model

def tiny_cfg(**overrides) -> LSTMConfig:
    base = dict(vocab_size=11, embed_size=6, hidden_size=5, num_layers=2, dropout=0.2)
    return LSTMConfig(**{**base, **overrides})


def test_lstm_shapes_and_hidden():
    model = LSTMLM(tiny_cfg(), generator=torch.Generator().manual_seed(0))
    tokens = torch.randint(0, 11, (7, 3), generator=torch.Generator().manual_seed(1))
    hidden = model.init_hidden(3)
    assert [tuple(h.shape) for h in hidden] == [(2, 3, 5), (2, 3, 5)]
    assert all(h.abs().sum() == 0 for h in hidden)
    logits, new_hidden = model(tokens, hidden)
    assert logits.shape == (7, 3, 11)
    assert [tuple(h.shape) for h in new_hidden] == [(2, 3, 5), (2, 3, 5)]
    assert new_hidden[0].requires_grad
    detached = detach_hidden(new_hidden)
    assert not any(h.requires_grad for h in detached)
    assert all(torch.equal(a, b) for a, b in zip(detached, new_hidden))


def test_lstm_blocks_carry_state_like_one_long_sequence():
    model = LSTMLM(tiny_cfg(dropout=0.0), generator=torch.Generator().manual_seed(0)).eval()
    tokens = torch.randint(0, 11, (8, 2), generator=torch.Generator().manual_seed(2))
    whole, _ = model(tokens)
    first, hidden = model(tokens[:4])
    second, _ = model(tokens[4:], detach_hidden(hidden))
    torch.testing.assert_close(torch.cat([first, second]), whole)


def test_tie_weights_shares_the_parameter():
    model = LSTMLM(tiny_cfg(embed_size=5, tie_weights=True))
    assert model.decoder.weight is model.encoder.weight
    untied = LSTMLM(tiny_cfg(embed_size=5))
    assert n_params(untied) - n_params(model) == 11 * 5
    with pytest.raises(ValueError, match="embed_size == hidden_size"):
        LSTMLM(tiny_cfg(embed_size=6, tie_weights=True))


def test_init_range_bounds_every_parameter():
    model = LSTMLM(tiny_cfg(init_range=0.03), generator=torch.Generator().manual_seed(0))
    for name, p in model.named_parameters():
        assert p.abs().max() <= 0.03, name
        assert p.abs().max() > 0.015, name  # actually drawn from the range, not zero
    default = LSTMLM(tiny_cfg(init_range=None), generator=torch.Generator().manual_seed(0))
    assert default.encoder.weight.abs().max() > 1.0  # N(0, 1) embedding, PyTorch's default
    assert default.rnn.weight_hh_l0.abs().max() <= 1 / math.sqrt(5)


def test_lstm_seeded_init_is_reproducible():
    a = LSTMLM(tiny_cfg(), generator=torch.Generator().manual_seed(5))
    b = LSTMLM(tiny_cfg(), generator=torch.Generator().manual_seed(5))
    c = LSTMLM(tiny_cfg(), generator=torch.Generator().manual_seed(6))
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.encoder.weight, c.encoder.weight)


@pytest.mark.parametrize("field,value", [("vocab_size", 0), ("dropout", 1.0), ("init_range", -0.1)])
def test_lstm_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        LSTMLM(tiny_cfg(**{field: value}))


def test_flops_per_token_hand_count():
    cfg = LSTMConfig(vocab_size=10, embed_size=3, hidden_size=4, num_layers=2, dropout=0.0)
    layer1 = 2 * 4 * (3 + 4) * 4   # 224: gates of the first layer, input = embedding
    layer2 = 2 * 4 * (4 + 4) * 4   # 256: gates of the second layer, input = layer 1's h
    decoder = 2 * 4 * 10           # 80
    assert flops_per_token(cfg, train=False) == layer1 + layer2 + decoder == 560
    assert flops_per_token(cfg, train=True) == 3 * 560


def test_lstm_overfits_a_repeated_sequence():
    torch.manual_seed(0)  # dropout is 0; nothing else draws from the global RNG
    vocab, T, B = 8, 16, 4
    stream = torch.arange(T + 1) % vocab                     # 0 1 2 ... 7 0 1 ...: next token is determined
    data = stream.unsqueeze(1).repeat(1, B)                  # [T+1, B]
    inputs, targets = data[:-1], data[1:]
    cfg = LSTMConfig(vocab_size=vocab, embed_size=16, hidden_size=32, num_layers=1, dropout=0.0)
    model = LSTMLM(cfg, generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    losses = []
    for _ in range(40):
        logits, _ = model(inputs)
        loss = nn.functional.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] > 1.5                                   # ~ln 8 = 2.08 at the start
    assert losses[-1] < 0.1
