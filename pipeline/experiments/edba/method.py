"""Efficient Dynamic Batch Adaptation (EDBA; Simionescu & Stoica, "Efficient Dynamic Batch Adaptation").

From one forward pass over the batch (features h [B, F], logits z [B, C], labels y [B]) this produces the rows to
train on this step and the batch size of the next step:

    d_i = softmax(z_i) - onehot(y_i)                       last-layer per-sample gradients, no autograd:
    grad W_i = d_i h_i^T,  grad b_i = d_i                   (paper "Improvements": last layer only)
    Kmat = (D D^T) * (H H^T + 1)                [B, B]     Gram of the per-sample gradients [W_i, b_i]
    G(S) = sqrt(m^T Kmat m) / |S|                           norm of the mean gradient of subset S (mask m)
    margin(S) = |(M - M_ema) / (G(S) - G_ema) - 1|          the margin-based loss, paper eq. (1)
    S* = argmin over random candidate subsets                one [n_cand, B] x [B, B] product scores them all

The EMAs then take the chosen subset's M and G, and every `window` steps the batch grows or shrinks by `factor`
within [10, 1000] (paper "Experiments") from statistics of the chosen margins (paper: "we look at margin-based
loss statistics directly to make the decision, not at the historical number of gradients chosen").

The settings (schema.EDBAConfig; every value and the reason for it in params.yaml `edba.edba`; the initial batch
is the baseline's train.batch_size) and what each one does:

  min_batch, max_batch  bounds of the batch size (paper "Experiments": 10 and 1000)
  num_candidates        random candidate subsets scored per step (the cost is n_cand x B^2 flops)
  subset_sizes          "uniform_size": size ~ U{max(min_batch, ceil(min_subset_frac*B))..B}, uniform members;
                        "bernoulli": every row kept with probability 1/2 (all subsets equally likely: sizes near B/2),
                        topped up to min_batch rows
  min_subset_frac       smallest candidate as a fraction of the batch ("uniform_size")
  include_full_batch    candidate 0 is the whole batch (and wins ties)
  ema_decay             decay of the exponential running averages of the chosen M and G
  denominator_guard     "clamp": |G - G_ema| < guard_eps becomes +-guard_eps (sign kept, 0 -> +), so 0/0 cannot give
                        NaN and a tiny denominator gives a huge margin; "exclude": margin = inf (all excluded ->
                        candidate 0)
  grad_metric           "norm_of_mean": ||mean of the subset's gradients|| (paper: mixed directions shrink "the norm
                        of the mean of the gradients"); "mean_of_norms": (1/|S|) sum_i ||g_i||
  model_metric          "batch": M is the loss of the whole batch (paper: "the gradient metric is the only one that can
                        change"); "subset": the mean loss of S
  batch_rule            "margin": median over the window of the chosen subset's signed margin s = (dG - dM) / |dG|
                        (|s| = margin; s > 0: even the best subset's gradient norm is above the target G_ema + dM);
                        s > margin_tolerance: grow (larger subsets average more, lowering G); s < -tol: shrink.
                        "kept_fraction": DBA's rule, mean kept fraction < kept_low: shrink, > kept_high: grow
  window                steps per grow/shrink decision
  factor                multiplicative change of the batch at a decision
  forward               "two_pass": the paper's order ("those samples are thereafter taken and used in an usual
                        forward and backpropagation step"): a no-grad selection forward (BN buffers restored, so it
                        leaves no trace), then forward/backward on the kept rows. "shared": one forward with grad
                        over the batch feeds the selection and the kept rows' loss (cost = baseline step + the Gram),
                        but BatchNorm statistics then include the dropped rows and the kept rows' gradient flows
                        through them. Step time / baseline (benchmarks/edba_step_time.py, PreResNet-56, batch 100,
                        CPU, 1 thread, 20 rounds, two runs): two_pass 1.05-1.12x at 70% kept, and 1.33-1.37x when all
                        is kept, missing the 1.10x target; shared 0.99-1.02x. Gradient cosine shared vs two-pass,
                        half a batch: 0.77 (0.04 between halves).
  (oversize batches: params edba.train.oversize_batch "wrap": read on into fresh permutations, image.IndexStream)

Shapes: B batch, F features, C classes, n candidate subsets. Randomness: only the `torch.Generator` given to
`EDBA` (masks are drawn on its device, then moved to the batch's device).
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .schema import EDBAConfig


@dataclass
class Selection:
    """What one step chose: rows of the batch to train on and the numbers behind the choice."""

    indices: torch.Tensor  # int64 [|S|], sorted rows of the batch, on the batch's device
    margin: float  # margin loss of the chosen subset (nan on the first step: no EMA yet)
    signed_margin: float  # (dG - dM) / |dG|: > 0 when the chosen G is above the target G_ema + dM
    model_metric: float  # M of the chosen subset (the whole batch's mean loss when model_metric="batch")
    grad_metric: float  # G of the chosen subset
    kept_fraction: float  # |S| / B
    candidate: int  # row of the chosen mask among the candidates (0 = full batch when included; -1 first step)


# ---- per-step scoring: pure functions in the order they run ----------------------------------------------------
def per_sample_last_layer_grads(h: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor):
    """(D [B, C], H [B, F]): grad W_i = D_i H_i^T and grad b_i = D_i of the per-sample cross-entropy."""
    return logits.softmax(dim=1) - F.one_hot(targets, logits.shape[1]).to(logits.dtype), h


def gram(D: torch.Tensor, H: torch.Tensor, bias: bool = True) -> torch.Tensor:
    """Kmat [B, B] = <grad_i, grad_j> over (W, b): <d_i h_i^T, d_j h_j^T> = (d_i.d_j)(h_i.h_j), plus d_i.d_j for b."""
    hh = H @ H.T
    return (D @ D.T) * (hh + 1 if bias else hh)


def candidate_masks(batch: int, num: int, subset_sizes: str, min_subset_frac: float, include_full: bool,
                    generator: torch.Generator, min_size: int = 1) -> torch.Tensor:
    """bool [num, batch] random subsets of at least min(batch, min_size) rows (EDBA passes min_batch: a kept
    subset is the step's batch, so it obeys the batch bounds), row 0 the full batch when include_full."""
    dev = generator.device
    scores = torch.rand(num, batch, generator=generator, device=dev)
    ranks = scores.argsort(dim=1).argsort(dim=1)  # a uniform random order of the rows, per candidate
    floor = min(batch, max(1, min_size))
    if subset_sizes == "bernoulli":  # rows with score < 0.5 are the lowest ranks: topping up keeps the order
        masks = (scores < 0.5) | (ranks < floor)  # a subset under `floor` rows gets the next-ranked rows
    else:
        low = max(floor, min(batch, math.ceil(min_subset_frac * batch)))  # U{max(min_size, ceil(f B))..B}
        sizes = torch.randint(low, batch + 1, (num, 1), generator=generator, device=dev)
        masks = ranks < sizes  # the first `size` rows of that order
    if include_full:
        masks[0] = True
    return masks


def subset_grad_norms(K: torch.Tensor, masks: torch.Tensor, mode: str = "norm_of_mean") -> torch.Tensor:
    """G [n] of every subset at once. norm_of_mean: sqrt(m^T K m)/|S|; mean_of_norms: (1/|S|) sum_i m_i sqrt(K_ii)."""
    m = masks.to(K.dtype)  # [n, B]
    sizes = m.sum(dim=1)
    if mode == "norm_of_mean":
        return ((m @ K) * m).sum(dim=1).clamp_min(0).sqrt() / sizes
    if mode == "mean_of_norms":
        return (m @ K.diagonal().clamp_min(0).sqrt()) / sizes
    raise ValueError(f"edba.grad_metric must be 'norm_of_mean' or 'mean_of_norms', got {mode!r}")


def margin_losses(model_metric, grad_metric: torch.Tensor, model_ema: float, grad_ema: float,
                  eps: float = 1e-6, guard: str = "clamp"):
    """(margin [n], signed [n]): margin = |dM/dG - 1| (paper eq. 1) = |signed|, signed = (dG - dM)/|dG|."""
    dM, dG = model_metric - model_ema, grad_metric - grad_ema
    small = dG.abs() < eps
    safe = torch.where(small, torch.where(dG < 0, -eps, eps), dG) if guard == "clamp" else dG.masked_fill(small, 1.0)
    signed = (safe - dM) / safe.abs()
    if guard == "exclude":
        signed = signed.masked_fill(small, math.inf)
    return signed.abs(), signed


# ---- the method: selection, EMAs, batch-size rule, checkpointable state ----------------------------------------
class EDBA:
    """Chooses the subset of each batch and adapts the batch size; its whole state is in state_dict()."""

    def __init__(self, cfg: EDBAConfig, generator: torch.Generator, initial_batch: int):
        if not cfg.min_batch <= initial_batch <= cfg.max_batch:
            raise ValueError(f"edba: initial batch {initial_batch} is outside [min_batch, max_batch] = "
                             f"[{cfg.min_batch}, {cfg.max_batch}]")
        self.cfg, self.generator, self.initial_batch = cfg, generator, initial_batch
        self.batch_size = initial_batch
        self.model_ema: float | None = None  # EMAs of the chosen subsets' M and G; None until the first step
        self.grad_ema: float | None = None
        self.window: list[tuple[float, float]] = []  # (signed margin, kept fraction) since the last decision

    @torch.no_grad()
    def select(self, h: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor, bias: bool = True) -> Selection:
        """The subset of the batch minimising the margin loss; h [B, F], logits [B, C], targets [B] (detached)."""
        cfg, B = self.cfg, len(targets)
        if h.ndim != 2 or logits.ndim != 2 or not len(h) == len(logits) == B:
            raise ValueError(f"edba.select needs h [B, F], logits [B, C], targets [B]; got {tuple(h.shape)}, "
                             f"{tuple(logits.shape)}, {tuple(targets.shape)}")
        dtype = torch.promote_types(logits.dtype, torch.float32)  # half-precision logits are scored in float32
        h, logits = h.to(dtype), logits.to(dtype)
        losses = F.cross_entropy(logits, targets, reduction="none")  # [B]
        K = gram(*per_sample_last_layer_grads(h, logits, targets), bias=bias)  # [B, B]
        masks = candidate_masks(B, cfg.num_candidates, cfg.subset_sizes, cfg.min_subset_frac,
                                cfg.include_full_batch, self.generator, cfg.min_batch).to(h.device)  # [n, B]
        G = subset_grad_norms(K, masks, cfg.grad_metric)  # [n]
        M = (masks.to(dtype) @ losses) / masks.sum(1) if cfg.model_metric == "subset" else losses.mean().expand_as(G)
        if self.model_ema is None:  # first step: nothing to compare with -> the full batch, which seeds the EMAs
            full = torch.ones(1, B, dtype=torch.bool, device=h.device)
            G0 = subset_grad_norms(K, full, cfg.grad_metric)[0].item()
            chosen = Selection(torch.arange(B, device=h.device), math.nan, math.nan, losses.mean().item(),
                               G0, 1.0, -1)
            self.model_ema, self.grad_ema = chosen.model_metric, chosen.grad_metric
            return chosen
        margin, signed = margin_losses(M, G, self.model_ema, self.grad_ema, cfg.guard_eps, cfg.denominator_guard)
        c = int(margin.argmin())  # first minimum: ties go to the full batch (candidate 0)
        m_c, s_c, M_c, G_c, n_c = torch.stack([margin[c], signed[c], M[c], G[c], masks[c].sum().to(dtype)]).tolist()
        chosen = Selection(masks[c].nonzero().squeeze(1), m_c, s_c, M_c, G_c, n_c / B, c)
        beta = cfg.ema_decay
        self.model_ema = beta * self.model_ema + (1 - beta) * chosen.model_metric
        self.grad_ema = beta * self.grad_ema + (1 - beta) * chosen.grad_metric
        return chosen

    def update_batch_size(self, selection: Selection) -> int:
        """Adds the step to the window; every `window` steps grows/shrinks the batch within the bounds."""
        cfg = self.cfg
        if math.isnan(selection.margin):  # the first step has no margin to learn from
            return self.batch_size
        self.window.append((selection.signed_margin, selection.kept_fraction))
        if len(self.window) < cfg.window:
            return self.batch_size
        if cfg.batch_rule == "margin":
            s = statistics.median(w[0] for w in self.window)
            direction = 1 if s > cfg.margin_tolerance else -1 if s < -cfg.margin_tolerance else 0
        else:
            kept = sum(w[1] for w in self.window) / len(self.window)
            direction = 1 if kept > cfg.kept_high else -1 if kept < cfg.kept_low else 0
        self.window = []
        size = self.batch_size * cfg.factor ** direction
        self.batch_size = int(min(cfg.max_batch, max(cfg.min_batch, round(size))))
        return self.batch_size

    def state_dict(self) -> dict:
        return {"batch_size": self.batch_size, "model_ema": self.model_ema, "grad_ema": self.grad_ema,
                "window": list(self.window), "generator": self.generator.get_state(), "config": self._config()}

    def _config(self) -> dict:
        return {**self.cfg.model_dump(), "initial_batch": self.initial_batch}

    def load_state_dict(self, state: dict) -> None:
        if state["config"] != self._config():
            raise ValueError("edba checkpoint was written with a different EDBAConfig; refusing to resume")
        self.batch_size, self.model_ema, self.grad_ema = state["batch_size"], state["model_ema"], state["grad_ema"]
        self.window = [tuple(w) for w in state["window"]]
        self.generator.set_state(state["generator"])


# ---- the image loop's batch policy, and the training loss of one EDBA step -------------------------------------
class EDBASampler:
    """The batch policy of pipeline.train.image: batch_size(), loss(model, x, y), epoch_stats(), state_dict().

    loss() runs edba_loss with the configured cfg.forward; select() scores whatever forward it is given (edba_loss
    calls it on the selection forward) and sets the next batch size.
    """

    def __init__(self, cfg: EDBAConfig, generator: torch.Generator, initial_batch: int, head_bias: bool = True):
        self.edba = EDBA(cfg, generator, initial_batch)
        self.head_bias = head_bias  # does the head nn.Linear have a bias?
        self.last: Selection | None = None
        self._stats = self._fresh_stats()

    @staticmethod
    def _fresh_stats() -> dict:
        return {"steps": 0, "kept": 0.0, "margins": [], "batch": [], "model_metric": 0.0, "grad_metric": 0.0}

    def batch_size(self) -> int:
        return self.edba.batch_size

    def loss(self, model, x: torch.Tensor, y: torch.Tensor):
        """(loss of the kept rows, kept rows, forward passes): the step's cost in single-sample forward passes,
        backward = 2 forwards: two_pass = B (selection) + 3|S| (train); shared = 3B (backward flows through the
        whole batch's BatchNorm statistics)."""
        loss, rows = edba_loss(model, x, y, self)
        passes = len(y) + 3 * len(rows) if self.edba.cfg.forward == "two_pass" else 3 * len(y)
        return loss, rows, passes

    def select(self, features: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Rows of this batch to train on (int64, on the batch's device); also sets the next batch size."""
        self.last = self.edba.select(features, logits, targets, bias=self.head_bias)
        s = self._stats
        s["batch"].append(len(targets))
        self.edba.update_batch_size(self.last)
        s["steps"] += 1
        s["kept"] += self.last.kept_fraction
        s["model_metric"] += self.last.model_metric
        s["grad_metric"] += self.last.grad_metric
        if not math.isnan(self.last.margin):
            s["margins"].append(self.last.margin)
        return self.last.indices

    def epoch_stats(self) -> dict:
        """History columns over the steps since the last call (then resets): drawn batch size (mean, min, max),
        mean kept fraction, median chosen margin, mean M and G of the chosen subsets."""
        s, n = self._stats, max(self._stats["steps"], 1)
        row = {"edba_batch_mean": sum(s["batch"]) / n if s["batch"] else math.nan,
               "edba_batch_min": min(s["batch"], default=math.nan), "edba_batch_max": max(s["batch"], default=math.nan),
               "edba_kept_fraction": s["kept"] / n,
               "edba_margin": statistics.median(s["margins"]) if s["margins"] else math.nan,
               "edba_model_metric": s["model_metric"] / n, "edba_grad_metric": s["grad_metric"] / n}
        self._stats = self._fresh_stats()
        return row

    def state_dict(self) -> dict:
        s = self._stats
        return {"edba": self.edba.state_dict(), "stats": {**s, "margins": list(s["margins"]), "batch": list(s["batch"])}}

    def load_state_dict(self, state: dict) -> None:
        self.edba.load_state_dict(state["edba"])
        s = state["stats"]
        self._stats = {**s, "margins": list(s["margins"]), "batch": list(s["batch"])}


def edba_loss(model, x: torch.Tensor, y: torch.Tensor, sampler: EDBASampler, forward: str | None = None):
    """(loss, rows): mean cross-entropy of the rows EDBA keeps, ready for backward(). Model in train mode.

    shared:   one forward with grad over the batch; select from its detached h/logits; mask the per-sample loss.
    two_pass: no-grad selection forward (BN buffers restored: the pass leaves no trace), then forward on x[rows].
    """
    forward = forward or sampler.edba.cfg.forward
    if forward == "shared":
        h = model.features(x)
        logits = model.head(h)
        losses = F.cross_entropy(logits, y, reduction="none")  # [B]
        rows = sampler.select(h.detach(), logits.detach(), y)
        return losses[rows].mean(), rows
    if forward != "two_pass":
        raise ValueError(f"edba.forward must be 'shared' or 'two_pass', got {forward!r}")
    buffers = [b.clone() for b in model.buffers()]  # BN running stats, num_batches_tracked
    with torch.no_grad():
        h = model.features(x)
        logits = model.head(h)
    for b, saved in zip(model.buffers(), buffers):
        b.copy_(saved)
    rows = sampler.select(h, logits, y)
    return F.cross_entropy(model(x[rows]), y[rows]), rows
