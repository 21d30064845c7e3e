"""build_optimizer: every method builds with the settings experiment 4 gives it (params.yaml) and trains; it adds
nothing but the settings that define a method; AdaBound / AMSBound from pytorch-optimizer follow the published rule
step by step; bad names and options fail early."""
from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline import config
from pipeline.methods import OPTIMIZERS
from pipeline.methods.kfac import KFAC
from pipeline.methods.optimizers import build_optimizer, optimizer_class

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def _params_yaml():
    return config.load(ROOT / "params.yaml")


def experiment_options(name: str) -> dict:
    """Every setting but the lr that experiment 4 passes to optimizer `name` (its variant of that name): the L2 of
    optimizers.train.weight_decay and optimizers.optimizer_options.<name> (the code has no defaults of its own)."""
    settings = _params_yaml().settings("optimizers", name)
    assert settings.optimizer == name
    return settings.options()


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


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_reduces_the_training_loss(name):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 3, 6, 6, generator=g), torch.randint(0, 3, (32,), generator=g)
    model = TinyCNN()
    extra = {"model": model} if name == "kfac" else {}
    opt = build_optimizer(name, model.parameters(), lr=LRS[name], **experiment_options(name), **extra)
    first = None
    for _ in range(15):
        loss = F.cross_entropy(model(x), y)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert math.isfinite(loss.item()) and loss.item() < first


def _params():
    return [nn.Parameter(torch.zeros(2))]


def _classes():
    from pytorch_optimizer import AdaBound

    return {"sgd": torch.optim.SGD, "momentum": torch.optim.SGD, "nesterov": torch.optim.SGD,
            "adagrad": torch.optim.Adagrad, "adadelta": torch.optim.Adadelta, "rmsprop": torch.optim.RMSprop,
            "adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "adamax": torch.optim.Adamax,
            "nadam": torch.optim.NAdam, "amsgrad": torch.optim.Adam, "adabound": AdaBound, "amsbound": AdaBound,
            "kfac": KFAC}


# the settings that define a method: fixed by its name, whatever the caller passes
IDENTITY = {"sgd": {"momentum": 0.0, "nesterov": False}, "momentum": {"nesterov": False},
            "nesterov": {"nesterov": True}, "adam": {"amsgrad": False}, "adamw": {"amsgrad": False},
            "amsgrad": {"amsgrad": True}, "adabound": {"ams_bound": False}, "amsbound": {"ams_bound": True}}


def test_implementations_identity_and_the_experiments_settings_reach_the_optimizer():
    classes = _classes()
    assert set(classes) == set(OPTIMIZERS)
    for name in OPTIMIZERS:
        options = experiment_options(name)
        extra = {"model": nn.Linear(2, 2)} if name == "kfac" else {}
        opt = build_optimizer(name, _params(), lr=0.01, **options, **extra)
        assert type(opt) is classes[name] is optimizer_class(name), name
        group = opt.param_groups[0]
        assert group["lr"] == 0.01
        for key, value in IDENTITY.get(name, {}).items():
            assert group[key] == value, (name, key)
        for key, value in options.items():  # every setting params.yaml gives arrives as given
            where = group if key in group else vars(opt)  # K-FAC keeps its non-group settings as attributes
            assert where[key] == (tuple(value) if key == "betas" else value), (name, key)
    # caller options override the class's defaults; YAML lists become tuples
    opt = build_optimizer("momentum", _params(), lr=0.1, momentum=0.95, weight_decay=5e-4)
    assert opt.param_groups[0]["momentum"] == 0.95 and opt.param_groups[0]["weight_decay"] == 5e-4
    assert build_optimizer("adam", _params(), lr=0.1, betas=[0.8, 0.99]).param_groups[0]["betas"] == (0.8, 0.99)


@pytest.mark.parametrize("name", [n for n in OPTIMIZERS if n not in ("kfac", "nesterov")])
def test_options_not_given_are_the_classes_own(name):
    # the builder adds no value of its own besides the method's identity: every setting comes from the caller
    # (nesterov needs a momentum from its caller, and K-FAC every setting: neither builds bare)
    cls = optimizer_class(name)
    assert build_optimizer(name, _params(), lr=0.01).defaults == {**cls(_params(), lr=0.01).defaults,
                                                                    **IDENTITY.get(name, {})}


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
    # the experiment's settings (betas, eps, L2 coupled as in the authors' code), with a final_lr and a gamma that
    # put the three coordinates below, inside and above the bounds within three steps
    options = {**experiment_options(name), "final_lr": 0.1, "gamma": 0.5, "weight_decay": wd}
    (b1, b2), eps = options["betas"], options["eps"]
    x = nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = build_optimizer(name, [x], lr=0.01, **options, foreach=foreach)
    expected = adabound_by_hand(GRADS, LRS_RUN, wd, ams=name == "amsbound", b1=b1, b2=b2, eps=eps)
    for g, lr, want in zip(GRADS, LRS_RUN, expected):
        opt.param_groups[0]["lr"] = lr
        x.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        assert torch.allclose(x.detach(), torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-12), (x, want)


def test_adabound_first_step_by_hand_numbers():
    # t = 1: bounds [0.1 (1 - 1/1.5), 0.1 (1 + 1/0.5)] = [1/30, 0.3]; lr_1 / sqrt(v) = 0.1 / |g|; m = 0.1 g
    x = nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = build_optimizer("adabound", [x], lr=0.01, final_lr=0.1, gamma=0.5, betas=(0.9, 0.999), eps=1e-8)
    x.grad = torch.tensor(GRADS[0], dtype=torch.float64)
    opt.step()
    want = [1 - (1 / 30) * 10.0, 1 - 0.1 * 0.1, 1 - 0.3 * 0.001]  # lower-clipped, unclipped, upper-clipped
    assert torch.allclose(x.detach(), torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-8)
    # and AMSBound differs from AdaBound once v falls (step 2 of GRADS)
    ada, ams = adabound_by_hand(GRADS, LRS_RUN, 0.0, False), adabound_by_hand(GRADS, LRS_RUN, 0.0, True)
    assert ada[0] == ams[0] and abs(ada[1][1] - ams[1][1]) > 1e-6
