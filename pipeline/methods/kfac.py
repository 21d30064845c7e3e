"""K-FAC: Kronecker-factored approximate natural-gradient optimizer (Martens & Grosse 2015; convolutions per
Grosse & Martens 2016, "KFC").

Produces, from a model and its training steps, parameter updates in which the gradient of every nn.Linear and
nn.Conv2d layer is preconditioned by the inverse of a Kronecker-factored Fisher block:

    F_layer ~ A (x) G        A = E[a a^T]   a: layer input (+ a homogeneous 1 when the layer has a bias)
                             G = E[g g^T]   g: gradient of the per-example loss w.r.t. the layer output
    direction = G_d^-1 dW A_d^-1  ==  (A_d (x) G_d)^-1 vec(dW)      (M&G 2015 §3-4; _d = damped)

Every other parameter (BatchNorm, embeddings, grouped or weight-normalised convolutions) takes the plain
gradient. Then, as in Ba, Grosse & Martens 2017 (distributed K-FAC): KL-clipping of the K-FAC directions, weight decay,
momentum and the learning rate (torch SGD semantics), so lr schedulers and checkpoints work as for any
torch.optim.Optimizer.

Choices of ours where the papers are silent or differ (all are constructor parameters; experiment 4 passes its
values from params.yaml, optimizers.optimizer_options.kfac, each with its reason there):
- The Fisher (`fisher`). "empirical": g is the gradient of the training loss itself (the labels of the data), so
  the factors hold the gradients' second moment, not the model's curvature. "sampled": as M&G 2015 §5 and the
  reference code (alecwangcq/KFAC-Pytorch, main.py), on each statistics step a forward hook on the model draws
  y ~ softmax(logits) and backpropagates the mean cross-entropy of those labels with torch.autograd.grad (the
  weights' .grad untouched, the graph kept for the training backward): one extra backward per statistics step
  (not in the loops' FLOPs count, which knows only the training pass).
  It assumes the model's output is the logits of a mean-reduced cross-entropy loss, as in every loop here; the
  draws come from pipeline.seeding streams of (seed, step, forward), so a resumed run draws the same labels.
- Statistics collected every `stats_every` steps and inverses refreshed every `inv_every` steps (M&G 2015's T3);
  the pending batch statistics between a forward pass and `step()` are not checkpointed (resume at step
  boundaries).
- g is captured by a tensor hook on the layer output, registered in a forward hook, not by
  `register_full_backward_hook`: full backward hooks raise on in-place ops applied to a layer's output
  (ReLU(inplace=True), `out += shortcut`), which ResNets use. The gradient captured is the same.
- Factored Tikhonov damping with the pi-correction (M&G 2015 §6): A + pi*sqrt(damping) I, G + sqrt(damping)/pi I,
  pi = sqrt((tr A / dim A) / (tr G / dim G)); it keeps the damping balanced whatever the factors' scales.
- The loss is assumed mean-reduced over the batch, as in every loop of this project: g is multiplied by the
  number of rows n (batch size; batch x time for sequence Linear layers) to get per-example gradients.
- Statistics are collected only in training mode with autograd enabled, so evaluation passes never touch them.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize

from pipeline.seeding import derive_seed

# ---------------------------------------------------------------------------------------------------------------
# Configuration (every setting's value is the caller's: experiment 4 passes params.yaml's, with their sources)
# ---------------------------------------------------------------------------------------------------------------
FISHERS = ("empirical", "sampled")  # which labels g comes from: the data's, or drawn from the model (M&G 2015 §5)
UNFOLD_ELEMENTS = 2**24  # our choice: patches unfolded in batch chunks of at most ~16M elements (64 MB fp32)


# ---------------------------------------------------------------------------------------------------------------
# Kronecker factors of one batch (pure functions)
# ---------------------------------------------------------------------------------------------------------------
def with_homogeneous(a: torch.Tensor) -> torch.Tensor:
    """[rows, d] -> [rows, d + 1]: append the constant 1 whose weight is the bias (M&G 2015 §2)."""
    return torch.cat([a, a.new_ones(a.shape[0], 1)], dim=1)


def linear_input_factor(x: torch.Tensor, has_bias: bool) -> torch.Tensor:
    """A = mean over rows of a a^T; x: [..., in] (leading dims are examples / time steps) -> [in(+1), in(+1)]."""
    a = x.reshape(-1, x.shape[-1])
    if has_bias:
        a = with_homogeneous(a)
    return a.t() @ a / a.shape[0]


def conv_input_factor(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """A = mean over examples and output locations of the patch outer product (KFC: spatial homogeneity).

    x: [n, c, H, W] -> patches [n, c*kh*kw, L] (L = output locations) -> A [c*kh*kw(+1), c*kh*kw(+1)].
    Unfolded in chunks of examples so memory stays bounded for large feature maps.
    """
    n = x.shape[0]
    d = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
    total, rows = None, 0
    chunk = max(1, UNFOLD_ELEMENTS // max(1, d * x.shape[2] * x.shape[3]))
    for start in range(0, n, chunk):
        patches = F.unfold(x[start:start + chunk], conv.kernel_size, conv.dilation, conv.padding, conv.stride)
        a = patches.transpose(1, 2).reshape(-1, d)  # [n_chunk * L, c*kh*kw]
        if conv.bias is not None:
            a = with_homogeneous(a)
        part = a.t() @ a
        total = part if total is None else total + part
        rows += a.shape[0]
    return total / rows


def output_gradient_factor(g: torch.Tensor, examples: int) -> torch.Tensor:
    """G = (1/n) sum_i sum_t (n g_it)(n g_it)^T = n * sum g g^T.

    g: gradient of the batch-mean loss w.r.t. the layer output, [rows, out] (conv: rows = n*L, the locations
    summed as in KFC: F = |T| E_t[a a^T] (x) E_t[Ds Ds^T], the |T| kept in G). n = examples.
    """
    return examples * (g.t() @ g)


def damped_inverses(A: torch.Tensor, G: torch.Tensor, damping: float) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(A + pi sqrt(lambda) I)^-1 and (G + sqrt(lambda)/pi I)^-1 with the pi-correction (M&G 2015 §6).

    Inverted in float64 via Cholesky: float32 Cholesky fails on near-singular factors at small damping, and
    the cost is paid only every `inv_every` steps. None when a factor is not finite (a diverging run): the
    caller keeps its previous inverses, and the run's loss tells the engine that it diverged.
    """
    A64, G64 = A.double(), G.double()
    trace_A, trace_G = float(A64.diagonal().mean()), float(G64.diagonal().mean())
    if not (math.isfinite(trace_A) and math.isfinite(trace_G)):
        return None
    pi = math.sqrt(trace_A / trace_G) if trace_A > 0 and trace_G > 0 else 1.0
    root = math.sqrt(damping)
    inverses = []
    for factor, shift in ((A64, pi * root), (G64, root / pi)):
        damped = factor + shift * torch.eye(factor.shape[0], dtype=factor.dtype, device=factor.device)
        lower, info = torch.linalg.cholesky_ex(damped)
        if int(info) != 0:
            return None
        inverses.append(torch.cholesky_inverse(lower).to(A.dtype))
    return inverses[0], inverses[1]


def precondition(grad_matrix: torch.Tensor, A_inv: torch.Tensor, G_inv: torch.Tensor) -> torch.Tensor:
    """G^-1 dW A^-1 for dW [out, in(+1)]: the Kronecker-factored natural-gradient direction of one layer."""
    return G_inv @ grad_matrix @ A_inv


# ---------------------------------------------------------------------------------------------------------------
# The optimizer
# ---------------------------------------------------------------------------------------------------------------
def _statistics_precision(t: torch.Tensor) -> torch.Tensor:
    """At least float32: under mixed precision activations and gradients arrive in 16 bits, too coarse for sums of
    thousands of outer products; float64 (tests) stays float64."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def kfac_layers(model: nn.Module) -> list[nn.Module]:
    """Linear and Conv2d layers K-FAC preconditions; grouped / non-zero-padded / weight-normalised ones are not."""
    layers = []
    for module in model.modules():
        if parametrize.is_parametrized(module):
            continue  # W = g v/|v| is not a leaf: its Fisher block is not A (x) G in (g, v); plain gradient
        if isinstance(module, nn.Linear):
            layers.append(module)
        elif isinstance(module, nn.Conv2d):
            if isinstance(module.padding, str):
                raise ValueError(f"kfac: Conv2d {module} uses padding={module.padding!r}; give integer padding")
            if module.groups == 1 and module.padding_mode == "zeros":
                layers.append(module)  # grouped / reflect-padded convs fall back to the plain gradient
    return layers


class KFAC(torch.optim.Optimizer):
    """K-FAC for the Linear/Conv2d layers of `model` whose weights are in `params`; plain gradient elsewhere.

    State per preconditioned layer lives in self.state[layer.weight] (A, G, A_inv, G_inv, momentum buffer), and
    the step counter in the param groups, so `state_dict()` / `load_state_dict()` checkpoint everything.
    """

    def __init__(self, params: Iterable, model: nn.Module, lr: float, *, momentum: float, weight_decay: float,
                 damping: float, stat_decay: float, inv_every: int, stats_every: int, kl_clip: float | None,
                 fisher: str, seed: int = 0):
        for name, value, ok in (("lr", lr, lr > 0), ("momentum", momentum, 0 <= momentum < 1),
                                ("weight_decay", weight_decay, weight_decay >= 0), ("damping", damping, damping > 0),
                                ("stat_decay", stat_decay, 0 <= stat_decay < 1),
                                ("inv_every", inv_every, inv_every >= 1),
                                ("stats_every", stats_every, stats_every >= 1),
                                ("kl_clip", kl_clip, kl_clip is None or kl_clip > 0),
                                ("fisher", fisher, fisher in FISHERS)):
            if not ok:
                raise ValueError(f"kfac: invalid {name}={value!r}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, damping=damping, step=0)
        super().__init__(params, defaults)
        self.stat_decay, self.inv_every, self.stats_every, self.kl_clip = stat_decay, inv_every, stats_every, kl_clip
        self.fisher, self.seed = fisher, seed
        owned = {id(p) for group in self.param_groups for p in group["params"]}
        self.layers = [m for m in kfac_layers(model) if id(m.weight) in owned]
        self._pending: dict[nn.Module, dict[str, torch.Tensor | int]] = {}  # this step's batch statistics
        self._handles = [m.register_forward_hook(self._record) for m in self.layers]
        self._sampling = False  # True while the sampled-label backward runs (fisher="sampled")
        self._forwards = 0  # sampled forwards since the last step: each draws from its own stream
        self._generators: dict[torch.device, torch.Generator] = {}
        if fisher == "sampled":  # after the layers' hooks: it fires when the whole forward is done
            self._handles.append(model.register_forward_hook(self._sample_fisher_gradients))

    # --- statistics: forward hook on each layer, tensor hook on its output ---------------------------------------
    def _collecting(self, module: nn.Module) -> bool:
        """Only in training passes that will be backpropagated, and only every `stats_every` steps."""
        return (module.training and torch.is_grad_enabled()
                and self.param_groups[0]["step"] % self.stats_every == 0)

    def _record(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if not self._collecting(module) or not output.requires_grad:
            return
        x = _statistics_precision(inputs[0].detach())
        with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
            if isinstance(module, nn.Conv2d):
                A, examples = conv_input_factor(x, module), x.shape[0]
            else:
                A, examples = linear_input_factor(x, module.bias is not None), x[..., 0].numel()
        pending = self._pending.setdefault(module, {"A": 0, "nA": 0, "G": 0, "nG": 0})
        pending["A"], pending["nA"] = pending["A"] + A, pending["nA"] + 1

        def save_output_gradient(g: torch.Tensor) -> None:
            if self._sampling != (self.fisher == "sampled"):
                return  # sampled Fisher: only the sampled-label backward counts, not the training one
            # conv: [n, out, h, w] -> [n*h*w, out]; linear: [..., out] -> [rows, out]
            rows = g.movedim(1, -1).reshape(-1, g.shape[1]) if g.dim() == 4 else g.reshape(-1, g.shape[-1])
            pending["G"] = pending["G"] + output_gradient_factor(_statistics_precision(rows.detach()), examples)
            pending["nG"] += 1

        output.register_hook(save_output_gradient)

    def _sample_fisher_gradients(self, model: nn.Module, inputs: tuple, logits: torch.Tensor) -> None:
        """fisher="sampled": backpropagate mean CE(logits, y), y ~ softmax(logits) (M&G 2015 §5), through the
        layers' output hooks; the gradients returned are dropped, so .grad holds only the training loss's."""
        if not self._collecting(model) or not self._pending:
            return
        if not isinstance(logits, torch.Tensor) or logits.dim() < 2:
            raise ValueError("kfac: fisher='sampled' needs a model whose output is the logits tensor [..., classes]")
        weights = [m.weight for m in self.layers if m.weight.requires_grad]
        if not logits.requires_grad or not weights:
            return
        flat = logits.reshape(-1, logits.shape[-1]).float()  # [rows, classes]; rows = examples (x time steps)
        device = flat.device
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device)
        gen = self._generators[device]
        gen.manual_seed(derive_seed(self.seed, f"kfac/fisher/{self.param_groups[0]['step']}/{self._forwards}"))
        self._forwards += 1
        labels = torch.multinomial(torch.softmax(flat.detach(), dim=1), 1, generator=gen).squeeze(1)
        self._sampling = True
        try:
            torch.autograd.grad(F.cross_entropy(flat, labels), weights, retain_graph=True, allow_unused=True)
        finally:
            self._sampling = False

    def remove_hooks(self) -> None:
        """Detach from the model (e.g. before pickling it or switching optimizer)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    # --- the step, in the order it runs ------------------------------------------------------------------------
    def _update_factors(self) -> None:
        """Fold this step's batch factors into the running averages: decay min(1 - 1/k, stat_decay) (M&G §5)."""
        for module, pending in self._pending.items():
            if pending["nA"] == 0 or pending["nG"] == 0:
                continue  # a forward without backward (e.g. a train-mode probe): nothing usable
            state = self.state[module.weight]
            k = state.get("factor_updates", 0) + 1
            decay = min(1.0 - 1.0 / k, self.stat_decay)
            for key in ("A", "G"):
                batch = pending[key] / pending["n" + key]
                state[key] = batch if k == 1 else decay * state[key] + (1.0 - decay) * batch
            state["factor_updates"] = k
        self._pending = {}

    def _refresh_inverses(self, step: int, group_of: dict[int, dict]) -> None:
        for module in self.layers:
            state = self.state[module.weight]
            if "A" in state and (step % self.inv_every == 0 or "A_inv" not in state):
                inverses = damped_inverses(state["A"], state["G"], group_of[id(module.weight)]["damping"])
                if inverses is not None:
                    state["A_inv"], state["G_inv"] = inverses

    def _directions(self) -> dict[int, torch.Tensor]:
        """Preconditioned directions of the K-FAC layers' weights and biases, keyed by id(param)."""
        directions = {}
        for module in self.layers:
            state, weight, bias = self.state[module.weight], module.weight, module.bias
            if weight.grad is None or "A_inv" not in state:
                continue  # no statistics yet: the plain gradient is used
            grad = weight.grad.reshape(weight.shape[0], -1)  # [out, in] or [out, c*kh*kw]
            if bias is not None:
                bias_grad = bias.grad if bias.grad is not None else torch.zeros_like(bias)
                grad = torch.cat([grad, bias_grad[:, None]], dim=1)
            v = precondition(grad, state["A_inv"], state["G_inv"])
            if bias is not None:
                if bias.grad is not None:  # a frozen bias keeps no direction (and takes no step)
                    directions[id(bias)] = v[:, -1].clone()
                v = v[:, :-1]
            directions[id(weight)] = v.reshape(weight.shape)
        return directions

    def _kl_clip_factor(self, directions: dict[int, torch.Tensor], group_of: dict[int, dict]) -> float:
        """nu = min(1, sqrt(kl_clip / sum lr^2 v.g)) over the K-FAC layers (Ba et al. 2017)."""
        if self.kl_clip is None or not directions:
            return 1.0
        params = {id(p): p for group in self.param_groups for p in group["params"]}
        vg = float(sum((v * params[key].grad).sum() * group_of[key]["lr"] ** 2  # one device sync, not one per layer
                       for key, v in directions.items()))
        return min(1.0, math.sqrt(self.kl_clip / vg)) if vg > 0 else 1.0

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        group_of = {id(p): group for group in self.param_groups for p in group["params"]}
        step = self.param_groups[0]["step"]
        self._update_factors()
        self._refresh_inverses(step, group_of)
        directions = self._directions()
        nu = self._kl_clip_factor(directions, group_of)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = directions[id(p)] * nu if id(p) in directions else p.grad.clone()
                if group["weight_decay"]:
                    d.add_(p, alpha=group["weight_decay"])
                if group["momentum"]:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = d  # torch SGD: the first buffer is the first direction
                    else:
                        d = state["momentum_buffer"].mul_(group["momentum"]).add_(d)
                p.add_(d, alpha=-group["lr"])
            group["step"] += 1
        self._forwards = 0
        return loss
