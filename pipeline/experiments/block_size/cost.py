"""Experiment 1's cost for the plan (pipeline/plan.py): the LSTM's FLOPs per token x the tokens trained.

    tokens per epoch = (rows - 1) x batch, rows = training tokens // batch   (lm.batchify: every row after the
                       first is a target once, whatever the block)
    train FLOPs      = lstm_lm.flops_per_token(train=True) x tokens per epoch x epochs   (= metrics train_flops)
    eval FLOPs       = forward FLOPs per token x (validation targets every epoch + test targets once)
"""
from __future__ import annotations

from ...plan import Cost, DataSize
from .schema import Settings

BLOCK_NOTE = ("FLOPs per token do not depend on the block, so every variant counts the same; a short block runs "
              "more sequential steps per token (fixed16: 16x fixed256's), which costs more time than FLOPs say, "
              "above all on a GPU")


def estimate(settings: Settings, sizes: dict[str, DataSize | None], kind: str) -> Cost | None:
    from ...models.lstm_lm import LSTMConfig, flops_per_token

    data = sizes.get(settings.dataset)
    if kind == "tune" or data is None:
        return None
    t = settings.train
    cfg = LSTMConfig(vocab_size=data.classes, **settings.model.model_dump())  # classes: the vocabulary
    if kind == "step":
        block = _first_block(settings)
        return Cost(flops_per_token(cfg, train=True) * block * t.batch_size, step=_step(settings, cfg, block))
    rows = min(data.train, t.train_tokens or data.train) // t.batch_size
    per_epoch = (rows - 1) * t.batch_size
    forward = flops_per_token(cfg, train=False)
    return Cost(train_flops=flops_per_token(cfg, train=True) * per_epoch * t.epochs,
                eval_flops=forward * ((data.valid - 1) * t.epochs + data.test - 1), notes=(BLOCK_NOTE,))


def _first_block(settings: Settings) -> int:
    from .schedule import build_schedule

    return build_schedule(settings.schedule.model_dump()).block_size(0, [])


def _step(settings: Settings, cfg, block: int):
    """step(device) -> one training step of the variant (lm.train_epoch over one block of random ids at the
    schedule's first block): forward, loss, backward, clip, the variant's optimizer."""
    def on(device):
        import torch

        from ...models.lstm_lm import LSTMLM
        from ...seeding import generator
        from ...train import lm
        from .train import build_loop, build_optimizer

        model = LSTMLM(cfg, generator(0, "init")).to(device)
        optimizer = build_optimizer(settings.train, model)
        ids = torch.randint(0, cfg.vocab_size, (block + 1, settings.train.batch_size),
                            generator=generator(0, "calibrate")).to(device)
        loop = build_loop(settings.train)
        return lambda: lm.train_epoch(model, ids, block, optimizer, loop)
    return on
