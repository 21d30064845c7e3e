"""train(job): one (variant, seed) of label smoothing, through the harness's image loop.

    --data <prepared> [--subsets <subsets>] --> the seed's (sub)set and the test split, on the device
        --> a CIFAR model, SGD at a constant lr, the batch policy below --> pipeline.train.image.fit
        --> results/runs/label_smoothing/<variant>/seed<k>/{metrics.json, history.csv, config.json}

Everything but the loss is the harness's: the data, the seeded streams (init, data order, augmentation), the
checkpoints (a killed run resumes), the run files the analysis reads.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.models import build_model
from pipeline.models.flops import conv_linear_flops
from pipeline.seeding import generator
from pipeline.train import image, runner
from pipeline.train.jobs import Job


class SmoothedBatch(image.FixedBatch):
    """A fixed batch whose loss is the cross-entropy against smoothed labels (smoothing 0: the baseline's)."""

    def __init__(self, batch_size: int, smoothing: float):
        super().__init__(batch_size)
        self.smoothing = smoothing

    def loss(self, model, x, y):
        # forward; mean cross-entropy against (1 - eps) one-hot + eps / classes; cost: forward + backward = 3 passes
        return F.cross_entropy(model(x), y, label_smoothing=self.smoothing), None, 3 * len(y)


def train(job: Job) -> dict:
    cfg = job.settings
    spec = job.spec(metric="test_acc", mode="max")  # the run's identity: settings, data digests, code digest
    data = job.image_data(cfg.dataset, cfg.subset)  # this seed's subset (leak-guarded) and the test split
    run = job.start(spec)  # seeds the global RNG; refuses to overwrite another configuration's results

    model = build_model(cfg.model.name, data.num_classes, cfg.model.widths,
                        generator=generator(job.seed, "init")).to(job.device)  # the init depends on the seed only
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.train.lr, momentum=cfg.train.momentum,
                                weight_decay=cfg.train.weight_decay)
    loop = image.ImageLoop(epochs=cfg.train.epochs, samples_per_epoch=cfg.train.samples_per_epoch or len(data.y),
                           eval_every=1, eval_batch=cfg.train.eval_batch, augment=cfg.train.augment,
                           forward_flops=conv_linear_flops(model))
    image.fit(run, model, optimizer, None, data, SmoothedBatch(cfg.train.batch_size, cfg.smoothing), loop,
              runner.seed_generators(job.seed))
    run.extra.update({"smoothing": cfg.smoothing, "subset_size": len(data.y)})
    return runner.finish_run(run)
