"""build_optimizer: every method builds with its documented defaults and trains; AdaBound / AMSBound from
pytorch-optimizer follow the published rule step by step; bad names and options fail early."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.methods.optimizers import KNOWN, build_optimizer


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))

    def forward(self, x):
        return self.body(x)


LRS = {"sgd": 0.1, "momentum": 0.05, "nesterov": 0.05, "adagrad": 0.05, "adadelta": 1.0, "rmsprop": 1e-2,
       "adam": 1e-2, "adamw": 1e-2, "adamax": 2e-2, "nadam": 1e-2, "amsgrad": 1e-2, "adabound": 1e-2,
       "amsbound": 1e-2, "kfac": 0.05}


@pytest.mark.parametrize("name", KNOWN)
def test_every_optimizer_reduces_the_training_loss(name):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 3, 6, 6, generator=g), torch.randint(0, 3, (32,), generator=g)
    model = TinyCNN()
    extra = {"model": model} if name == "kfac" else {}
    opt = build_optimizer(name, model.parameters(), lr=LRS[name], **extra)
    first = None
    for _ in range(15):
        loss = F.cross_entropy(model(x), y)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert math.isfinite(loss.item()) and loss.item() < first


def test_defaults_and_implementations():
    params = lambda: [nn.Parameter(torch.zeros(2))]  # noqa: E731
    from pytorch_optimizer import AdaBound

    expect = {  # name -> (class, {key: default})
        "sgd": (torch.optim.SGD, {"momentum": 0.0, "nesterov": False, "weight_decay": 0.0}),
        "momentum": (torch.optim.SGD, {"momentum": 0.9, "nesterov": False}),
        "nesterov": (torch.optim.SGD, {"momentum": 0.9, "nesterov": True}),
        "adagrad": (torch.optim.Adagrad, {"eps": 1e-10}),
        "adadelta": (torch.optim.Adadelta, {"rho": 0.95, "eps": 1e-6}),
        "rmsprop": (torch.optim.RMSprop, {"alpha": 0.9, "momentum": 0.0}),
        "adam": (torch.optim.Adam, {"betas": (0.9, 0.999), "amsgrad": False}),
        "adamw": (torch.optim.AdamW, {"weight_decay": 1e-2}),
        "adamax": (torch.optim.Adamax, {"betas": (0.9, 0.999)}),
        "nadam": (torch.optim.NAdam, {"momentum_decay": 4e-3}),
        "amsgrad": (torch.optim.Adam, {"amsgrad": True}),
        "adabound": (AdaBound, {"final_lr": 0.1, "gamma": 1e-3, "ams_bound": False, "weight_decouple": False}),
        "amsbound": (AdaBound, {"ams_bound": True}),
    }
    for name, (cls, defaults) in expect.items():
        opt = build_optimizer(name, params(), lr=0.01)
        assert type(opt) is cls, name
        group = opt.param_groups[0]
        assert group["lr"] == 0.01
        for key, value in defaults.items():
            assert group[key] == value, (name, key)
    # caller options override defaults; YAML lists become tuples
    opt = build_optimizer("momentum", params(), lr=0.1, momentum=0.95, weight_decay=5e-4)
    assert opt.param_groups[0]["momentum"] == 0.95 and opt.param_groups[0]["weight_decay"] == 5e-4
    assert build_optimizer("adam", params(), lr=0.1, betas=[0.8, 0.99]).param_groups[0]["betas"] == (0.8, 0.99)


def test_bad_names_and_options_fail_with_one_line_errors():
    p = [nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match=r"unknown optimizer 'adamm'; known: sgd, momentum, .*kfac"):
        build_optimizer("adamm", p, lr=0.1)
    with pytest.raises(ValueError, match=r"'adam' does not take option\(s\) \['momentum'\]"):
        build_optimizer("adam", p, lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match=r"'adabound' does not take option\(s\) \['bogus'\]"):
        build_optimizer("adabound", p, lr=0.1, bogus=1)  # AdaBound itself would swallow it in **kwargs
    with pytest.raises(ValueError, match=r"'sgd': option\(s\) \['momentum'\] are fixed"):
        build_optimizer("sgd", p, lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="needs model="):
        build_optimizer("kfac", p, lr=0.1)
    with pytest.raises(ValueError, match="lr must be a positive number"):
        build_optimizer("adam", p, lr=0.0)


# --- AdaBound / AMSBound against the rule, computed by hand --------------------------------------------------------
def adabound_by_hand(grads, lrs, wd, ams, base_lr=0.01, final_lr=0.1, gamma=0.5, b1=0.9, b2=0.999, eps=1e-8):
    """Luo et al. 2019 as in the authors' code, scalar by scalar: Adam moments; the step lr_t / (sqrt(v) + eps),
    lr_t = lr sqrt(1 - b2^t) / (1 - b1^t), clipped to [final(1 - 1/(gamma t + 1)), final(1 + 1/(gamma t))],
    final = final_lr * lr / base_lr, times m; L2 weight decay added to the gradient; AMSBound uses max(v)."""
    x, m, v, v_max, trajectory = [1.0, 1.0, 1.0], [0.0] * 3, [0.0] * 3, [0.0] * 3, []
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        final = final_lr * lr / base_lr
        lower, upper = final * (1 - 1 / (gamma * t + 1)), final * (1 + 1 / (gamma * t))
        step_size = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        for i in range(3):
            gi = g[i] + wd * x[i]
            m[i] = b1 * m[i] + (1 - b1) * gi
            v[i] = b2 * v[i] + (1 - b2) * gi * gi
            v_max[i] = max(v_max[i], v[i])
            denominator = math.sqrt(v_max[i] if ams else v[i]) + eps
            x[i] -= min(max(step_size / denominator, lower), upper) * m[i]
        trajectory.append(list(x))
    return trajectory


GRADS = [[100.0, 1.0, 0.01],  # step 1: clipped at the lower bound, inside, at the upper bound
         [0.5, 0.01, 0.01],   # v of the second coordinate falls, unclipped there: AMSBound keeps the max
         [0.5, -2.0, 0.01]]
LRS_RUN = [0.01, 0.01, 0.005]  # a scheduler halves lr before step 3: the bounds follow final_lr * lr / base_lr


@pytest.mark.parametrize("name", ["adabound", "amsbound"])
@pytest.mark.parametrize("wd", [0.0, 0.1])
@pytest.mark.parametrize("foreach", [False, True])
def test_adabound_follows_the_published_rule(name, wd, foreach):
    x = nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = build_optimizer(name, [x], lr=0.01, final_lr=0.1, gamma=0.5, weight_decay=wd, foreach=foreach)
    expected = adabound_by_hand(GRADS, LRS_RUN, wd, ams=name == "amsbound")
    for g, lr, want in zip(GRADS, LRS_RUN, expected):
        opt.param_groups[0]["lr"] = lr
        x.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        assert torch.allclose(x.detach(), torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-12), (x, want)


def test_adabound_first_step_by_hand_numbers():
    # t = 1: bounds [0.1 (1 - 1/1.5), 0.1 (1 + 1/0.5)] = [1/30, 0.3]; lr_1 / sqrt(v) = 0.1 / |g|; m = 0.1 g
    x = nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = build_optimizer("adabound", [x], lr=0.01, final_lr=0.1, gamma=0.5)
    x.grad = torch.tensor(GRADS[0], dtype=torch.float64)
    opt.step()
    want = [1 - (1 / 30) * 10.0, 1 - 0.1 * 0.1, 1 - 0.3 * 0.001]  # lower-clipped, unclipped, upper-clipped
    assert torch.allclose(x.detach(), torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-8)
    # and AMSBound differs from AdaBound once v falls (step 2 of GRADS)
    ada, ams = adabound_by_hand(GRADS, LRS_RUN, 0.0, False), adabound_by_hand(GRADS, LRS_RUN, 0.0, True)
    assert ada[0] == ams[0] and abs(ada[1][1] - ams[1][1]) > 1e-6
