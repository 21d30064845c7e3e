"""The optimizers compared in experiment 4 (rapid-training survey, like for like), built by name.

    build_optimizer("nadam", model.parameters(), lr=2e-3, betas=(0.9, 0.999), eps=1e-8, momentum_decay=4e-3)
    build_optimizer("kfac", model.parameters(), lr=0.05, model=model, momentum=0.9, ...)   -> methods.kfac.KFAC

PyTorch's own implementations wherever torch has the method; AdaBound / AMSBound from `pytorch-optimizer`
(its update is the authors' reference code, checked step by step in tests/test_optimizers.py); K-FAC from
pipeline/methods/kfac.py. Every setting is the caller's: the lr (experiment 4 tunes one per variant) and the
options (experiment 4 passes params.yaml's optimizers.optimizer_options, each value with its source there), except
the settings that define a method (IDENTITY: `sgd` cannot be given momentum: that is `momentum`). A setting the
caller leaves out takes the implementing class's own default where it has one; a class without one (K-FAC) needs
it. Unknown names and options, and missing ones, fail with a one-line ValueError before anything is built.

Note the units of weight decay differ: torch adds weight_decay * w to the gradient (L2) for all methods here except
AdamW, which shrinks w by lr * weight_decay.

AdaBound follows the authors' code (github.com/Luolc/AdaBound), which differs from Algorithm 2 of the paper
(Luo et al. 2019) in two ways the report should name: Adam's bias corrections are applied, and the clipped
step is not divided by sqrt(t) (the paper's sqrt(t) decay serves its convergence proof; its experiments used
the code). pytorch-optimizer additionally adds 1e-15 to v inside the square root (harmless against eps=1e-8).
"""
from __future__ import annotations

import inspect
from collections.abc import Iterable

import torch

from . import OPTIMIZERS

# The settings that define a method (they are not options: plain `sgd` with momentum would be `momentum`). Every
# other setting (betas, eps, momentum 0.9, AdaBound's final_lr, K-FAC's damping, ...) is given by the caller:
# experiment 4 passes params.yaml's optimizers.optimizer_options, each value with its source there.
IDENTITY: dict[str, dict] = {
    "sgd": dict(momentum=0.0, nesterov=False), "momentum": dict(nesterov=False), "nesterov": dict(nesterov=True),
    "adam": dict(amsgrad=False), "adamw": dict(amsgrad=False), "amsgrad": dict(amsgrad=True),
    "adabound": dict(ams_bound=False), "amsbound": dict(ams_bound=True),
}


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


def _required_options(cls: type) -> set[str]:
    """The options the class's constructor has no default for."""
    parameters = inspect.signature(cls).parameters
    return {k for k, p in parameters.items() if k not in ("params", "lr") and p.default is p.empty
            and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def build_optimizer(name: str, params: Iterable, lr: float, **options) -> torch.optim.Optimizer:
    """An optimizer `name` over `params` at learning rate `lr` with the settings `options` (see the module docstring).

    K-FAC needs the model to hook its layers: build_optimizer("kfac", params, lr, model=model, ...).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not lr > 0:
        raise ValueError(f"optimizer {name!r}: lr must be a positive number, got {lr!r}")
    cls = optimizer_class(name)
    accepted = _accepted_options(cls)
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(f"optimizer {name!r} does not take option(s) {unknown}; it takes {sorted(accepted)}")
    fixed = sorted(set(options) & set(IDENTITY.get(name, {})))
    if fixed:
        raise ValueError(f"optimizer {name!r}: option(s) {fixed} are fixed by the method; pick another method name")
    if name == "kfac" and "model" not in options:
        raise ValueError("optimizer 'kfac' needs model=<the nn.Module whose layers it preconditions>")
    missing = sorted(_required_options(cls) - set(options) - set(IDENTITY.get(name, {})))
    if missing:
        raise ValueError(f"optimizer {name!r} needs option(s) {missing}")
    if "betas" in options:
        options["betas"] = tuple(options["betas"])  # YAML gives lists; torch expects a tuple
    return cls(params, lr=float(lr), **{**IDENTITY.get(name, {}), **options})
