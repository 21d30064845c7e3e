"""apply_normalization: each mode gives the expected modules and a working model; data_dependent_init gives
pre-activations with zero mean and unit variance on its batch (Salimans & Kingma 2016 §3)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from pipeline.methods.normalization import MODES, apply_normalization, data_dependent_init


class TinyCNN(nn.Module):
    """Two conv-BN-ReLU blocks (bias-free convs, as in ResNets) and a linear head; BN nested in a Sequential."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.block = nn.Sequential(nn.ReLU(), nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False),
                                   nn.BatchNorm2d(6), nn.ReLU())
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        return self.head(self.block(self.bn(self.stem(x))).mean(dim=(2, 3)))


def _batch(seed: int = 0, n: int = 64):
    return torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed)) * 3 + 1


def _count(model, kind):
    return sum(isinstance(m, kind) for m in model.modules())


@pytest.mark.parametrize("mode, batch_norms, weight_normed", [
    ("batch", 2, 0), ("weight", 0, 3), ("both", 2, 3), ("none", 0, 0)])
def test_modes_give_the_expected_modules(mode, batch_norms, weight_normed):
    torch.manual_seed(0)
    model = apply_normalization(TinyCNN(), mode)
    assert _count(model, nn.BatchNorm2d) == batch_norms
    layers = [model.stem, model.block[1], model.head]
    assert sum(parametrize.is_parametrized(m, "weight") for m in layers) == weight_normed
    if weight_normed:
        names = {n for n, _ in model.named_parameters()}
        assert "stem.parametrizations.weight.original0" in names  # g, one per output unit
        assert model.stem.parametrizations.weight.original0.shape == (4, 1, 1, 1)
    if batch_norms == 0:
        assert isinstance(model.bn, nn.Identity) and isinstance(model.block[2], nn.Identity)
        assert model.stem.bias is not None and model.block[1].bias is not None  # BN's shift is replaced by a bias
        assert torch.count_nonzero(model.stem.bias) == 0
    else:
        assert model.stem.bias is None  # kept as built when BN stays
    for training in (True, False):
        model.train(training)
        out = model(_batch())
        assert out.shape == (64, 3) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_weight_norm_keeps_the_function_at_construction():
    torch.manual_seed(0)
    plain = apply_normalization(TinyCNN(), "none")
    normed = apply_normalization(TinyCNN(), "none")
    normed.load_state_dict(plain.state_dict())
    apply_normalization(normed, "weight")  # g = ||v|| initially, so w is unchanged
    x = _batch(1)
    assert torch.allclose(plain(x), normed(x), atol=1e-6)


def test_none_has_no_batch_norm_and_optional_bias():
    model = apply_normalization(TinyCNN(), "none", add_missing_bias=False)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert model.stem.bias is None


def test_data_dependent_init_standardises_pre_activations():
    torch.manual_seed(0)
    model = apply_normalization(TinyCNN(), "weight")
    x = _batch(2)
    data_dependent_init(model, x)
    outputs = {}
    layers = {"stem": model.stem, "conv": model.block[1], "head": model.head}
    handles = [m.register_forward_hook(lambda m, i, o, k=k: outputs.__setitem__(k, o)) for k, m in layers.items()]
    model.train()
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    for name, out in outputs.items():
        dims = (0, 2, 3) if out.dim() == 4 else (0,)
        assert torch.allclose(out.mean(dim=dims), torch.zeros(out.shape[1]), atol=1e-5), name
        assert torch.allclose(out.std(dim=dims, unbiased=False), torch.ones(out.shape[1]), atol=1e-4), name
    assert model.training  # mode restored


def test_bad_input_fails_early():
    with pytest.raises(ValueError, match=r"unknown normalization mode 'group'; known: batch, weight, both, none, layer, instance"):
        apply_normalization(TinyCNN(), "group")
    with pytest.raises(ValueError, match="no weight-normalised layer"):
        data_dependent_init(TinyCNN(), _batch())
    assert MODES == ("batch", "weight", "both", "none", "layer", "instance")


def test_layer_and_instance_norm_replace_every_batch_norm_and_normalise_per_sample():
    from pipeline.models import build_model

    for mode, groups in (("layer", lambda c: 1), ("instance", lambda c: c)):
        model = apply_normalization(build_model("resnet20", 10, (4, 8, 16), generator=torch.Generator().manual_seed(0)),
                                    mode)
        norms = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
        assert norms and not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
        assert all(m.num_groups == groups(m.num_channels) for m in norms)
        model.eval()
        x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        alone = model(x[:1])  # per-sample statistics: a sample's output does not depend on the rest of the batch
        assert torch.allclose(model(x)[:1], alone, atol=1e-5)
