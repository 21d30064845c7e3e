"""Experiment 1: adaptive block size (truncated-BPTT length) for the word-level PTB LSTM language model.

    params.yaml block_size (variant, seed) + --data <prepared PTB> --> LSTM LM, optimizer, LR scheduler, block schedule
        --> pipeline.train.lm.fit --> results/runs/block_size/<variant>/seed<k>/{metrics.json, history.csv, ...}

Per epoch the loop records block_size, tokens_per_s, elapsed_seconds (training wall-clock), train and validation
loss/perplexity and lr; the last epoch adds test_ppl, the metric a run is judged on (lower is better).
Time-to-target is the first epoch whose valid_ppl reaches the section's target (per profile).

The variants of the grid (params.yaml) ask: does the paper's doubling schedule beat the fixed block of 16 it
was compared with (fixed16 vs doubling); is it the schedule or merely the long context (fixed256: fixed at the
largest block doubling reaches); do the other schedules the paper names do as well (linear, plateau); and does
the loss scale matter (doubling_sum: the summed-over-block reading, where a longer block also means a larger
step; realised as lr x block / 16, since under Adam a summed loss would change nothing).
Reference configurations (`reference:`, e.g. Zaremba et al. 2014's small non-regularised LSTM) run through the
same code by name, to check the harness against published numbers.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ...data.fetch import DataError
from ...models.lstm_lm import LSTMConfig, LSTMLM, flops_per_token
from ...seeding import generator
from ...train import lm, runner
from ...train.jobs import Job
from .schedule import build_schedule
from .schema import Train

METRIC, MODE = "test_ppl", "min"  # judged on final test perplexity


# ---------------------------------------------------------------------------------------------- building blocks
def build_optimizer(train: Train, model: torch.nn.Module) -> torch.optim.Optimizer:
    """torch's Adam or plain SGD (the paper names neither; see params.yaml for the choice and its reason)."""
    if train.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=train.lr, betas=tuple(train.adam_betas), eps=train.adam_eps,
                                weight_decay=train.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)


def build_lr_scheduler(train: Train, optimizer: torch.optim.Optimizer):
    """The per-epoch LR schedule; the loop steps ReduceLROnPlateau with the validation loss, others plainly."""
    s = train.lr_schedule
    if s.kind == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=s.factor, patience=s.patience,
                                                          threshold=s.threshold, threshold_mode="abs",
                                                          min_lr=s.min_lr)
    if s.kind == "decay":
        # lr of 0-based epoch e = lr * factor ** max(0, e + 1 - constant_epochs): one milestone per decayed epoch
        milestones = list(range(s.constant_epochs, train.epochs))
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=s.factor)
    return None


def build_loop(train: Train, flops: int = 0) -> lm.LMLoop:
    """The LM loop's settings from a resolved `train` (flops: analytic training FLOPs per token, for the log)."""
    return lm.LMLoop(epochs=train.epochs, batch_size=train.batch_size, clip_grad_norm=train.clip_grad_norm,
                     loss_reduction=train.loss_reduction, lr_block_scaling=train.lr_block_scaling,
                     lr_reference_block=train.lr_reference_block, eval_batch_size=train.eval_batch_size,
                     eval_block=train.eval_block, flops_per_token=flops)


def load_data(prepared: Path, train_tokens: int | None, device) -> dict[str, torch.Tensor]:
    """{"train", "valid", "test"}: int64 token ids on `device`; train cut to its first `train_tokens` if set."""
    data = {split: lm.load_tokens(prepared, split, device) for split in ("train", "valid", "test")}
    if train_tokens is not None:
        if train_tokens > data["train"].numel():
            raise DataError(f"block_size.train.train_tokens: {train_tokens} exceeds the {data['train'].numel()} "
                            f"training tokens of {prepared}")
        data["train"] = data["train"][:train_tokens]
    return data


def vocab_size(prepared: Path) -> int:
    with open(Path(prepared) / "vocab.txt", encoding="utf-8") as f:
        return sum(1 for _ in f)


# ---------------------------------------------------------------------------------------------- one run
def train(job: Job) -> dict:
    """Train one (variant, seed) and write its run files; returns the metrics."""
    cfg = job.settings
    prepared = job.prepared(cfg.dataset)  # the --data folder; its kind is checked against the profile
    spec = job.spec(METRIC, MODE)
    run = job.start(spec)  # seeds the global RNG (dropout)

    model_cfg = LSTMConfig(vocab_size=vocab_size(prepared), **cfg.model.model_dump())
    model = LSTMLM(model_cfg, generator(job.seed, "init")).to(job.device)  # the init depends on the seed only
    optimizer = build_optimizer(cfg.train, model)
    scheduler = build_lr_scheduler(cfg.train, optimizer)
    schedule = build_schedule(cfg.schedule.model_dump())
    data = load_data(prepared, cfg.train.train_tokens, job.device)  # the text is read in order: no data_order RNG
    loop = build_loop(cfg.train, flops_per_token(model_cfg, train=True))

    lm.fit(run, model, optimizer, scheduler, schedule, data, loop)

    last = run.history[-1] if run.history else {}
    run.extra.update({
        "final_valid_ppl": last.get("valid_ppl"),
        "best_valid_ppl": min((r["valid_ppl"] for r in run.history), default=None),
        "largest_block": max((r["block_size"] for r in run.history), default=None),
        "train_tokens_per_epoch": int(lm.batchify(data["train"], loop.batch_size)[1:].numel()),
        "parameters": sum(p.numel() for p in model.parameters()),
    })
    return runner.finish_run(run)
