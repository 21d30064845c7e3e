"""Word-level language-model training with truncated BPTT and a block size chosen per epoch by a schedule.

    batchify(train ids, batch) -> [T, B]; each epoch: reset the hidden state, walk the T axis in blocks of
    schedule.block_size(epoch, history) tokens, carrying the (detached) hidden state from block to block;
    validation perplexity over the whole validation set every epoch; test perplexity at the end.

The loss is the mean cross-entropy per token (so the block size does not change the step size by itself);
`loss_reduction: "sum_over_block"` multiplies it by the block length, which is the "summed over the unrolled
steps, averaged over the batch" reading of Zaremba et al. 2014 and of a block size that scales the step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .engine import Diverged, Run, check_finite


def batchify(tokens: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Cut a token stream into `batch_size` contiguous columns, dropping the remainder.

        tokens: a b c d e f g h i j k l m n o p q r s t u v w x y z   (N = 26, batch_size = 4)
        result [T = 6, B = 4]:   ┌ a g m s ┐
                                 │ b h n t │
                                 │ c i o u │   each column reads on where the one before it left off
                                 │ d j p v │   (y, z dropped: 26 is not a multiple of 4)
                                 │ e k q w │
                                 └ f l r x ┘
    """
    t = tokens.numel() // batch_size
    if t < 2:
        raise ValueError(f"{tokens.numel()} tokens are too few for batch size {batch_size}")
    return tokens[: t * batch_size].view(batch_size, t).t().contiguous()


def get_batch(source: torch.Tensor, i: int, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows i .. i+b-1 as input and rows i+1 .. i+b as targets, b = min(block, T-1-i).

        source [T, B] ──rows i..i+b-1──> x [b, B]
                      ──rows i+1..i+b──> y [b, B]   (the next token of every input token)
    """
    b = min(block, source.size(0) - 1 - i)
    return source[i:i + b], source[i + 1:i + 1 + b]


def detach_hidden(hidden):
    """Cut the graph between blocks (truncated BPTT) while keeping the hidden state's values."""
    return tuple(h.detach() for h in hidden)


@dataclass
class LMLoop:
    epochs: int
    batch_size: int
    clip_grad_norm: float | None  # gradient-norm clipping threshold (None: no clipping)
    loss_reduction: str = "mean"  # "mean" per token, or "sum_over_block" (mean x block length)
    eval_batch_size: int = 10  # the usual PTB evaluation batch
    eval_block: int = 35  # the evaluation block; every validation/test token is scored exactly once regardless
    flops_per_token: int = 0  # analytic training FLOPs per token


def train_epoch(model, source: torch.Tensor, block: int, optimizer, loop: LMLoop) -> dict:
    """One pass over the training columns with block size `block`; returns mean loss per token and tokens."""
    model.train()
    hidden = model.init_hidden(source.size(1))  # reset the hidden state at each epoch
    loss_sum, tokens = torch.zeros((), device=source.device), 0
    for i in range(0, source.size(0) - 1, block):
        x, y = get_batch(source, i, block)
        hidden = detach_hidden(hidden)  # carry state across blocks, not gradients
        logits, hidden = model(x, hidden)  # [b, B, V]
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))  # mean per token
        check_finite(loss)
        scaled = loss * x.size(0) if loop.loss_reduction == "sum_over_block" else loss
        optimizer.zero_grad(set_to_none=True)
        scaled.backward()
        if loop.clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), loop.clip_grad_norm)
        optimizer.step()
        loss_sum += loss.detach() * y.numel()
        tokens += y.numel()
    return {"train_loss": (loss_sum / tokens).item(), "tokens": tokens}


@torch.no_grad()
def evaluate(model, source: torch.Tensor, block: int) -> dict:
    """Mean loss and perplexity over every target token of `source` [T, B] exactly once."""
    model.eval()
    hidden = model.init_hidden(source.size(1))
    nll, tokens = 0.0, 0
    for i in range(0, source.size(0) - 1, block):
        x, y = get_batch(source, i, block)
        logits, hidden = model(x, hidden)
        nll += F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="sum").item()
        tokens += y.numel()
    loss = nll / tokens
    return {"loss": loss, "ppl": math.exp(min(loss, 700.0)), "tokens": tokens}


def load_tokens(prepared_dir, split: str, device) -> torch.Tensor:
    return torch.from_numpy(np.load(f"{prepared_dir}/{split}.npy").astype(np.int64)).to(device)


def fit(run: Run, model, optimizer, scheduler, schedule, data: dict, loop: LMLoop) -> None:
    """Train for loop.epochs. `data`: {"train", "valid", "test"} token tensors on the device.

    `schedule.block_size(epoch, history)` gives the epoch's block size (epoch is 0-based, history the rows so
    far); `scheduler` steps once per epoch (ReduceLROnPlateau gets the validation loss).
    """
    train = batchify(data["train"], loop.batch_size)
    valid = batchify(data["valid"], loop.eval_batch_size)
    test = batchify(data["test"], loop.eval_batch_size)
    objects = {"model": model, "optimizer": optimizer}
    if scheduler is not None:
        objects["scheduler"] = scheduler
    run.total_epochs = loop.epochs
    run.resume(objects)
    totals = {"samples": 0, "flops": 0} if not run.history else {k: run.history[-1][k] for k in ("samples", "flops")}
    while not run.done and run.epoch < loop.epochs:
        block = int(schedule.block_size(run.epoch, run.history))
        seconds_before = run.train_seconds
        try:
            with run.training():
                stats = train_epoch(model, train, block, optimizer, loop)
        except Diverged as err:
            run.mark_diverged(str(err), objects)
            break
        lr = optimizer.param_groups[0]["lr"]
        valid_eval = evaluate(model, valid, loop.eval_block)
        if scheduler is not None:
            is_plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
            scheduler.step(valid_eval["loss"]) if is_plateau else scheduler.step()
        last = run.epoch + 1 == loop.epochs
        totals = {"samples": totals["samples"] + stats["tokens"],
                  "flops": totals["flops"] + loop.flops_per_token * stats["tokens"]}
        row = {"train_loss": stats["train_loss"], "train_ppl": math.exp(min(stats["train_loss"], 700.0)),
               "valid_loss": valid_eval["loss"], "valid_ppl": valid_eval["ppl"], "lr": lr, "block_size": block,
               "tokens_per_s": stats["tokens"] / max(run.train_seconds - seconds_before, 1e-9), **totals}
        if last:
            row["test_ppl"] = evaluate(model, test, loop.eval_block)["ppl"]
        run.end_epoch(row, objects, done=last)
    run.distinct_samples = (train.size(0) - 1) * train.size(1) if run.history else 0
