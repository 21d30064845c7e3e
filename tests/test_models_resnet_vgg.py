"""ResNet-20, ResNet-18 and VGG-11 for CIFAR: parameter counts, the features/head interface, explicit widths,
seeded initialisation and the growth description (growth_layers / width_groups) that growth relies on."""
import pytest
import torch
from torch import nn

from pipeline.models.resnet import ResNet18, ResNet20
from pipeline.models.vgg import VGG11

SMALL = {ResNet20: (4, 8, 16), ResNet18: (4, 8, 16, 32), VGG11: (4, 8, 8, 8, 16, 16, 16, 16)}



def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_resnet20_has_272474_parameters_with_option_b_shortcuts():
    model = ResNet20(10)
    assert count(model) == 272_474
    # option B = two 1x1 projection convs (16*32 + 32*64) and their BNs (2*(32 + 64)); without them (option A)
    # the count is the 269,722 of He et al.'s zero-padding ResNet-20
    shortcut = sum(count(b.shortcut) for stage in model.stages for b in stage if b.shortcut is not None)
    assert shortcut == 16 * 32 + 32 * 64 + 2 * (32 + 64)
    assert count(model) - shortcut == 269_722


def test_resnet18_and_vgg11_parameter_counts():
    assert count(ResNet18(10)) == 11_173_962  # the usual CIFAR ResNet-18
    assert count(ResNet18(100)) == 11_220_132  # + 90 more head rows of 512 weights and a bias
    assert count(VGG11(10)) == 9_231_114


@pytest.mark.parametrize("cls", list(SMALL))
def test_forward_is_head_of_features(cls):
    model = cls(7, widths=SMALL[cls], generator=torch.Generator().manual_seed(0)).eval()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    h = model.features(x)
    assert h.shape == (3, SMALL[cls][-1]) and isinstance(model.head, nn.Linear)
    assert torch.equal(model(x), model.head(h))
    assert model(x).shape == (3, 7)


@pytest.mark.parametrize("cls", list(SMALL))
def test_seeded_init_and_same_class_at_other_widths(cls):
    a = cls(10, SMALL[cls], generator=torch.Generator().manual_seed(3))
    b = cls(10, SMALL[cls], generator=torch.Generator().manual_seed(3))
    c = cls(10, SMALL[cls], generator=torch.Generator().manual_seed(4))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))
    wider = a.with_widths(tuple(2 * w for w in SMALL[cls]))
    assert type(wider) is cls and wider.widths == tuple(2 * w for w in SMALL[cls])
    assert count(wider) > count(a)


@pytest.mark.parametrize("cls", list(SMALL))
def test_bad_widths_are_rejected_with_the_model_name(cls):
    with pytest.raises(ValueError, match=cls.__name__):
        cls(10, widths=(16,))
    with pytest.raises(ValueError, match="num_classes"):
        cls(0)


@pytest.mark.parametrize("cls", list(SMALL))
def test_growth_description_covers_every_layer_with_consistent_shapes(cls):
    model = cls(5, SMALL[cls])
    groups, layers = model.width_groups(), model.growth_layers()
    named = {n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert sorted(layer for layer, *_ in layers) == sorted(named)  # every conv/linear exactly once
    for layer, norm, g_in, g_out in layers:
        module = model.get_submodule(layer)
        w = module.weight
        assert w.shape[0] == (model.widths[groups[g_out]] if g_out in groups else 5)
        assert w.shape[1] == (model.widths[groups[g_in]] if g_in in groups else 3)
        if norm is not None:
            assert model.get_submodule(norm).num_features == w.shape[0]
        else:
            assert module is model.head
