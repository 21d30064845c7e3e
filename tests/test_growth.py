"""Width growth: the schedule, function preservation for every model and mode, parameter counts per stage,
optimizer state across a growth, stage masks and LR multipliers, per-entry LR steps, and schedule FLOPs.

grow() and the LR-adaptation functions take every option explicitly: where a test's expectation does not depend
on an option, it uses the value of params.yaml's growth.method (what the experiment runs); where it does, the
test names the value itself.
"""
import functools
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from pipeline import config
from pipeline.experiments.growth.method import (
    MODES, carry_optimizer_state, extend_lr_compensation, extend_stage_masks, grow, initial_stage_masks,
    lr_multipliers, old_block, scaled_step, stage_multipliers)
from pipeline.experiments.growth.schedule import GrowthSchedule, growth_epochs, stage_widths
from pipeline.models import build_model
from pipeline.models.flops import schedule_flops
from pipeline.models.resnet import ResNet18, ResNet20
from pipeline.models.vgg import VGG11

# (small widths, grown widths): some groups grow, some do not (a 4-wide group at a 19% step stays put)
GROW = {ResNet20: ((4, 8, 16), (4, 10, 20)),
        ResNet18: ((4, 8, 16, 32), (6, 12, 16, 36)),
        VGG11: ((4, 8, 8, 8, 16, 16, 16, 16), (6, 10, 12, 8, 20, 18, 16, 22))}
VARIANTS = [("random", "linear"), ("variance_transfer", "linear"), ("variance_transfer", "sqrt"),
            ("net2net", "linear")]
OPTIONS = [{}, {"init_fan": "out"}, {"net2net_noise": 0.3}]  # grow()'s other options (each mode reads its own)
# the paper's schedule (NOTES.md section 2): 8 growths from 1/4 of full width, stages ~20% longer each
PAPER_SCHEDULE = dict(num_growths=8, start_fraction=0.25, growth_ratio=None, stage_length_ratio=1.2)
ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def method():
    """params.yaml's growth.method (the same in every profile)."""
    return config.load(ROOT / "params.yaml", "paper").settings("growth", "grow_vt_lr-cifar10").method


def grow_options(model, **options) -> dict:
    """grow()'s keyword options: params.yaml's growth.method, base widths the model's current ones, `options` over."""
    m = method()
    return {"variance_factor": m.variance_factor, "base_widths": tuple(model.widths), "init_fan": m.init_fan,
            "net2net_noise": m.net2net_noise, **options}


def grow_(model, widths, mode, generator, **options):
    return grow(model, widths, mode, generator, **grow_options(model, **options))


def multipliers_of(model, masks, **options):
    """lr_multipliers with params.yaml's scope and include_head unless given."""
    m = method()
    return lr_multipliers(model, masks, **{"scope": m.lr_scope, "include_head": m.lr_include_head, **options})


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def trained_like(cls, widths, seed=0, num_classes=10):
    """A model with non-trivial BN affine parameters, conv biases and running statistics (eval mode)."""
    g = gen(seed)
    model = cls(num_classes, widths, generator=g)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0.0, 0.3, generator=g)
                m.momentum = None  # cumulative average: running stats = the mean of the batch statistics
            elif isinstance(m, nn.Conv2d) and m.bias is not None:
                m.bias.normal_(0.0, 0.3, generator=g)
        model.train()
        for _ in range(3):
            model(torch.randn(16, 3, 32, 32, generator=g) * 2 + 0.5)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1
            assert not torch.allclose(m.running_var, torch.ones_like(m.running_var))
    return model.eval()


def inputs(seed=1, n=6):
    return torch.randn(n, 3, 32, 32, generator=gen(seed)) * 2 + 0.5


def count(model):
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------- schedule

def test_stage_widths_from_a_quarter_to_exactly_full_in_even_steps():
    widths = stage_widths((16, 32, 64), num_growths=8, start_fraction=0.25, growth_ratio=None)
    assert len(widths) == 9 and widths[0] == (4, 8, 16) and widths[-1] == (16, 32, 64)
    for a, b in zip(widths, widths[1:]):
        assert all(y >= x and (y - x) % 2 == 0 for x, y in zip(a, b))
    # the widest group grows by about 4**(1/8) = 1.19 per step (rounded to pairs)
    third = [w[2] for w in widths]
    assert all(abs(b / a - 4 ** 0.125) < 0.13 for a, b in zip(third, third[1:]))
    assert sum(b > a for a, b in zip(third, third[1:])) == 8


def test_build_model_by_name_and_width_fraction():
    model = build_model("vgg11", 100, width_fraction=0.25, generator=gen(0))
    assert isinstance(model, VGG11) and model.widths == (16, 32, 64, 64, 128, 128, 128, 128)
    assert build_model("resnet18", 100).widths == (64, 128, 256, 512)
    with pytest.raises(ValueError, match="resnet50"):
        build_model("resnet50", 10)


def test_growth_ratio_alternative_and_bad_input():
    widths = stage_widths((64, 128, 256, 512), 8, start_fraction=None, growth_ratio=1.2)
    assert widths[-1] == (64, 128, 256, 512)
    assert widths[0] == (14, 30, 60, 120)  # 1.2**-8 = 0.233 of full, rounded to pairs
    for start, ratio in ((0.25, 1.2), (None, None)):  # exactly one of the two
        with pytest.raises(ValueError, match="give one of start_fraction and growth_ratio"):
            stage_widths((16,), 8, start_fraction=start, growth_ratio=ratio)
        with pytest.raises(ValueError, match="give one of start_fraction and growth_ratio"):
            GrowthSchedule((16,), 9, 8, start, ratio, 1.0).stage_widths()
    with pytest.raises(ValueError, match="fraction"):
        stage_widths((16,), 8, start_fraction=1.5, growth_ratio=None)


def test_growth_epochs_stage_lengths_grow_about_20_percent():
    schedule = GrowthSchedule((16, 32, 64), total_epochs=160, **PAPER_SCHEDULE)
    epochs, lengths = schedule.growth_epochs(), schedule.stage_epochs()
    assert len(epochs) == 8 and all(b > a for a, b in zip(epochs, epochs[1:]))
    assert sum(lengths) == 160 and lengths == [8, 9, 11, 13, 16, 19, 23, 28, 33]
    ideal = [160 * 0.2 / (1.2 ** 9 - 1) * 1.2 ** k for k in range(9)]
    assert all(abs(a - b) <= 1 for a, b in zip(lengths, ideal))
    assert schedule.stage_at(0) == 0 and schedule.stage_at(epochs[0]) == 1 and schedule.stage_at(159) == 8


def test_fixed_intervals_and_too_few_epochs():
    assert growth_epochs(90, 8, stage_length_ratio=1.0) == [10, 20, 30, 40, 50, 60, 70, 80]
    for ratio in (1.0, 1.2, 2.0):
        assert growth_epochs(9, 8, ratio) == list(range(1, 9))  # every stage exactly one epoch
    with pytest.raises(ValueError, match="total_epochs=5"):
        growth_epochs(5, 8, 1.2)


# ---------------------------------------------------------------- function preservation

def test_every_mode_is_covered_and_unknown_ones_are_rejected():
    assert {mode for mode, _ in VARIANTS} == set(MODES)
    with pytest.raises(ValueError, match="splitting"):
        grow_(trained_like(ResNet20, (4, 8, 16)), (6, 10, 20), "splitting", gen(0))
    with pytest.raises(ValueError, match=r"\(4, 8, 16\)"):
        grow_(trained_like(ResNet20, (4, 8, 16)), (2, 8, 16), "random", gen(0))


@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("mode,factor", VARIANTS)
@pytest.mark.parametrize("cls", list(GROW))
def test_grow_preserves_the_function_in_eval_mode(cls, mode, factor, options):
    small, grown = GROW[cls]
    model, x = trained_like(cls, small), inputs()
    new, step = grow_(model, grown, mode, gen(5), variance_factor=factor, **options)
    with torch.no_grad():
        before, after = model(x), new(x)
    assert before.abs().max() > 0.1  # a non-trivial output, so the tolerance below means something
    assert (before - after).abs().max() < 1e-5
    assert type(new) is cls and new.widths == grown and not new.training
    assert count(new) == count(cls(10, grown))  # the same parameter count as a fresh model at these widths
    for name, p in new.named_parameters():  # every old tensor sits in the leading block
        assert step.old_shapes[name] == tuple(dict(model.named_parameters())[name].shape)
        assert p.shape == dict(cls(10, grown).named_parameters())[name].shape


@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("mode,factor", VARIANTS)
def test_grow_preserves_the_function_in_train_mode(mode, factor, options):
    model = trained_like(ResNet20, (4, 8, 16))
    new, _ = grow_(model, (6, 10, 20), mode, gen(5), variance_factor=factor, **options)
    model.train(), new.train()
    with torch.no_grad():  # batch statistics: rescaled pre-activations are normalised away (up to BN's eps)
        assert (model(inputs()) - new(inputs())).abs().max() < 1e-4


def test_net2net_copies_units_and_allows_odd_growth():
    model, x = trained_like(ResNet20, (4, 8, 16)), inputs()
    new, step = grow_(model, (5, 11, 16), "net2net", gen(2))
    with torch.no_grad():
        assert (model(x) - new(x)).abs().max() < 1e-5
    stem_old, stem_new = model.stem.weight, new.stem.weight
    assert any(torch.equal(stem_new[4], stem_old[j]) for j in range(4))  # the new unit copies an old one
    # the consumer's columns of the copied unit and its copy share the old column
    j = next(j for j in range(4) if torch.equal(stem_new[4], stem_old[j]))
    conv1_old, conv1_new = model.stages[0][0].conv1.weight, new.stages[0][0].conv1.weight
    assert torch.allclose(conv1_new[:4, j] + conv1_new[:4, 4], conv1_old[:, j], atol=1e-7)
    with pytest.raises(ValueError, match="pairs"):
        grow_(model, (5, 11, 16), "random", gen(2))


def test_net2net_noise_breaks_the_copies_symmetry_and_keeps_the_function():
    model, x = trained_like(ResNet20, (4, 8, 16)), inputs()
    gradients = {}
    for noise in (0.0, 0.2):
        new, step = grow_(model, (6, 8, 16), "net2net", gen(2), net2net_noise=noise)
        with torch.no_grad():
            assert (model(x) - new(x)).abs().max() < 1e-5
        # stem units 4 and 5 copy old units; a source j with a copy: shares of its consumer column sum to 1
        j = next(j for j in range(4) if torch.equal(new.stem.weight[4], model.stem.weight[j]))
        conv1_old, conv1_new = model.stages[0][0].conv1.weight, new.stages[0][0].conv1.weight
        copies = [i for i in range(6) if torch.equal(new.stem.weight[i], model.stem.weight[j])]
        assert torch.allclose(conv1_new[:4, copies].sum(1), conv1_old[:, j], atol=1e-6)
        assert torch.equal(step.old_scale["stages.0.0.conv1.weight"][:, j] * conv1_old[:, j], conv1_new[:4, j])
        assert torch.equal(conv1_new[:, j], conv1_new[:, 4]) == (noise == 0)
        new.train()
        nn.functional.cross_entropy(new(x), torch.arange(6) % 10).backward()
        gradients[noise] = new.stem.weight.grad[j].flatten(), new.stem.weight.grad[4].flatten()
    a, b = gradients[0.0]
    assert torch.allclose(a, b, atol=1e-7)  # equal shares: a copy and its source get the same gradient
    a, b = gradients[0.2]
    assert abs(float(torch.nn.functional.cosine_similarity(a, b, dim=0))) < 0.999  # not even parallel
    with pytest.raises(ValueError, match="net2net_noise"):
        grow_(model, (6, 8, 16), "net2net", gen(2), net2net_noise=-0.1)


def test_init_fan_out_draws_new_conv_units_at_the_fan_out():
    model = trained_like(ResNet20, (4, 8, 16))
    fan_in, _ = grow_(model, (6, 8, 16), "random", gen(3), init_fan="in")
    fan_out, _ = grow_(model, (6, 8, 16), "random", gen(3), init_fan="out")
    # the same draws, std sqrt(2 / (9 * 3)) vs sqrt(2 / (9 * 6)): the stem's fan-in is 3 channels, fan-out 6
    assert torch.allclose(fan_out.stem.weight[4:], fan_in.stem.weight[4:] * math.sqrt(3 / 6))
    assert torch.equal(fan_out.head.weight, fan_in.head.weight)  # the head keeps PyTorch's fan-in law
    with pytest.raises(ValueError, match="init_fan"):
        grow_(model, (6, 8, 16), "random", gen(3), init_fan="avg")


def test_pairs_have_equal_incoming_and_opposite_outgoing_weights():
    model = trained_like(ResNet20, (4, 8, 16))
    new, _ = grow_(model, (6, 8, 16), "random", gen(3))
    stem, conv1 = new.stem.weight, new.stages[0][0].conv1.weight
    assert torch.equal(stem[4], stem[5]) and not torch.equal(stem[4], stem[0])
    assert torch.equal(conv1[:, 4], -conv1[:, 5]) and conv1[:, 4].abs().sum() > 0
    assert torch.equal(stem[:4], model.stem.weight)  # random mode leaves old weights alone


def test_variance_transfer_rescales_old_weights_and_running_stats():
    model = trained_like(VGG11, GROW[VGG11][0])
    new, step = grow_(model, GROW[VGG11][1], "variance_transfer", gen(4), variance_factor="sqrt")
    s = math.sqrt(4 / 6)  # convs.1 fan-in grows 4 -> 6
    old_conv, new_conv = model.convs[1], new.convs[1]
    assert torch.allclose(new_conv.weight[:8, :4], s * old_conv.weight)
    assert step.old_scale["convs.1.weight"] == pytest.approx(s)
    assert torch.allclose(new.bns[1].running_mean[:8], s * model.bns[1].running_mean)
    assert torch.equal(new.head.weight[:, :16], model.head.weight)  # the head feeds no BN: never rescaled
    assert torch.equal(new.convs[0].weight[:4], model.convs[0].weight)  # fan-in 3 did not grow


def test_grow_is_deterministic_given_the_generator():
    model = trained_like(ResNet18, GROW[ResNet18][0])
    a, _ = grow_(model, GROW[ResNet18][1], "variance_transfer", gen(9))
    b, _ = grow_(model, GROW[ResNet18][1], "variance_transfer", gen(9))
    c, _ = grow_(model, GROW[ResNet18][1], "variance_transfer", gen(10))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


@pytest.mark.parametrize("mode,options", [("variance_transfer", {}), ("variance_transfer", {"init_fan": "out"}),
                                          ("net2net", {"net2net_noise": 0.3})])
def test_whole_schedule_keeps_the_function_and_matches_fresh_parameter_counts(mode, options):
    schedule = GrowthSchedule((16, 32, 64), total_epochs=90, **PAPER_SCHEDULE)
    widths = schedule.stage_widths()
    model, x = trained_like(ResNet20, widths[0]), inputs(n=4)
    with torch.no_grad():
        reference = model(x)
    masks = initial_stage_masks(model)
    for stage, w in enumerate(widths[1:], start=1):
        model, step = grow_(model, w, mode, gen(stage), base_widths=widths[0], **options)
        masks = extend_stage_masks(masks, model, step, stage)
        with torch.no_grad():
            assert (model(x) - reference).abs().max() < 1e-5
        assert count(model) == count(build_model("resnet20", 10, w))
    assert count(model) == 272_474
    assert int(masks["head.weight"].max()) == 8 and int(masks["head.weight"][:, :16].max()) == 0


# ---------------------------------------------------------------- optimizer state

def train_steps(model, optimizer, steps=2, seed=7):
    g = gen(seed)
    model.train()
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(inputs(seed, 8)), torch.randint(10, (8,), generator=g))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize("rescale", [True, False])
def test_sgd_momentum_is_carried_for_old_entries_and_zero_for_new(rescale):
    model = trained_like(ResNet20, (4, 8, 16))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10)
    train_steps(model, optimizer)
    scheduler.step()
    old = {n: optimizer.state[p]["momentum_buffer"].clone() for n, p in model.named_parameters()}
    new, step = grow_(model, (6, 10, 20), "variance_transfer", gen(1))
    assert carry_optimizer_state(optimizer, model, new, step, rescale_state=rescale) is optimizer
    assert [id(p) for p in optimizer.param_groups[0]["params"]] == [id(p) for p in new.parameters()]
    for name, q in new.named_parameters():
        buf = optimizer.state[q]["momentum_buffer"].clone()
        block = old_block(old[name].shape)
        factor = step.old_scale[name] if rescale else 1.0
        assert torch.allclose(buf[block], old[name] * factor)
        buf[block] = 0
        assert buf.abs().sum() == 0  # new units start with zero momentum
    assert any(step.old_scale[n] != 1.0 for n in old)  # variance transfer did rescale something
    train_steps(new, optimizer, steps=1)  # the optimizer and its scheduler keep working
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05 * (1 + math.cos(math.pi * 2 / 10)))


def test_adam_moments_carry_with_squared_scale_for_second_moments():
    model = trained_like(VGG11, GROW[VGG11][0])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    train_steps(model, optimizer)
    name = "convs.2.weight"
    p = dict(model.named_parameters())[name]
    m, v = optimizer.state[p]["exp_avg"].clone(), optimizer.state[p]["exp_avg_sq"].clone()
    new, step = grow_(model, GROW[VGG11][1], "variance_transfer", gen(1))
    carry_optimizer_state(optimizer, model, new, step, rescale_state=True)
    q, s = dict(new.named_parameters())[name], step.old_scale[name]
    block = old_block(p.shape)
    assert s < 1 and float(optimizer.state[q]["step"]) == 2
    assert torch.allclose(optimizer.state[q]["exp_avg"][block], m * s)
    assert torch.allclose(optimizer.state[q]["exp_avg_sq"][block], v * s * s)
    train_steps(new, optimizer, steps=1)


# ---------------------------------------------------------------- LR adaptation

def test_stage_masks_and_lr_multipliers_match_hand_computed_norm_ratios():
    model = trained_like(ResNet20, (4, 8, 16))
    masks = initial_stage_masks(model)
    model, step = grow_(model, (6, 10, 20), "variance_transfer", gen(1))
    masks = extend_stage_masks(masks, model, step, 1)
    model, step = grow_(model, (8, 12, 24), "variance_transfer", gen(2))
    masks = extend_stage_masks(masks, model, step, 2)
    head = masks["head.weight"]
    assert (head[:, :16] == 0).all() and (head[:, 16:20] == 1).all() and (head[:, 20:] == 2).all()
    params = dict(model.named_parameters())
    weights = [n for n, p in params.items() if p.dim() >= 2]
    norm = lambda k: math.sqrt(sum(float((params[n].detach()[masks[n] == k] ** 2).sum()) for n in weights))
    multipliers = lr_multipliers(model, masks, scope="global", include_head=True)  # the norms below include the head
    for k in (1, 2):
        expected = norm(k) / norm(0)
        assert multipliers["head.weight"][0, 16 if k == 1 else 20].item() == pytest.approx(expected, rel=1e-5)
        assert multipliers["stem_bn.weight"][-1].item() == pytest.approx(norm(2) / norm(0), rel=1e-5)
    assert (multipliers["head.weight"][:, :16] == 1).all()
    layer = lr_multipliers(model, masks, scope="layer", include_head=True)["head.weight"]
    w, mk = params["head.weight"].detach(), masks["head.weight"]
    assert layer[0, 20].item() == pytest.approx(float(w[mk == 2].norm() / w[mk == 0].norm()), rel=1e-5)
    with pytest.raises(ValueError, match="scope"):
        lr_multipliers(model, masks, scope="unit", include_head=True)


def test_stage_multipliers_report_every_stage():
    model = trained_like(ResNet20, (4, 8, 16))
    masks = initial_stage_masks(model)
    for stage, widths in enumerate([(6, 10, 20), (8, 12, 24)], start=1):
        model, step = grow_(model, widths, "variance_transfer", gen(stage))
        masks = extend_stage_masks(masks, model, step, stage)
    multipliers = lr_multipliers(model, masks, scope="global", include_head=True)
    head = multipliers["head.weight"][0]
    assert stage_multipliers(model, masks, multipliers, include_head=True) == pytest.approx(
        [1.0, float(head[16]), float(head[20])])
    assert float(head[16]) != float(head[20])  # two stages, two different multipliers
    assert stage_multipliers(model, masks, {}, include_head=True) == [1.0, 1.0, 1.0]


def test_vt_lr_compensation_is_s_squared_on_rescaled_entries_cumulative_over_growths():
    model = trained_like(ResNet20, (4, 8, 16))
    factors = {}
    mid, steps = model, []
    for widths in [(6, 10, 20), (8, 12, 24)]:
        mid, step = grow_(mid, widths, "variance_transfer", gen(1), variance_factor="linear", base_widths=(4, 8, 16))
        factors = extend_lr_compensation(factors, mid, step)
        steps.append(step)
    name = "stages.1.1.conv1.weight"  # fan-in 8 -> 10 -> 12: s = 8/10, then 10/12
    f = factors[name]
    assert steps[0].bn_scale[name] == pytest.approx(0.8) and steps[1].bn_scale[name] == pytest.approx(10 / 12)
    assert torch.allclose(f[:8, :8], torch.full_like(f[:8, :8], (0.8 * 10 / 12) ** 2))  # rescaled twice
    assert torch.allclose(f[:10, 8:10], torch.full_like(f[:10, 8:10], (10 / 12) ** 2))  # born at growth 1
    assert (f[:, 10:] == 1).all() and (f[10:] == 1).all()  # born at growth 2: not rescaled
    assert "head.weight" not in factors and "stem.weight" not in factors  # never rescaled
    _, plain = grow_(model, (6, 10, 20), "random", gen(1))
    assert plain.bn_scale == {} and extend_lr_compensation({}, mid, plain) == {}


def test_compensated_lr_keeps_the_relative_step_of_a_bn_normalised_layer():
    """conv + BN is invariant to the conv's scale (up to BN's eps, tiny here): w -> s w with lr -> s^2 lr moves
    to exactly s x the unscaled layer's new weights."""
    x, s = torch.randn(8, 3, 6, 6, generator=gen(0), dtype=torch.float64), 0.6  # BN eps ~0: exactly invariant
    layers = []
    for scale, lr in ((1.0, 0.1), (s, 0.1), (s, 0.1 * s * s)):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4, eps=1e-30, affine=False)).double()
        with torch.no_grad():
            net[0].weight.mul_(scale)
        w0 = net[0].weight.detach().clone()
        optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
        (net(x) ** 3).mean().backward()
        scaled_step(optimizer, net, {"0.weight": torch.full_like(w0, lr / 0.1)})
        layers.append((w0, net[0].weight.detach()))
    (w, w1), (_, plain), (_, compensated) = layers
    assert torch.allclose(compensated, s * w1, atol=1e-12)  # the same relative step as unscaled
    assert not torch.allclose(plain, s * w1, atol=1e-3)     # uncompensated: 1/s^2 times the relative step


@pytest.mark.parametrize("make", [
    lambda ps, lr: torch.optim.SGD(ps, lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True),
    lambda ps, lr: torch.optim.AdamW(ps, lr=lr, weight_decay=1e-2)])
def test_scaled_step_is_a_per_entry_learning_rate(make):
    # a separable loss, so every entry's trajectory depends only on its own learning rate
    target = torch.randn(3, 4, generator=gen(0))
    runs = {}
    for key, lr in (("base", 0.1), ("fast", 0.25)):
        layer = nn.Linear(4, 3, bias=False)
        nn.init.zeros_(layer.weight)
        runs[key] = (layer, make(layer.parameters(), lr))
    layer = nn.Linear(4, 3, bias=False)
    nn.init.zeros_(layer.weight)
    optimizer = make(layer.parameters(), 0.1)
    multipliers = {"weight": torch.tensor([[1.0, 1.0, 2.5, 2.5]]).expand(3, 4)}
    for _ in range(4):
        for lay, opt in [*runs.values(), (layer, optimizer)]:
            opt.zero_grad()
            ((lay.weight - target) ** 2).sum().backward()
            scaled_step(opt, lay, multipliers) if lay is layer else opt.step()
    assert torch.allclose(layer.weight[:, :2], runs["base"][0].weight[:, :2], atol=1e-6)
    assert torch.allclose(layer.weight[:, 2:], runs["fast"][0].weight[:, 2:], atol=1e-6)
    assert not torch.allclose(runs["base"][0].weight[:, 2:], runs["fast"][0].weight[:, 2:], atol=1e-3)


# ---------------------------------------------------------------- FLOPs

class TinyNet(nn.Module):
    """conv3x3 (3 -> w, no bias) on 8x8, global mean, linear w -> 2 (with bias)."""

    def __init__(self, widths):
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, widths[0], 3, padding=1, bias=False), nn.Linear(widths[0], 2)

    def forward(self, x):
        return self.head(self.conv(x).mean((2, 3)))


def test_schedule_flops_match_a_hand_count():
    forward = lambda w: 2 * (3 * 9) * w * 64 + 2 * w * 2  # conv: 2*k*k*C_in per output; head (no bias adds)
    out = schedule_flops(TinyNet, [(2,), (4,)], [1, 2], samples_per_epoch=10, input_shape=(3, 8, 8))
    assert out["stage_forward_flops"] == [forward(2), forward(4)] == [6920, 13840]
    assert out["total"] == 3 * 10 * (1 * 6920 + 2 * 13840) == 1_038_000
    assert out["full_width_total"] == 3 * 10 * 3 * 13840
    assert out["fraction"] == pytest.approx(1_038_000 / 1_245_600)
    with pytest.raises(ValueError, match="stage lengths"):
        schedule_flops(TinyNet, [(2,)], [1, 2], 10)


def test_resnet20_schedule_costs_a_fraction_of_full_width():
    schedule = GrowthSchedule((16, 32, 64), total_epochs=160, **PAPER_SCHEDULE)
    out = schedule_flops(lambda w: build_model("resnet20", 10, w, generator=gen(0)), schedule.stage_widths(),
                         schedule.stage_epochs(), samples_per_epoch=50_000)
    assert out["stage_forward_flops"][-1] == out["full_width_total"] // (3 * 160 * 50_000)
    assert all(b >= a for a, b in zip(out["stage_forward_flops"], out["stage_forward_flops"][1:]))
    assert 0.3 < out["fraction"] < 0.8


def test_lr_multipliers_leave_out_parameters_without_grown_entries():
    model = trained_like(ResNet20, (4, 8, 16))
    masks = initial_stage_masks(model)
    assert multipliers_of(model, masks) == {}  # nothing grown yet: plain steps
    model, step = grow_(model, (4, 10, 20), "random", gen(1))  # stage 0's stream (4 wide) does not grow
    masks = extend_stage_masks(masks, model, step, 1)
    multipliers = lr_multipliers(model, masks, scope="global", include_head=True)
    assert "stem.weight" not in multipliers and "head.weight" in multipliers
    without_head = lr_multipliers(model, masks, scope="global", include_head=False)  # the head keeps multiplier 1
    assert "head.weight" not in without_head and "head.bias" not in without_head
    assert without_head.keys() == multipliers.keys() - {"head.weight", "head.bias"}


def test_a_short_growth_run_wires_every_piece_together():
    """The loop experiment 3 runs: grow at the scheduled epochs, carry the optimizer, adapt the LRs."""
    schedule = GrowthSchedule((8, 16, 32), total_epochs=4, num_growths=3, start_fraction=0.25, growth_ratio=None,
                              stage_length_ratio=1.0)
    widths = schedule.stage_widths()
    model = build_model("resnet20", 10, widths[0], generator=gen(0))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=schedule.total_epochs)
    masks, data = initial_stage_masks(model), gen(11)
    for epoch in range(schedule.total_epochs):
        stage = schedule.stage_at(epoch)
        if model.widths != widths[stage]:
            new, step = grow_(model, widths[stage], "variance_transfer", gen(100 + stage), base_widths=widths[0])
            carry_optimizer_state(optimizer, model, new, step, rescale_state=method().rescale_state)
            model, masks = new, extend_stage_masks(masks, new, step, stage)
        multipliers = multipliers_of(model, masks)
        model.train()
        for _ in range(2):
            loss = nn.functional.cross_entropy(model(torch.randn(8, 3, 32, 32, generator=data)),
                                               torch.randint(10, (8,), generator=data))
            optimizer.zero_grad()
            loss.backward()
            scaled_step(optimizer, model, multipliers)
            assert torch.isfinite(loss)
        scheduler.step()
    assert model.widths == (8, 16, 32) and int(masks["head.weight"].max()) == 3
    assert schedule.growth_epochs() == [1, 2, 3]
    assert count(model) == count(build_model("resnet20", 10, (8, 16, 32)))
