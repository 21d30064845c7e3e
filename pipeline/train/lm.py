"""Word-level language-model training with truncated BPTT and a block size chosen per epoch by a schedule.

    batchify(train ids, batch) -> [T, B]; each epoch: reset the hidden state, walk the T axis in blocks of
    schedule.block_size(epoch, history) tokens, carrying the (detached) hidden state from block to block;
    validation perplexity every epoch and test perplexity at the end, over eval_streams(ids, eval_batch):
    every token after the first of the split is a target exactly once (N tokens -> N - 1 targets).

The loss is the mean cross-entropy per token (so the block size does not change the step size by itself).
Two ways to let the block scale the step, kept apart because they differ under Adam:
  loss_reduction "sum_over_block"  the mean times the block length ("summed over the unrolled steps, averaged
                                   over the batch", Zaremba et al. 2014). Under SGD the step grows with the
                                   block, and so does the gradient norm the clip sees; under Adam, which
                                   divides by the gradient's running scale, it is (nearly) inert, so the
                                   schema refuses it with Adam.
  lr_block_scaling "linear"        the epoch's lr times block / lr_reference_block, the loss left per token:
                                   the step grows with the block under any optimizer. The clip sees the
                                   per-token norm, so this equals SGD on the summed loss with a clip threshold
                                   that grows with the block too. The LR scheduler only ever sees the base lr.
The run's speed options (pipeline/train/speed.py) set the forward's autocast and the grad scaler (channels-last is
for CNNs only); with them off it is the plain fp32 step.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .engine import Diverged, Run, check_finite
from .speed import FP32, Speedup, for_run


PAD = -1  # eval_streams' filler after the end of a short stream: never an input that matters, never a target


def batchify(tokens: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Training columns: cut a token stream into `batch_size` contiguous columns, dropping the remainder.

    Training only: the dropped remainder (< batch_size tokens) and the first token of every column (never a
    target) do not matter for training; evaluation uses eval_streams, which loses nothing.

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


def eval_streams(tokens: torch.Tensor, streams: int) -> torch.Tensor:
    """Evaluation columns that overlap by one token, so every token after the first is a target exactly once.

    The N - 1 targets (tokens 1 .. N-1) are split into `streams` runs whose lengths differ by at most one; a
    column holds its run's targets plus the token before them (the input of its first target), so column j
    starts with the last target of column j-1. Short columns are filled with PAD at the end (masked out).

        tokens: a b c d e f g h i j k l m n   (N = 14, streams = 4: 13 targets -> runs of 4, 3, 3, 3)
        result [T = 5, B = 4]:   ┌ a e h k ┐
                                 │ b f i l │   column j starts where column j-1 ends (e, h, k twice:
                                 │ c g j m │   a target of one column, the first input of the next)
                                 │ d h k n │
                                 └ e . . . ┘   . = PAD
    Each column starts from a zero hidden state, as every batched PTB evaluation does.
    """
    n = tokens.numel()
    if n < 2:
        raise ValueError(f"{n} tokens are too few to evaluate (need at least 2)")
    q, r = divmod(n - 1, streams)
    lengths = [q + 1] * r + [q] * (streams - r)  # targets per column
    out = tokens.new_full((max(lengths) + 1, streams), PAD)
    start = 0
    for j, length in enumerate(lengths):
        out[: length + 1, j] = tokens[start: start + length + 1]
        start += length
    return out


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
    loss_reduction: str  # "mean" per token, or "sum_over_block" (mean x block length; SGD only)
    lr_block_scaling: str  # "none", or "linear": the epoch's lr x block / lr_reference_block
    lr_reference_block: int  # the block at which the configured lr applies unscaled
    eval_batch_size: int  # evaluation streams (eval_streams); every token after the first scored once
    eval_block: int  # the evaluation chunk; it changes nothing but speed (state carries across chunks)
    flops_per_token: int = 0  # analytic training FLOPs per token (0: not counted)


def lr_factor(loop: LMLoop, block: int) -> float:
    """How much the epoch's lr is multiplied by at block size `block` (1 unless lr_block_scaling is linear)."""
    return block / loop.lr_reference_block if loop.lr_block_scaling == "linear" else 1.0


@contextmanager
def scaled_lr(optimizer, factor: float):
    """Multiply every param group's lr by `factor` inside the `with`, restoring the base lr afterwards (also on
    divergence), so the LR scheduler and the checkpoint only ever see the unscaled lr."""
    base = [group["lr"] for group in optimizer.param_groups]
    for group, lr in zip(optimizer.param_groups, base):
        group["lr"] = lr * factor
    try:
        yield
    finally:
        for group, lr in zip(optimizer.param_groups, base):
            group["lr"] = lr


def train_epoch(model, source: torch.Tensor, block: int, optimizer, loop: LMLoop, speedup: Speedup = FP32,
                progress=None) -> dict:
    """One pass over the training columns with block size `block`; returns mean loss per token and tokens.

    The lr is lr_factor(loop, block) times the optimizer's for this pass and is restored afterwards.
    `progress(done, of, unit)` (Run.within_epoch), if given, after every block.
    """
    with scaled_lr(optimizer, lr_factor(loop, block)):  # lr_block_scaling: the step grows with the block
        return _train_pass(model, source, block, optimizer, loop, speedup, progress)


def _train_pass(model, source: torch.Tensor, block: int, optimizer, loop: LMLoop, speedup: Speedup,
                progress=None) -> dict:
    model.train()
    hidden = model.init_hidden(source.size(1))  # reset the hidden state at each epoch
    loss_sum, tokens = torch.zeros((), device=source.device), 0
    for i in range(0, source.size(0) - 1, block):
        x, y = get_batch(source, i, block)
        hidden = detach_hidden(hidden)  # carry state across blocks, not gradients
        with speedup.autocast():  # forward in bf16/fp16 if speed.autocast says so (cross-entropy stays fp32)
            logits, hidden = model(x, hidden)  # [b, B, V]
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))  # mean per token
        check_finite(loss)
        # sum_over_block: the loss summed over the block's time steps, averaged over the batch (SGD reading)
        scaled = loss * x.size(0) if loop.loss_reduction == "sum_over_block" else loss
        optimizer.zero_grad(set_to_none=True)
        speedup.backward(scaled)  # gradients of this block only (the carried state is detached; fp16: scaled up)
        speedup.unscale(optimizer)  # fp16: the clip sees the true gradients
        if loop.clip_grad_norm:  # global-norm clip, in the scale of `scaled`
            torch.nn.utils.clip_grad_norm_(model.parameters(), loop.clip_grad_norm)
        speedup.step(optimizer)  # at the (possibly block-scaled) lr of scaled_lr; fp16: skipped on overflow
        loss_sum += loss.detach() * y.numel()  # the logged loss is per token whatever the reduction
        tokens += y.numel()
        if progress is not None:
            progress(i + x.size(0), source.size(0) - 1, "time steps")  # a log line every few seconds
    return {"train_loss": (loss_sum / tokens).item(), "tokens": tokens}


@torch.no_grad()
def evaluate(model, source: torch.Tensor, block: int) -> dict:
    """Mean loss and perplexity over the targets of `source` [T, B] from eval_streams (PAD targets skipped).

    The state carries across chunks of `block` rows, so the chunk length changes nothing but speed.
    """
    model.eval()
    hidden = model.init_hidden(source.size(1))
    nll, tokens = 0.0, 0
    for i in range(0, source.size(0) - 1, block):
        x, y = get_batch(source, i, block)
        logits, hidden = model(x.clamp(min=0), hidden)  # PAD inputs only precede PAD targets: any id will do
        nll += F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), ignore_index=PAD,
                               reduction="sum").item()
        tokens += int((y != PAD).sum())
    loss = nll / tokens
    return {"loss": loss, "ppl": math.exp(min(loss, 700.0)), "tokens": tokens}


def load_tokens(prepared_dir, split: str, device) -> torch.Tensor:
    return torch.from_numpy(np.load(f"{prepared_dir}/{split}.npy").astype(np.int64)).to(device)


def fit(run: Run, model, optimizer, scheduler, schedule, data: dict, loop: LMLoop) -> None:
    """Train for loop.epochs. `data`: {"train", "valid", "test"} token tensors on the device.

    `schedule.block_size(epoch, history)` gives the epoch's block size (epoch is 0-based, history the rows so
    far); `scheduler` steps once per epoch on the base lr (ReduceLROnPlateau gets the validation loss), and the
    row's "lr" is the lr the epoch trained at (base x lr_factor).
    """
    train = batchify(data["train"], loop.batch_size)
    valid = eval_streams(data["valid"], loop.eval_batch_size)
    test = eval_streams(data["test"], loop.eval_batch_size)
    speedup = for_run(run)  # the profile's speed options: autocast and, for fp16, the grad scaler
    objects = {"model": model, "optimizer": optimizer, **speedup.objects()}
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
                stats = train_epoch(model, train, block, optimizer, loop, speedup, run.within_epoch)
        except Diverged as err:
            run.mark_diverged(str(err), objects)
            break
        lr = optimizer.param_groups[0]["lr"] * lr_factor(loop, block)  # what the epoch trained at
        with speedup.autocast():  # evaluated at the training precision
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
            with speedup.autocast():
                row["test_ppl"] = evaluate(model, test, loop.eval_block)["ppl"]
        run.end_epoch(row, objects, done=last)
    run.distinct_samples = (train.size(0) - 1) * train.size(1) if run.history else 0
