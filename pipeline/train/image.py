"""Image-classifier training on a CIFAR (sub)set held as one tensor on the device (no DataLoader).

    ImageData.load(prepared_dir, subset_file, device) -> uint8 subset + test set on the device (in host memory, copied
                                                           a batch at a time, with on_device=False)
    fit(run, model, optimizer, scheduler, data, policy, loop, seed_gens, hook=None)
                                                           -> one epoch at a time: train_epoch + evaluate

A step: the policy says how many samples to draw; the stream gives that many *global* training indices (a fresh
permutation of the subset per pass; a batch larger than the subset reads on into the next passes: ImageLoop's
oversize_batch "wrap"); the leak guard maps them to rows of the subset and refuses any index outside it (or
outside the training set); crop + flip on the whole batch; the policy computes the step's loss (the baseline:
mean cross-entropy of one forward pass over the batch; EDBA: selects the rows to keep and returns their loss);
backward; clip; step. The run's speed options (pipeline/train/speed.py) set the forward's autocast, the grad scaler
and the memory format; with them off it is the plain fp32 step.

A batch policy ("which samples and how many this step") has:
    batch_size() -> int                 samples to draw for the next step
    loss(model, x, y) -> (loss, rows, forward_passes)
                                        rows: kept rows of the batch (None = all); forward_passes: the step's cost
                                        in single-sample forward passes (backward = 2 forwards), for the FLOPs count
    epoch_stats() -> dict               extra history columns; state_dict() / load_state_dict() for resume
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..schemas.base import OVERSIZE_BATCH  # how a batch larger than the subset is drawn (ImageLoop.oversize_batch)
from .engine import Diverged, GeneratorState, Run, TensorState, check_finite
from .speed import FP32, Speedup, for_run


class LeakError(RuntimeError):
    """A training step asked for a sample outside the run's subset."""


# ---- data on the device -------------------------------------------------------------------------------------
@dataclass
class ImageData:
    x: torch.Tensor  # uint8 [n, 3, 32, 32]: the training subset (on the device, or in host memory: data_on_device)
    y: torch.Tensor  # int64 [n]
    global_index: torch.Tensor  # int64 [n]: row i of x is training image global_index[i]
    local_of: torch.Tensor  # int64 [N_train]: row of a global index in x, -1 when not in the subset
    test_x: torch.Tensor  # uint8 [m, 3, 32, 32]: only ever used by evaluate() (where x is)
    test_y: torch.Tensor
    mean: torch.Tensor  # [1, 3, 1, 1] per-channel mean of the subset, in [0, 1] units (all but x, test_x: on device)
    std: torch.Tensor
    num_classes: int

    @classmethod
    def load(cls, prepared_dir: Path, subset_file: Path | None, device, on_device: bool = True) -> "ImageData":
        prepared_dir = Path(prepared_dir)
        train, test = np.load(prepared_dir / "train.npz"), np.load(prepared_dir / "test.npz")
        meta = json.loads((prepared_dir / "meta.json").read_text())
        n_train = len(train["y"])
        index = np.load(subset_file) if subset_file else np.arange(n_train)
        if index.min() < 0 or index.max() >= n_train:
            raise LeakError(f"{subset_file}: indices outside the training set of {n_train} images")
        return cls.from_arrays(train["x"][index], train["y"][index], index, n_train, test["x"], test["y"],
                               len(meta["classes"]), device, on_device)

    @classmethod
    def from_arrays(cls, x: np.ndarray, y: np.ndarray, index: np.ndarray, n_train: int, test_x: np.ndarray,
                    test_y: np.ndarray, num_classes: int, device, on_device: bool = True) -> "ImageData":
        """Training rows x [n, H, W, C] uint8 with labels y, training images `index` (int64 [n]) of a training set of
        n_train, and the test split. on_device False (speed.data_on_device) keeps the images in host memory and
        everything else on `device`; the pixel statistics are computed on `device` either way (the same numbers)."""
        home = device if on_device else "cpu"
        images = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2))).to(home)  # NHWC -> NCHW
        x_t = images(x)
        local_of = torch.full((n_train,), -1, dtype=torch.long)
        local_of[torch.from_numpy(index)] = torch.arange(len(index))
        pixels = x_t.to(device).float().div(255)
        return cls(
            x=x_t, y=torch.from_numpy(y).long().to(device),
            global_index=torch.from_numpy(index).long().to(device), local_of=local_of.to(device),
            test_x=images(test_x), test_y=torch.from_numpy(test_y).long().to(device),
            mean=pixels.mean(dim=(0, 2, 3), keepdim=True), std=pixels.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-3),
            num_classes=num_classes,
        )

    @property
    def device(self) -> torch.device:
        """The training device (labels, indices and statistics live there; the images too unless held on the host)."""
        return self.y.device

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 images, wherever held -> float in normalised units on the training device."""
        return (x.to(self.device).float().div(255) - self.mean) / self.std

    def rows(self, global_idx: torch.Tensor) -> torch.Tensor:
        """The leak guard: subset rows of global training indices; any index outside the subset is an error,
        including one outside [0, N_train): plain indexing would wrap a negative one to the end of local_of and
        fail on one >= N_train with a bare IndexError (a device assert on CUDA), so those are masked out first."""
        n_train = len(self.local_of)
        in_range = (global_idx >= 0) & (global_idx < n_train)
        local = torch.where(in_range, self.local_of[global_idx.clamp(0, n_train - 1)], -1)
        if (local < 0).any():  # one check (one device sync) for both kinds of bad index
            bad = global_idx[local < 0][:5].tolist()
            if not in_range.all():
                raise LeakError(f"training step used indices {bad} outside the training set of {n_train} images")
            raise LeakError(f"training step used indices {bad} that are not in the run's subset")
        return local


class IndexStream:
    """Endless global training indices: a fresh seeded permutation of the subset for each pass, read k at a time.

    oversize_batch "wrap": a batch larger than the subset reads on into the next pass(es), so a batch of 300 from
    100 samples that starts a pass holds every sample exactly 3 times (in general each sample floor(k/n) - 1 to
    ceil(k/n) + 1 times: whole passes plus the ends of the two passes it straddles). The only value: the batch a
    policy asked for is drawn at that size, and no sample is favoured over another across passes.
    """

    def __init__(self, global_index: torch.Tensor, generator: torch.Generator, oversize_batch: str = "wrap"):
        if oversize_batch not in OVERSIZE_BATCH:
            raise ValueError(f"oversize_batch must be one of {OVERSIZE_BATCH}, got {oversize_batch!r}")
        self.index, self.generator = global_index.cpu(), generator
        self.perm, self.pos = torch.randperm(len(self.index), generator=generator), 0

    def take(self, k: int) -> torch.Tensor:
        out = []
        while k > 0:
            if self.pos == len(self.perm):
                self.perm, self.pos = torch.randperm(len(self.index), generator=self.generator), 0
            n = min(k, len(self.perm) - self.pos)
            out.append(self.index[self.perm[self.pos:self.pos + n]])
            self.pos, k = self.pos + n, k - n
        return torch.cat(out)

    def state_dict(self) -> dict:
        return {"perm": self.perm, "pos": self.pos, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.perm, self.pos = state["perm"], state["pos"]
        self.generator.set_state(state["generator"])


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random crop (zero-pad 4, crop 32x32) and horizontal flip for a whole batch [B, C, H, W] at once."""
    b, _, h, w = x.shape
    padded = F.pad(x, (4, 4, 4, 4))
    dy = torch.randint(0, 9, (b,), generator=generator).to(x.device)
    dx = torch.randint(0, 9, (b,), generator=generator).to(x.device)
    flip = (torch.rand(b, generator=generator) < 0.5).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # [B, 1, H, 1]
    cols = (dx[:, None] + torch.arange(w, device=x.device))  # [B, W]
    cols = torch.where(flip[:, None], cols.flip(1), cols)[:, None, None, :]  # [B, 1, 1, W], flipped per sample
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    chan = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, chan, rows, cols]


# ---- batch policies: "which samples and how many this step" ------------------------------------------------------
class FixedBatch:
    """The baseline: a fixed batch size, every drawn sample is trained on."""

    def __init__(self, batch_size: int):
        self.size = batch_size

    def batch_size(self) -> int:
        return self.size

    def loss(self, model, x, y):
        """Mean cross-entropy over the whole batch: forward (1) + backward (2) forward-pass equivalents per sample."""
        return F.cross_entropy(model(x), y), None, 3 * len(y)

    def epoch_stats(self) -> dict:
        return {}

    def state_dict(self) -> dict:
        return {"size": self.size}

    def load_state_dict(self, state: dict) -> None:
        self.size = state["size"]


# ---- the loop ----------------------------------------------------------------------------------------------------
@dataclass
class ImageLoop:
    epochs: int
    samples_per_epoch: int  # samples drawn per epoch (the subset size, unless an experiment equalises steps)
    eval_every: int  # evaluate on the test split every k epochs (and always after the last)
    eval_batch: int  # test images per evaluation forward
    augment: bool  # random crop (pad 4) + horizontal flip of every training batch
    clip_grad_norm: float | None = None  # None: no clipping
    forward_flops: int = 0  # forward FLOPs of one sample (0: not counted); a step costs it x the policy's passes
    oversize_batch: str = "wrap"  # a batch larger than the subset: IndexStream's only mode, see its docstring


def train_epoch(model, optimizer, scheduler, data: ImageData, stream: IndexStream, policy, loop: ImageLoop,
                aug_gen: torch.Generator, seen: torch.Tensor, speedup: Speedup = FP32, progress=None) -> dict:
    """One epoch; returns its train loss, samples trained on and FLOPs. `scheduler` steps once per step;
    `progress(done, of, unit)` (Run.within_epoch), if given, after every step."""
    model.train()
    drawn = steps = trained = 0
    flops, loss_sum = 0, torch.zeros((), device=data.device)
    while drawn < loop.samples_per_epoch:
        batch = policy.batch_size()
        rows = data.rows(stream.take(batch).to(data.device))  # leak guard: rows of the subset only
        x = data.normalize(data.x[rows.to(data.x.device)])  # float on the device, wherever the images are held
        x = augment(x, aug_gen) if loop.augment else x
        with speedup.autocast():  # forward (bf16/fp16 if speed.autocast); EDBA also picks the rows to keep
            loss, keep, passes = policy.loss(model, speedup.inputs(x), data.y[rows])
        check_finite(loss)
        optimizer.zero_grad(set_to_none=True)
        speedup.backward(loss)  # gradients of the kept rows only (fp16: of the scaled loss)
        speedup.unscale(optimizer)  # fp16: the clip sees the true gradients
        if loop.clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), loop.clip_grad_norm)
        speedup.step(optimizer)  # fp16: skipped if a gradient overflowed
        if scheduler is not None:
            scheduler.step()  # schedules are per step
        kept_rows = rows if keep is None else rows[keep]
        seen[kept_rows] = True
        loss_sum += loss.detach()
        flops += loop.forward_flops * passes
        drawn, steps, trained = drawn + batch, steps + 1, trained + len(kept_rows)
        if progress is not None:
            progress(drawn, loop.samples_per_epoch, "samples")  # a log line every few seconds of a long epoch
    return {"train_loss": (loss_sum / steps).item(), "steps": steps, "trained": trained, "flops": flops,
            "batch_size": policy.batch_size()}


@torch.no_grad()
def evaluate(model, data: ImageData, batch: int = 500) -> dict:
    """Accuracy (fraction) and mean loss on the test split, every test image exactly once."""
    model.eval()
    correct, loss = 0, 0.0
    for i in range(0, len(data.test_y), batch):
        logits = model(data.normalize(data.test_x[i:i + batch]))
        y = data.test_y[i:i + batch]
        correct += (logits.argmax(1) == y).sum().item()
        loss += F.cross_entropy(logits, y, reduction="sum").item()
    return {"test_acc": correct / len(data.test_y), "test_loss": loss / len(data.test_y)}


def fit(run: Run, model, optimizer, scheduler, data: ImageData, policy, loop: ImageLoop, seed_gens: dict,
        hook=None) -> None:
    """Train for loop.epochs, evaluating every loop.eval_every epochs, checkpointing every epoch.

    `hook` (optional) changes the network between epochs (the growth experiment). It then owns the model, the
    optimizer and the scheduler (they are checkpointed through its state_dict) and has
        before_epoch(run, loop) -> (model, optimizer, scheduler) to train this epoch with (work that counts as
                                   training it does under run.training(); it may set loop.forward_flops)
        epoch_stats(stats) -> extra history columns, from train_epoch's stats of the epoch
    """
    stream = IndexStream(data.global_index, seed_gens["data_order"], loop.oversize_batch)
    aug_gen = seed_gens["augment"]
    seen = torch.zeros(len(data.y), dtype=torch.bool, device=data.device)
    speedup = for_run(run)  # the profile's speed options: autocast, grad scaler, channels-last
    owned = {"hook": hook} if hook is not None else {"model": speedup.model(model), "optimizer": optimizer}
    if hook is None and scheduler is not None:
        owned["scheduler"] = scheduler
    objects = {**owned, "stream": stream, "policy": policy, "augment": GeneratorState(aug_gen),
               "seen": TensorState(seen), **speedup.objects()}
    run.total_epochs = loop.epochs
    run.resume(objects)  # a hook first rebuilds what its checkpoint describes, then loads it
    totals = {"samples": 0, "flops": 0}
    if run.history:
        totals = {k: run.history[-1][k] for k in totals}
    while not run.done and run.epoch < loop.epochs:
        if hook is not None:
            model, optimizer, scheduler = hook.before_epoch(run, loop)
            model = speedup.model(model)  # a grown network is new: channels-last again
        lr = optimizer.param_groups[0]["lr"]  # the lr of the epoch's first step (schedules move it per step)
        try:
            with run.training():
                stats = train_epoch(model, optimizer, scheduler, data, stream, policy, loop, aug_gen, seen, speedup,
                                    run.within_epoch)
        except Diverged as err:
            run.mark_diverged(str(err), objects)
            break
        totals = {"samples": totals["samples"] + stats["trained"], "flops": totals["flops"] + stats["flops"]}
        last = run.epoch + 1 == loop.epochs
        with speedup.autocast():  # evaluated at the training precision (a channels-last model sets the format)
            evaluated = evaluate(model, data, loop.eval_batch) if last or (run.epoch + 1) % loop.eval_every == 0 else {}
        row = {"train_loss": stats["train_loss"], **evaluated, "lr": lr,
               "batch_size": stats["batch_size"], "steps": stats["steps"], **policy.epoch_stats(),
               **(hook.epoch_stats(stats) if hook is not None else {}), **totals}
        run.end_epoch(row, objects, done=last)
    run.distinct_samples = int(seen.sum().item())
