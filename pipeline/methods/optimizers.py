"""The optimizers compared in experiment 4 (rapid-training survey, like for like), built by name.

    build_optimizer("nadam", model.parameters(), lr=2e-3)                  -> torch.optim.NAdam
    build_optimizer("kfac", model.parameters(), lr=0.05, model=model)      -> pipeline.methods.kfac.KFAC

PyTorch's own implementations wherever torch has the method; AdaBound / AMSBound from `pytorch-optimizer`
(its update is the authors' reference code, checked step by step in tests/test_optimizers.py); K-FAC from
pipeline/methods/kfac.py. The learning rate is not defaulted: every optimizer gets its own tuned lr from the
experiment's configuration. Every other hyper-parameter has a default below with its source; options given by
the caller override them (experiment 4 passes params.yaml's optimizers.optimizer_options, e.g. AdaBound's final_lr
and gamma, K-FAC's damping), except the keys that define the method (`sgd` cannot be given momentum: that is
`momentum`). Unknown names and options fail with a one-line ValueError before anything is built.

Weight decay defaults to 0 for every method but AdamW: like-for-like runs pass the same explicit regulariser
through `weight_decay`, and the optimizer papers' own defaults have none. Note the units differ: torch adds
weight_decay * w to the gradient (L2) for all methods here except AdamW, which shrinks w by lr * weight_decay.

AdaBound follows the authors' code (github.com/Luolc/AdaBound), which differs from Algorithm 2 of the paper
(Luo et al. 2019) in two ways the report should name: Adam's bias corrections are applied, and the clipped
step is not divided by sqrt(t) (the paper's sqrt(t) decay serves its convergence proof; its experiments used
the code). pytorch-optimizer additionally adds 1e-15 to v inside the square root (harmless against eps=1e-8).
"""
from __future__ import annotations

import inspect
from collections.abc import Iterable

import torch

# ---------------------------------------------------------------------------------------------------------------
# Configuration: method -> (class name, defaults, keys fixed by the method's identity)
# ---------------------------------------------------------------------------------------------------------------
ADAM_BETAS = (0.9, 0.999)  # Kingma & Ba 2015 §2 "good default settings"; shared by the Adam family for comparability

DEFAULTS: dict[str, dict] = {
    # plain mini-batch SGD: the baseline of the survey's figure, no momentum
    "sgd": dict(momentum=0.0, nesterov=False, weight_decay=0.0),
    # heavy-ball momentum 0.9: the value of the CIFAR ResNet recipes (He et al. 2016 §4.2)
    "momentum": dict(momentum=0.9, nesterov=False, weight_decay=0.0),
    # Nesterov momentum 0.9 (Sutskever et al. 2013 formulation, as torch implements it)
    "nesterov": dict(momentum=0.9, nesterov=True, weight_decay=0.0),
    # Adagrad: no initial accumulator, eps 1e-10 (Duchi et al. 2011 have none; torch's default guard)
    "adagrad": dict(lr_decay=0.0, initial_accumulator_value=0.0, eps=1e-10, weight_decay=0.0),
    # Adadelta: rho 0.95, eps 1e-6 (Zeiler 2012 §4 MNIST setting); the paper has no lr, i.e. lr = 1.0
    "adadelta": dict(rho=0.95, eps=1e-6, weight_decay=0.0),
    # RMSprop: decay 0.9 (Tieleman & Hinton 2012, lecture 6e), no momentum, uncentred
    "rmsprop": dict(alpha=0.9, eps=1e-8, momentum=0.0, centered=False, weight_decay=0.0),
    "adam": dict(betas=ADAM_BETAS, eps=1e-8, amsgrad=False, weight_decay=0.0),
    # AdamW: decoupled decay 1e-2 (torch's default; Loshchilov & Hutter 2019 tune it per task)
    "adamw": dict(betas=ADAM_BETAS, eps=1e-8, amsgrad=False, weight_decay=1e-2),
    # Adamax: Kingma & Ba 2015 §7.1 betas
    "adamax": dict(betas=ADAM_BETAS, eps=1e-8, weight_decay=0.0),
    # Nadam: momentum schedule psi = 0.004 (Dozat 2016, as in torch)
    "nadam": dict(betas=ADAM_BETAS, eps=1e-8, momentum_decay=4e-3, weight_decay=0.0),
    # AMSGrad: Adam with the running max of v (Reddi et al. 2018); Adam's betas for a like-for-like pair
    "amsgrad": dict(betas=ADAM_BETAS, eps=1e-8, amsgrad=True, weight_decay=0.0),
    # AdaBound / AMSBound: final_lr 0.1, gamma 1e-3 (the authors' code defaults, Luo et al. 2019); L2 weight decay
    # added to the gradient as in the authors' code (pytorch-optimizer's default would decouple it)
    "adabound": dict(final_lr=0.1, gamma=1e-3, betas=ADAM_BETAS, eps=1e-8, weight_decay=0.0,
                     weight_decouple=False, ams_bound=False),
    "amsbound": dict(final_lr=0.1, gamma=1e-3, betas=ADAM_BETAS, eps=1e-8, weight_decay=0.0,
                     weight_decouple=False, ams_bound=True),
    # K-FAC: defaults and their sources live in pipeline/methods/kfac.py (the constructor's keyword defaults)
    "kfac": dict(),
}

FIXED: dict[str, set[str]] = {  # options that would turn the method into another one
    "sgd": {"momentum", "nesterov"}, "momentum": {"nesterov"}, "nesterov": {"nesterov"},
    "adam": {"amsgrad"}, "adamw": {"amsgrad"}, "amsgrad": {"amsgrad"},
    "adabound": {"ams_bound"}, "amsbound": {"ams_bound"},
}

KNOWN = tuple(DEFAULTS)


def optimizer_class(name: str) -> type[torch.optim.Optimizer]:
    """The class that implements `name`; imports of pytorch-optimizer and K-FAC only when needed."""
    if name in ("sgd", "momentum", "nesterov"):
        return torch.optim.SGD
    if name in ("adam", "amsgrad"):
        return torch.optim.Adam
    if name in ("adabound", "amsbound"):
        from pytorch_optimizer import AdaBound

        return AdaBound
    if name == "kfac":
        from pipeline.methods.kfac import KFAC

        return KFAC
    return {"adagrad": torch.optim.Adagrad, "adadelta": torch.optim.Adadelta, "rmsprop": torch.optim.RMSprop,
            "adamw": torch.optim.AdamW, "adamax": torch.optim.Adamax, "nadam": torch.optim.NAdam}[name]


def _accepted_options(cls: type) -> set[str]:
    """Keyword options the class's constructor names (its **kwargs catch-all, if any, is not an option)."""
    parameters = inspect.signature(cls).parameters
    return {k for k, p in parameters.items() if k not in ("params", "lr") and p.kind is not p.VAR_KEYWORD}


def build_optimizer(name: str, params: Iterable, lr: float, **options) -> torch.optim.Optimizer:
    """An optimizer `name` over `params` at learning rate `lr`; `options` override the method's defaults.

    K-FAC needs the model to hook its layers: build_optimizer("kfac", params, lr, model=model, ...).
    """
    if name not in DEFAULTS:
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(KNOWN)}")
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not lr > 0:
        raise ValueError(f"optimizer {name!r}: lr must be a positive number, got {lr!r}")
    cls = optimizer_class(name)
    accepted = _accepted_options(cls)
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(f"optimizer {name!r} does not take option(s) {unknown}; it takes {sorted(accepted)}")
    fixed = sorted(set(options) & FIXED.get(name, set()))
    if fixed:
        raise ValueError(f"optimizer {name!r}: option(s) {fixed} are fixed by the method; pick another method name")
    if name == "kfac" and "model" not in options:
        raise ValueError("optimizer 'kfac' needs model=<the nn.Module whose layers it preconditions>")
    if "betas" in options:
        options["betas"] = tuple(options["betas"])  # YAML gives lists; torch expects a tuple
    return cls(params, lr=float(lr), **{**DEFAULTS[name], **options})
