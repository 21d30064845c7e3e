"""Experiment 2: Efficient Dynamic Batch Adaptation against a fixed batch on CIFAR subsets (NOTES.md section 3).

    params.yaml edba (variant `<method>-<dataset>-<subset>`, seed) + --data <prepared> --subsets <subsets>
        --> the seed's subset of the dataset (leak-guarded) and its test split
        --> PreResNet, SGD (constant lr, Nesterov), the variant's batch policy: FixedBatch (baseline) or EDBASampler
        --> pipeline.train.image.fit --> results/runs/edba/<variant>/seed<k>/{metrics.json, history.csv, config.json}

Both methods share everything but the policy: the model and its initialisation (seed only), the optimizer, the
augmentation, the data order stream and the training budget, counted in samples drawn per epoch, so that every
subset gets the same number of baseline steps per epoch (params.yaml edba.train.samples_per_epoch). The baseline
never constructs any EDBA object (tests/test_edba_experiment.py checks it), and its identity leaves EDBA's
settings out.

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

import torch

from ...models import build_model
from ...models.flops import conv_linear_flops
from ...seeding import generator
from ...train import image, runner
from ...train.image import ImageData
from ...train.jobs import Job
from .method import EDBASampler
from .schema import Settings

METRIC, MODE = "test_acc", "max"  # judged on final test accuracy (a fraction)


# ---------------------------------------------------------------------------------------------- building blocks
def samples_per_epoch(cfg: Settings, data: ImageData) -> int:
    """Samples drawn per epoch: the whole training set's size ("train_set"), the subset's ("subset"), or a number."""
    setting = cfg.train.samples_per_epoch
    if setting == "train_set":
        return len(data.local_of)  # N_train: local_of has one entry per training image of the dataset
    if setting == "subset":
        return len(data.y)
    return int(setting)


def build_policy(cfg: Settings, head: torch.nn.Linear, method_gen: torch.Generator):
    """The variant's batch policy. Baseline: FixedBatch(batch_size), untouched by EDBA. EDBA: EDBASampler starting
    at the same batch, its candidate subsets drawn from the seed's "method" generator."""
    if cfg.policy == "fixed":
        return image.FixedBatch(cfg.train.batch_size)
    return EDBASampler(cfg.edba, method_gen, cfg.train.batch_size, head_bias=head.bias is not None)


def build_optimizer(cfg: Settings, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Paper "Experiments": SGD, lr 0.001, Nesterov momentum 0.9, weight decay 1e-5 (L2 on every parameter)."""
    t = cfg.train
    return torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, nesterov=t.nesterov,
                           weight_decay=t.weight_decay)


# ---------------------------------------------------------------------------------------------- one run
def train(job: Job) -> dict:
    """Train one (variant, seed) and write its run files; returns the metrics."""
    cfg = job.settings
    spec = job.spec(METRIC, MODE)  # checks the data's kind and that this seed's subset file exists
    data = job.image_data(cfg.dataset, cfg.subset)  # this seed's subset + the test split, on the device
    run = job.start(spec)  # seeds the global RNG

    gens = runner.seed_generators(job.seed)  # data_order, augment, method: the same streams for both methods
    model = build_model(f"preresnet{cfg.model.depth}", data.num_classes, cfg.model.widths,
                        generator=generator(job.seed, "init"),  # the same init for baseline and EDBA
                        conv_init=cfg.model.conv_init).to(job.device)
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
        **({"forward": cfg.edba.forward} if cfg.policy == "edba" else {}),
    })
    return runner.finish_run(run)
