"""Experiment 2: Efficient Dynamic Batch Adaptation against a fixed batch on CIFAR subsets (NOTES.md section 3).

    params.edba + variant `<method>-<dataset>-<subset>` + seed
        --> the seed's subset of the dataset (leak-guarded) and its test split
        --> PreResNet, SGD (constant lr, Nesterov), the variant's batch policy: FixedBatch (baseline) or EDBASampler
        --> pipeline.train.image.fit --> results/runs/edba/<variant>/seed<k>/{metrics.json, history.csv, config.json}

Both methods share everything but the policy: the model and its initialisation (seed only), the optimizer, the
augmentation, the data order stream and the training budget, counted in samples drawn per epoch, so that every
subset gets the same number of baseline steps per epoch (params.yaml edba.train.samples_per_epoch). The baseline
never constructs any EDBA object (tests/test_edba_experiment.py checks it).

Leak guards (NOTES.md section 3: a 90% accuracy from 100 images is a bug until proven otherwise): every training
index a step draws goes through ImageData.rows, which refuses any index outside the run's subset; the number of
distinct training samples trained on is metrics.json `distinct_samples` (<= the subset size, in `extra`); only
image.evaluate reads the test split, and nothing else does; metrics.json has the final-epoch (`final`) and the
best-epoch (`best`) test accuracy, the latter chosen on the test split and so optimistic.

History adds per epoch, for EDBA: edba_batch_mean / _min / _max (drawn batch sizes), edba_kept_fraction,
edba_margin (median chosen margin loss), edba_model_metric and edba_grad_metric (means of the chosen M and G).
metrics.json extra: subset_size, train_set_size, samples_per_epoch, parameters, forward_flops, policy,
final_batch_size, and for EDBA its forward mode.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ..methods.edba import EDBAConfig, EDBASampler
from ..models.flops import conv_linear_flops
from ..schemas.edba import Edba, Resolved
from ..seeding import generator
from ..train import image, runner
from ..train.image import ImageData
from .common import build_model, image_data, spec_for

EXPERIMENT = "edba"


# ---------------------------------------------------------------------------------------------- identity
def describe(section: Edba, variant: str) -> dict:
    method, dataset, subset = section.split(variant)
    return {"method": method, "dataset": dataset, "subset": subset}


def check_data_settings(params, cfg: Resolved) -> None:
    """The dataset and subset exist in data.datasets; one line naming the key otherwise (before any training)."""
    datasets = params.data.datasets
    if cfg.dataset not in datasets:
        raise ValueError(f"edba.datasets: {cfg.dataset!r} is not in data.datasets ({', '.join(datasets)})")
    subsets = ["full", *(datasets[cfg.dataset].subsets or {})]
    if cfg.subset not in subsets:
        raise ValueError(f"edba.datasets.{cfg.dataset}.subsets: {cfg.subset!r} is not a subset of {cfg.dataset} "
                         f"({', '.join(dict.fromkeys(subsets))})")


# ---------------------------------------------------------------------------------------------- building blocks
def samples_per_epoch(cfg: Resolved, data: ImageData) -> int:
    """Samples drawn per epoch: the whole training set's size ("train_set"), the subset's ("subset"), or a number."""
    setting = cfg.train.samples_per_epoch
    if setting == "train_set":
        return len(data.local_of)  # N_train: local_of has one entry per training image of the dataset
    if setting == "subset":
        return len(data.y)
    return int(setting)


def build_policy(cfg: Resolved, head: torch.nn.Linear, method_gen: torch.Generator):
    """The variant's batch policy. Baseline: FixedBatch(batch_size), untouched by EDBA. EDBA: EDBASampler starting
    at the same batch, its candidate subsets drawn from the seed's "method" generator."""
    if cfg.policy == "fixed":
        return image.FixedBatch(cfg.train.batch_size)
    options = {**cfg.edba.model_dump(), "initial_batch": cfg.train.batch_size}
    try:
        edba_cfg = EDBAConfig.from_dict(options)
    except ValueError as err:
        raise ValueError(f"edba.method: {err}") from None
    return EDBASampler(edba_cfg, method_gen, head_bias=head.bias is not None)


def build_optimizer(cfg: Resolved, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Paper "Experiments": SGD, lr 0.001, Nesterov momentum 0.9, weight decay 1e-5 (L2 on every parameter)."""
    t = cfg.train
    return torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, nesterov=t.nesterov,
                           weight_decay=t.weight_decay)


# ---------------------------------------------------------------------------------------------- one run
def train(params, variant: str, seed: int, run_dir: Path, checkpoint_root: Path, device) -> dict:
    """Train one (variant, seed) and write its run files; returns the metrics."""
    section: Edba = params.edba
    cfg = section.resolve(variant)
    check_data_settings(params, cfg)
    spec = spec_for(params, EXPERIMENT, variant, seed, method=cfg.method, dataset=cfg.dataset, subset=cfg.subset,
                    config=cfg.model_dump(mode="json"))
    spec = dataclasses.replace(spec, target=cfg.target.model_dump())  # the dataset's own threshold
    data = image_data(params, cfg.dataset, cfg.subset, seed, device)  # this seed's subset + the test split
    run = runner.start_run(spec, run_dir, checkpoint_root, device)  # seeds the global RNG

    gens = runner.seed_generators(seed)  # data_order, augment, method: the same streams for both methods
    model = build_model(f"preresnet{cfg.model.depth}", data.num_classes, cfg.model.widths,
                        generator=generator(seed, "init")).to(device)  # same init for baseline and EDBA
    policy = build_policy(cfg, model.head, gens["method"])
    loop = image.ImageLoop(epochs=cfg.train.epochs, samples_per_epoch=samples_per_epoch(cfg, data),
                           eval_every=cfg.train.eval_every, eval_batch=cfg.train.eval_batch,
                           augment=cfg.train.augment, oversize_batch=cfg.train.oversize_batch,
                           forward_flops=conv_linear_flops(model))
    image.fit(run, model, build_optimizer(cfg, model), None, data, policy, loop, gens)

    run.extra.update({
        "subset_size": len(data.y),  # distinct_samples can never exceed it
        "train_set_size": len(data.local_of),
        "samples_per_epoch": loop.samples_per_epoch,
        "parameters": sum(p.numel() for p in model.parameters()),
        "forward_flops": loop.forward_flops,
        "policy": cfg.policy,
        "final_batch_size": policy.batch_size(),
        **({"forward": cfg.edba.forward} if cfg.edba else {}),
    })
    return runner.finish_run(run)
