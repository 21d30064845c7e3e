"""EDBA: closed-form last-layer gradients, vectorised subset scores, the argmin choice, batch-size bounds,
checkpoint round trip, determinism, the two ways of computing the training loss of a step, and bad settings."""
from __future__ import annotations

import copy
import functools
import io
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeline import config
from pipeline.errors import ConfigError
from pipeline.experiments.edba.method import (EDBA, EDBASampler, Selection, candidate_masks, edba_loss, gram,
                                              margin_losses, per_sample_last_layer_grads, subset_grad_norms)
from pipeline.experiments.edba.schema import EDBAConfig

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def paper_edba() -> EDBAConfig:
    """EDBA's settings of the paper profile of the repository's params.yaml (edba.edba)."""
    return config.load(ROOT / "params.yaml", "paper").settings("edba", "edba-cifar10-n100").edba


def edba_config(**changes) -> EDBAConfig:
    """The paper profile's EDBA settings with `changes` (validated). Tests pass every value their assertions rely
    on, so that they do not depend on what params.yaml says."""
    return EDBAConfig.model_validate({**paper_edba().model_dump(), **changes})


class TinyCNN(nn.Module):
    """The image-classifier interface: features(x) -> h [B, F], head = nn.Linear, model(x) = head(features(x))."""

    def __init__(self, classes: int = 5, width: int = 6, bias: bool = True):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.head = nn.Linear(4 * width, classes, bias=bias)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.features(x))


def batch(n=12, classes=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 6, 6, generator=g, dtype=dtype), torch.randint(0, classes, (n,), generator=g)


def autograd_per_sample(model, x, y):
    """Per-sample gradients of the head (W, b) flattened, by a loop over samples: [B, C*F + C]."""
    h = model.features(x)
    logits = model.head(h)
    params = [p for p in model.head.parameters()]
    rows = []
    for i in range(len(y)):
        grads = torch.autograd.grad(F.cross_entropy(logits[i:i + 1], y[i:i + 1]), params, retain_graph=True)
        rows.append(torch.cat([g.flatten() for g in grads]))
    return torch.stack(rows), h.detach(), logits.detach()


@pytest.fixture
def model64():
    torch.manual_seed(0)
    return TinyCNN().double()


# ---- closed form vs autograd ---------------------------------------------------------------------------------
def test_closed_form_per_sample_grads_match_autograd(model64):
    x, y = batch()
    ref, h, logits = autograd_per_sample(model64, x, y)
    D, H = per_sample_last_layer_grads(h, logits, y)
    closed = torch.cat([(D[:, :, None] * H[:, None, :]).flatten(1), D], dim=1)  # [d_i h_i^T, d_i]
    assert torch.allclose(closed, ref, atol=1e-6, rtol=0)
    assert torch.allclose(gram(D, H), ref @ ref.T, atol=1e-6, rtol=0)


def test_gram_without_bias_matches_autograd():
    torch.manual_seed(1)
    model = TinyCNN(bias=False).double()
    x, y = batch(seed=3)
    ref, h, logits = autograd_per_sample(model, x, y)
    assert torch.allclose(gram(*per_sample_last_layer_grads(h, logits, y), bias=False), ref @ ref.T, atol=1e-6)


# ---- vectorised subset scores vs brute force ------------------------------------------------------------------
def test_subset_scores_match_a_loop_over_subsets(model64):
    x, y = batch(n=10)
    ref, h, logits = autograd_per_sample(model64, x, y)
    K = gram(*per_sample_last_layer_grads(h, logits, y))
    masks = candidate_masks(10, 16, "uniform_size", 0.1, True, torch.Generator().manual_seed(5))
    of_mean, of_norms = subset_grad_norms(K, masks, "norm_of_mean"), subset_grad_norms(K, masks, "mean_of_norms")
    for k, m in enumerate(masks):
        g = ref[m]
        assert of_mean[k].item() == pytest.approx(g.mean(0).norm().item(), abs=1e-9)
        assert of_norms[k].item() == pytest.approx(g.norm(dim=1).mean().item(), abs=1e-9)
    assert not torch.allclose(of_mean, of_norms)  # the two readings differ (mixed directions cancel in the mean)


def test_candidate_masks_sizes_and_full_batch():
    g = torch.Generator().manual_seed(0)
    masks = candidate_masks(50, 200, "uniform_size", 0.2, True, g)
    sizes = masks.sum(1)
    assert masks.shape == (200, 50) and masks[0].all()
    assert sizes.min() >= 10 and sizes.max() <= 50 and len(sizes.unique()) > 20  # sizes spread over [10, 50]
    bern = candidate_masks(10, 500, "bernoulli", 0.1, False, g)
    assert (bern.sum(1) >= 1).all() and not bern.all(1).all()


@pytest.mark.parametrize("subset_sizes", ["uniform_size", "bernoulli"])
def test_candidates_never_go_below_min_batch(subset_sizes):
    g = torch.Generator().manual_seed(0)
    for B in (10, 11, 12, 20, 30):  # B near min_batch: ceil(0.1 B) would allow subsets of 1-3 rows
        sizes = candidate_masks(B, 400, subset_sizes, 0.1, False, g, min_size=10).sum(1)
        assert sizes.min() >= 10 and sizes.max() <= B
        if subset_sizes == "uniform_size":
            assert set(sizes.tolist()) == set(range(10, B + 1))  # still uniform over what is allowed
    assert candidate_masks(6, 50, subset_sizes, 0.1, False, g, min_size=10).all()  # B < min_batch: all of it
    at_max = candidate_masks(1000, 200, subset_sizes, 0.1, False, g, min_size=10).sum(1)
    low = 100 if subset_sizes == "uniform_size" else 10  # ceil(0.1 * 1000) rules at the top of the range
    assert at_max.min() >= low and at_max.max() <= 1000 and (at_max < 1000).any()


@pytest.mark.parametrize("B", [12, 20, 1000])
def test_chosen_subset_has_at_least_min_batch_rows(B):
    """Through EDBA.select: every candidate it scored (replayed from its generator) and the chosen one."""
    cfg = edba_config(min_batch=10, max_batch=1000, num_candidates=64, include_full_batch=False,
                      subset_sizes="uniform_size", min_subset_frac=0.1)
    edba = EDBA(cfg, torch.Generator().manual_seed(3), min(B, 100))
    g = torch.Generator().manual_seed(B)
    for step in range(6):
        h, logits = torch.randn(B, 8, generator=g), torch.randn(B, 5, generator=g)
        y = torch.randint(0, 5, (B,), generator=g)
        replay = torch.Generator()
        replay.set_state(edba.generator.get_state())
        chosen = edba.select(h, logits, y)
        if step == 0:  # the first step seeds the EMAs with the full batch and draws no candidates
            continue
        masks = candidate_masks(B, 64, cfg.subset_sizes, cfg.min_subset_frac, False, replay, cfg.min_batch)
        assert torch.equal(chosen.indices, masks[chosen.candidate].nonzero().squeeze(1))  # the replay is faithful
        assert masks.sum(1).min() >= max(10, math.ceil(0.1 * B)) and masks.sum(1).max() <= B
        assert 10 <= len(chosen.indices) <= B and chosen.kept_fraction >= 10 / B


def test_margin_guard_gives_no_nan():
    G = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    clamp, signed = margin_losses(torch.tensor(0.5, dtype=torch.float64), G, 0.5, 2.0, eps=1e-6, guard="clamp")
    assert torch.isfinite(clamp).all() and clamp[1] == 1.0  # 0 / eps - 1 -> |-1|
    assert clamp[0].item() == pytest.approx(1.0) and torch.equal(clamp, signed.abs())
    excl, _ = margin_losses(torch.tensor(0.5, dtype=torch.float64), G, 0.5, 2.0, eps=1e-6, guard="exclude")
    assert math.isinf(excl[1].item()) and excl[0] == clamp[0]
    # paper eq. (1) on plain numbers: dM = 0.3, dG = 0.2 -> |1.5 - 1| = 0.5, G above target G_ema + dM? no -> s < 0
    m, s = margin_losses(torch.tensor(1.3, dtype=torch.float64), torch.tensor([2.2], dtype=torch.float64), 1.0, 2.0)
    assert m.item() == pytest.approx(0.5) and s.item() == pytest.approx(-0.5)


# ---- the choice is the argmin of eq. (1) ----------------------------------------------------------------------
@pytest.mark.parametrize("grad_metric,model_metric", [("norm_of_mean", "batch"), ("mean_of_norms", "subset")])
def test_chosen_subset_is_the_argmin(model64, grad_metric, model_metric):
    cfg = edba_config(num_candidates=24, grad_metric=grad_metric, model_metric=model_metric,
                      subset_sizes="uniform_size", include_full_batch=True, min_batch=10, min_subset_frac=0.1,
                      denominator_guard="clamp", guard_eps=1e-6)
    edba = EDBA(cfg, torch.Generator().manual_seed(7), 16)
    x, y = batch(n=16)
    ref, h, logits = autograd_per_sample(model64, x, y)
    first = edba.select(h, logits, y)
    assert first.kept_fraction == 1.0 and math.isnan(first.margin)  # no EMA yet: the full batch seeds it
    edba.model_ema, edba.grad_ema = edba.model_ema * 1.1, edba.grad_ema * 0.8  # a history to compare with
    M_ema, G_ema = edba.model_ema, edba.grad_ema
    replay = torch.Generator()
    replay.set_state(edba.generator.get_state())
    chosen = edba.select(h, logits, y)
    masks = candidate_masks(16, 24, "uniform_size", 0.1, True, replay, 10)
    losses = F.cross_entropy(logits, y, reduction="none")
    brute = []
    for m in masks:  # eq. (1) one subset at a time from the autograd per-sample gradients
        G = ref[m].mean(0).norm() if grad_metric == "norm_of_mean" else ref[m].norm(dim=1).mean()
        M = losses[m].mean() if model_metric == "subset" else losses.mean()
        brute.append(abs((M - M_ema) / (G - G_ema) - 1).item())
    best = min(range(len(brute)), key=brute.__getitem__)
    assert chosen.candidate == best and chosen.margin == pytest.approx(brute[best], rel=1e-9)
    assert torch.equal(chosen.indices, masks[best].nonzero().squeeze(1))
    assert chosen.kept_fraction == masks[best].sum().item() / 16


# ---- batch-size rule ------------------------------------------------------------------------------------------
def fake(signed: float, kept: float = 0.5) -> Selection:
    return Selection(torch.arange(3), abs(signed), signed, 1.0, 1.0, kept, 1)


@pytest.mark.parametrize("rule", ["margin", "kept_fraction"])
def test_batch_size_stays_in_bounds(rule):
    cfg = edba_config(batch_rule=rule, window=3, factor=1.7, min_batch=10, max_batch=1000, margin_tolerance=0.5,
                      kept_low=0.5, kept_high=0.9)
    edba = EDBA(cfg, torch.Generator(), 100)
    grow, shrink = (fake(5.0, 1.0), fake(-5.0, 0.1))
    sizes = [edba.update_batch_size(grow) for _ in range(60)]
    assert max(sizes) == 1000 and sizes[-1] == 1000 and sizes[2] == 170 and sizes[1] == 100  # a decision every 3
    sizes = [edba.update_batch_size(shrink) for _ in range(60)]
    assert min(sizes) == 10 and sizes[-1] == 10
    g = torch.Generator().manual_seed(0)
    for _ in range(300):  # random walk: never outside [10, 1000]
        s = (torch.rand(1, generator=g).item() - 0.5) * 4
        assert 10 <= edba.update_batch_size(fake(s, torch.rand(1, generator=g).item())) <= 1000


def test_batch_size_keeps_within_tolerance():
    edba = EDBA(edba_config(batch_rule="margin", window=4, margin_tolerance=0.5), torch.Generator(), 100)
    for s in [0.4, -0.3, 3.0, 0.1, 0.2, -0.45, -4.0, 0.0]:  # medians 0.25 and -0.15: inside the tolerance
        edba.update_batch_size(fake(s))
    assert edba.batch_size == 100


# ---- state, determinism, the policy in a loop -----------------------------------------------------------------
def run_steps(sampler, model, steps, seed0=100):
    out = []
    for k in range(steps):
        x, y = batch(n=sampler.batch_size(), seed=seed0 + k, dtype=torch.float32)
        with torch.no_grad():
            h = model.features(x)
            rows = sampler.select(h, model.head(h), y)
        s = sampler.last
        out.append((rows.tolist(), s.margin, s.grad_metric, sampler.batch_size()))
    return out


def test_state_dict_round_trip_gives_identical_next_selections():
    torch.manual_seed(0)
    model = TinyCNN()
    cfg = edba_config(batch_rule="margin", window=2, margin_tolerance=0.0)  # decisions happen within the test
    a = EDBASampler(cfg, torch.Generator().manual_seed(1), 20)
    run_steps(a, model, 5)
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    expected = run_steps(a, model, 8, seed0=200)
    b = EDBASampler(cfg, torch.Generator().manual_seed(999), 20)
    buffer.seek(0)
    b.load_state_dict(torch.load(buffer, weights_only=False))
    assert run_steps(b, model, 8, seed0=200) == expected
    assert len({e[3] for e in expected}) > 1  # the batch size did change: its state was exercised
    with pytest.raises(ValueError, match="different EDBAConfig"):  # another setting
        EDBASampler(edba_config(batch_rule="margin", window=3, margin_tolerance=0.0), torch.Generator(),
                    20).load_state_dict(a.state_dict())
    with pytest.raises(ValueError, match="different EDBAConfig"):  # another initial batch (train.batch_size)
        EDBASampler(cfg, torch.Generator(), 30).load_state_dict(a.state_dict())


def test_same_seed_same_selections_other_seed_differs():
    torch.manual_seed(0)
    model = TinyCNN()
    runs = [run_steps(EDBASampler(edba_config(), torch.Generator().manual_seed(s), 30), model, 6)
            for s in (3, 3, 4)]
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_edba_loss_shared_and_two_pass():
    torch.manual_seed(0)
    model = TinyCNN().double().train()
    x, y = batch(n=20, seed=1)
    for forward in ("two_pass", "shared"):  # edba_loss's default forward is the config's
        cfg = edba_config(include_full_batch=False, min_batch=10, forward=forward)
        sampler = EDBASampler(cfg, torch.Generator().manual_seed(0), 20)
        loss, rows = edba_loss(model, x, y, sampler)  # first step keeps everything: exactly the baseline loss
        assert len(rows) == 20 and loss.item() == pytest.approx(F.cross_entropy(model(x), y).item(), rel=1e-12)
    sampler.edba.model_ema -= 0.05  # a history (dM != 0, else every candidate's margin is |0 - 1|)
    sampler.edba.grad_ema *= 0.5
    state = copy.deepcopy(sampler.state_dict())
    twin = copy.deepcopy(model)
    loss2, rows2 = edba_loss(model, x, y, sampler, forward="two_pass")
    assert 0 < len(rows2) < 20
    assert loss2.item() == pytest.approx(F.cross_entropy(twin(x[rows2]), y[rows2]).item(), rel=1e-12)
    for b, t in zip(model.buffers(), twin.buffers()):  # the selection pass left BN running stats untouched
        assert torch.equal(b, t)
    loss2.backward()
    assert model.head.weight.grad is not None
    # shared: the same state chooses from one forward over the whole batch, and the loss is the kept rows' mean
    sampler.load_state_dict(state)
    twin = copy.deepcopy(model)
    loss3, rows3 = edba_loss(model, x, y, sampler, forward="shared")
    assert 0 < len(rows3) < 20
    per_sample = F.cross_entropy(twin(x), y, reduction="none")
    assert loss3.item() == pytest.approx(per_sample[rows3].mean().item(), rel=1e-12)
    with pytest.raises(ValueError, match="edba.forward"):
        edba_loss(model, x, y, sampler, forward="one_pass")


@pytest.mark.parametrize("forward", ["two_pass", "shared"])
def test_sampler_as_the_image_loop_policy(forward):
    from pipeline.train.image import ImageData, ImageLoop, IndexStream, train_epoch

    g = torch.Generator().manual_seed(0)
    n = 30
    data = ImageData(x=torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8),
                     y=torch.randint(0, 5, (n,), generator=g), global_index=torch.arange(n),
                     local_of=torch.arange(n), test_x=torch.zeros(1, 3, 8, 8, dtype=torch.uint8),
                     test_y=torch.zeros(1, dtype=torch.long), mean=torch.full((1, 3, 1, 1), 0.5),
                     std=torch.full((1, 3, 1, 1), 0.25), num_classes=5)
    torch.manual_seed(0)
    model = TinyCNN()
    cfg = edba_config(batch_rule="margin", window=2, margin_tolerance=0.0, forward=forward)
    policy = EDBASampler(cfg, torch.Generator().manual_seed(1), 12)
    seen = torch.zeros(n, dtype=torch.bool)
    stats = train_epoch(model, torch.optim.SGD(model.parameters(), lr=0.01), None, data,
                        IndexStream(data.global_index, torch.Generator().manual_seed(2)), policy,
                        ImageLoop(epochs=1, samples_per_epoch=120, eval_every=1, eval_batch=500, augment=False,
                                  forward_flops=1), torch.Generator(),
                        seen)
    row = policy.epoch_stats()
    drawn = round(row["edba_batch_mean"] * stats["steps"])
    assert stats["steps"] >= 2 and 0 < row["edba_kept_fraction"] <= 1 and seen.any()
    assert drawn >= 120 and row["edba_batch_min"] <= row["edba_batch_mean"] <= row["edba_batch_max"]
    assert stats["trained"] < drawn and math.isfinite(stats["train_loss"])  # some rows were dropped
    # the policy's cost, in forward passes: a no-grad selection pass + forward/backward of the kept rows (two_pass),
    # or forward/backward of the whole batch (shared)
    assert stats["flops"] == (drawn + 3 * stats["trained"] if forward == "two_pass" else 3 * drawn)
    assert row["edba_grad_metric"] > 0 and math.isfinite(row["edba_model_metric"])
    assert math.isnan(policy.epoch_stats()["edba_batch_mean"])  # the stats reset after each epoch


@pytest.mark.parametrize("key,value,message", [
    ("grad_metric", "sum", r"edba\.edba\.grad_metric: Input should be 'norm_of_mean' or 'mean_of_norms'"),
    ("factor", 1.0, r"edba\.edba\.factor: Input should be greater than 1"),
    ("num_candidate", 3, r"edba\.edba\.num_candidate: unknown key"),
    ("kept_low", 0.95, r"edba\.edba: kept_low 0\.95 is above kept_high"),
    ("denominator_guard", "ignore", r"edba\.edba\.denominator_guard"),
])
def test_bad_options_are_named(raw_params, key, value, message):
    """A bad EDBA setting (params.yaml edba.edba) is a one-line ConfigError naming its key path."""
    raw = copy.deepcopy(raw_params)
    raw["edba"]["edba"][key] = value
    with pytest.raises(ConfigError, match=message) as err:
        config.validate(raw, "paper")
    assert "\n" not in str(err.value)


def test_bad_profile_override_and_initial_batch_are_named(raw_params):
    raw = copy.deepcopy(raw_params)
    raw["edba"]["profiles"]["smoke"]["edba"]["window"] = 0  # a profile's override is validated in every profile
    with pytest.raises(ConfigError, match=r"edba\.edba\.window: .*\[profile smoke\]"):
        config.validate(raw, "paper")
    raw = copy.deepcopy(raw_params)
    raw["edba"]["train"]["batch_size"] = 5  # EDBA's initial batch, below edba.min_batch
    with pytest.raises(ConfigError, match="train.batch_size 5 .* is outside edba.min_batch..max_batch"):
        config.validate(raw, "paper")
    with pytest.raises(ValueError, match="initial batch 5 is outside"):  # the method's own guard
        EDBA(edba_config(min_batch=10, max_batch=1000), torch.Generator(), 5)
    with pytest.raises(ValueError, match="edba.grad_metric"):
        subset_grad_norms(torch.eye(3), torch.ones(1, 3, dtype=torch.bool), "sum")


# ---- the image loop's data drawing: the leak guard and batches larger than the subset -----------------------
def tiny_data(n_train: int, subset: list[int]):
    from pipeline.train.image import ImageData

    local_of = torch.full((n_train,), -1, dtype=torch.long)
    local_of[torch.tensor(subset)] = torch.arange(len(subset))
    k = len(subset)
    return ImageData(x=torch.zeros(k, 3, 8, 8, dtype=torch.uint8), y=torch.zeros(k, dtype=torch.long),
                     global_index=torch.tensor(subset), local_of=local_of,
                     test_x=torch.zeros(1, 3, 8, 8, dtype=torch.uint8), test_y=torch.zeros(1, dtype=torch.long),
                     mean=torch.zeros(1, 3, 1, 1), std=torch.ones(1, 3, 1, 1), num_classes=2)


def test_leak_guard_refuses_indices_outside_the_training_set():
    from pipeline.train.image import LeakError

    data = tiny_data(10, [2, 5, 9])  # 9 is in the subset, so a wrapped -1 would silently read it
    assert data.rows(torch.tensor([9, 2, 5])).tolist() == [2, 0, 1]
    with pytest.raises(LeakError, match=r"\[-1\] outside the training set of 10"):
        data.rows(torch.tensor([2, -1]))
    with pytest.raises(LeakError, match=r"\[10\] outside the training set of 10"):  # not a bare IndexError
        data.rows(torch.tensor([10, 5]))
    with pytest.raises(LeakError, match=r"\[3\] that are not in the run's subset"):
        data.rows(torch.tensor([5, 3]))


def test_a_batch_larger_than_the_subset_wraps_into_fresh_passes():
    from pipeline.train.image import IndexStream

    stream = IndexStream(torch.arange(100, 200), torch.Generator().manual_seed(0), "wrap")
    batch = stream.take(300)  # starts a pass: every sample exactly 3 times, one fresh permutation per pass
    assert torch.bincount(batch - 100, minlength=100).tolist() == [3] * 100
    assert not torch.equal(batch[:100], batch[100:200])
    stream.take(50)
    counts = torch.bincount(stream.take(300) - 100, minlength=100)  # straddles 4 passes: 2 to 4 copies
    assert counts.min() >= 2 and counts.max() <= 4 and counts.sum() == 300
    with pytest.raises(ValueError, match="oversize_batch"):
        IndexStream(torch.arange(10), torch.Generator(), "cap")

