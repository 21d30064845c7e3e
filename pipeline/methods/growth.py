"""Growing a CIFAR net's width during training (Yuan, Savarese & Maire, NeurIPS 2023, "Accelerated Training via
Incrementally Growing Neural Networks using Variance Transfer and Learning Rate Adaptation"; NOTES.md section 2).

From a model at about 1/4 of its target widths, a schedule fixed in advance grows every layer to full width; each
growth step keeps the network's function and the optimizer's state. Variance transfer rescales the weights whose
fan-in grew; LR adaptation gives the parameters created at each growth stage their own learning-rate multiplier.

    schedule = GrowthSchedule(full_widths=(16, 32, 64), total_epochs=160)
    schedule.stage_widths()   -> [(4, 8, 16), (4, 10, 20), ..., (16, 32, 64)]     widths of stages 0..G
    schedule.growth_epochs()  -> [e_1, ..., e_G]      growth k happens after e_k completed epochs
    new_model, step = grow(model, widths, "variance_transfer", generator, base_widths=schedule.stage_widths()[0])
    carry_optimizer_state(optimizer, model, new_model, step)   in place: old entries keep their state, new get 0
    masks = extend_stage_masks(masks, new_model, step, stage=k)  the growth stage that created every entry
    multipliers = lr_multipliers(new_model, masks)             recompute at each growth and every epoch start
    scaled_step(optimizer, new_model, multipliers)             optimizer.step() with per-entry LR multipliers
    pipeline.models.flops.schedule_flops(build, widths, epochs, samples)   a schedule's training FLOPs

Choices where the sources are silent are marked "our choice" with the reason; the report must say so.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import torch
from torch import nn

from pipeline.models import build_model  # noqa: F401  (re-exported: the growable models by name)

# ---------------------------------------------------------------- configuration

MODES = ("random", "variance_transfer", "net2net")
VARIANCE_EXPONENT = {"linear": 1.0, "sqrt": 0.5}  # rescale factor (C_old / C_new) ** exponent; see grow()
START_FRACTION = 0.25        # "from about 1/4 of the target width" (NOTES.md section 2)
NUM_GROWTHS = 8              # "8 growth steps" (NOTES.md section 2)
STAGE_LENGTH_RATIO = 1.2     # "stage lengths growing by about 20% each" (NOTES.md section 2); 1.0: fixed intervals
STATE_POWER = {"exp_avg_sq": 2, "max_exp_avg_sq": 2}  # optimizer second moments scale with the weights squared


# ---------------------------------------------------------------- the schedule (pure functions)

def scaled_widths(full_widths: tuple[int, ...], fraction: float) -> tuple[int, ...]:
    """`fraction` of every width, rounded so that full - width is even (growth adds whole pairs of units) and
    at least one pair (one unit for an odd full width). E.g. ((16, 32, 64), 0.25) -> (4, 8, 16)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"width fraction must be in (0, 1], got {fraction!r}")
    nearest = lambda full: full - 2 * math.floor((full - full * fraction) / 2 + 0.5)  # same parity as full
    return tuple(max(nearest(full), 2 - full % 2) for full in full_widths)


def stage_widths(full_widths: tuple[int, ...], num_growths: int = NUM_GROWTHS, start_fraction: float | None = None,
                 growth_ratio: float | None = None) -> list[tuple[int, ...]]:
    """Widths of stages 0..num_growths, geometric from `start_fraction` of full width to exactly full width.

    The sources' numbers do not add up: 1/4 * 1.2**8 = 1.07. Our choice: give one of start fraction and growth
    ratio, derive the other so that start * ratio**G = 1: start 1/4 gives ratio 4**(1/8) = 1.19 (each growth adds
    about 19% of the current width), ratio 1.2 gives start 1.2**-8 = 0.23. Rounded to pairs by scaled_widths, a
    narrow group may skip a step where 19% of it is less than a pair; the last stage is exactly full width.
    """
    full = tuple(int(w) for w in full_widths)
    if start_fraction is not None and growth_ratio is not None:
        raise ValueError("give start_fraction or growth_ratio, not both (start * ratio**num_growths must be 1)")
    if not isinstance(num_growths, int) or num_growths < 0:
        raise ValueError(f"num_growths must be a non-negative int, got {num_growths!r}")
    if num_growths == 0:
        return [full]
    start = growth_ratio ** -num_growths if growth_ratio is not None else (
        START_FRACTION if start_fraction is None else start_fraction)
    if not 0 < start <= 1:
        raise ValueError(f"start width fraction must be in (0, 1] (growth_ratio > 1), got {start!r}")
    ratio = start ** (-1.0 / num_growths)
    return [scaled_widths(full, min(1.0, start * ratio ** k)) for k in range(num_growths)] + [full]


def growth_epochs(total_epochs: int, num_growths: int = NUM_GROWTHS,
                  stage_length_ratio: float = STAGE_LENGTH_RATIO) -> list[int]:
    """Epoch boundaries of the growths: growth k (1..G) happens after growth_epochs[k-1] completed epochs.

    Stage k lasts about L0 * ratio**k epochs, the G + 1 stages summing to total_epochs (ratio 1: equal stages);
    boundaries are rounded to whole epochs and every stage keeps at least one epoch.
    """
    if num_growths < 0 or total_epochs < num_growths + 1 or not stage_length_ratio > 0:
        raise ValueError(f"total_epochs={total_epochs} cannot hold {num_growths + 1} growth stages of at least one "
                         f"epoch each (stage_length_ratio={stage_length_ratio} must be > 0)")
    lengths = [stage_length_ratio ** k for k in range(num_growths + 1)]
    scale, cumulative, bounds = total_epochs / sum(lengths), 0.0, []
    for length in lengths[:-1]:
        cumulative += length * scale
        bounds.append(math.floor(cumulative + 0.5))
    for k in range(num_growths):  # every stage at least one epoch: push up from the start, then down from the end
        bounds[k] = max(bounds[k], (bounds[k - 1] if k else 0) + 1)
    for k in reversed(range(num_growths)):
        bounds[k] = min(bounds[k], (bounds[k + 1] if k + 1 < num_growths else total_epochs) - 1)
    return bounds


@dataclass(frozen=True)
class GrowthSchedule:
    """A growth schedule: per-stage widths and the epochs at which growths happen (see the functions above)."""

    full_widths: tuple[int, ...]
    total_epochs: int
    num_growths: int = NUM_GROWTHS
    start_fraction: float | None = None   # None and growth_ratio None: START_FRACTION
    growth_ratio: float | None = None     # alternative to start_fraction; start = growth_ratio ** -num_growths
    stage_length_ratio: float = STAGE_LENGTH_RATIO

    def stage_widths(self) -> list[tuple[int, ...]]:
        return stage_widths(self.full_widths, self.num_growths, self.start_fraction, self.growth_ratio)

    def growth_epochs(self) -> list[int]:  # growth k happens after growth_epochs()[k-1] completed epochs
        return growth_epochs(self.total_epochs, self.num_growths, self.stage_length_ratio)

    def stage_epochs(self) -> list[int]:
        """Length in epochs of every stage."""
        bounds = [0, *self.growth_epochs(), self.total_epochs]
        return [b - a for a, b in zip(bounds, bounds[1:])]

    def stage_at(self, epoch: int) -> int:
        """The stage that trains 0-based epoch `epoch` (the number of growths done before it)."""
        return sum(1 for e in self.growth_epochs() if e <= epoch)


# ---------------------------------------------------------------- one growth step

@dataclass(frozen=True)
class GrowthStep:
    """What a growth did to every parameter (by name). Old units keep their indices and new units are appended, so
    the old tensor is the leading block new[:d0, :d1, ...] (d = old shape) of the new one, times `old_scale`
    (a float, or a tensor broadcastable to the old shape)."""

    old_shapes: dict[str, tuple[int, ...]]
    old_scale: dict[str, float | torch.Tensor]


def old_block(shape: tuple[int, ...]) -> tuple[slice, ...]:
    """Index of the old tensor inside the grown one: [:d0, :d1, ...]."""
    return tuple(slice(0, d) for d in shape)


def grow(model: nn.Module, new_widths: tuple[int, ...], mode: str, generator: torch.Generator, *,
         variance_factor: str = "linear", base_widths: tuple[int, ...] | None = None) -> tuple[nn.Module, GrowthStep]:
    """A new model at `new_widths` computing the same function as `model` (eval mode: BN running statistics;
    train mode: batch statistics), and the GrowthStep mapping old parameters into it. A group of units that grows
    (model.width_groups(); a stage's residual stream is one group: stem or projection shortcut and every conv2
    write it) is widened in every layer that reads or writes it. Every draw uses `generator`, in layer order.
    - "random" (paper Fig. 1b): new units come in pairs with equal incoming weights V (Gaussian at the
      new fan-in: Kaiming std sqrt(2 / fan_in) for convs; 1 / sqrt(3 fan_in) for the head, the std of PyTorch's
      U(+-1/sqrt(fan_in))) and opposite outgoing weights +Z / -Z in every consumer, so a pair cancels. New BN
      channels: weight 1, bias 0, running mean 0, var 1 -- equal within a pair, all the cancellation needs.
    - "variance_transfer": as "random", and every layer whose fan-in C grew *and that feeds a BN* has its old
      weights (and bias) scaled by s = (C_old / C_new) ** e: e = 1 ("linear", W_{t+1} = W_t C_t / C_{t+1} as the
      growingnet wiki summarises the paper) or 1/2 ("sqrt", Kaiming's std law). Its new entries follow the same
      law: Kaiming std at the base fan-in C_0 (`base_widths`: the schedule's stage 0) times (C_0 / C_new) ** e.
      Function: the old outputs become s * y; the BN's running mean becomes s * mean and its running var
      s^2 (var + eps) - eps, so (s y - s mean) / sqrt(var' + eps) is the old normalised value exactly (in train
      mode batch statistics absorb s up to eps; var' < 0 is possible for var < eps (1/s^2 - 1), harmless as
      BN only uses var' + eps > 0). The head feeds no BN: never rescaled (our choice: it would change the function).
    - "net2net" (Chen et al. 2016, Net2WiderNet): each new unit copies a random old unit (incoming weights, bias,
      BN channel with running statistics); every consumer divides the outgoing weights of a unit among it and
      its copies. No symmetry-breaking noise (the function stays exact): a copy differs from its source only
      through the source's carried optimizer state. Increments need not be even here.
    """
    if mode not in MODES:
        raise ValueError(f"unknown growth mode {mode!r}; known: {MODES}")
    if variance_factor not in VARIANCE_EXPONENT:
        raise ValueError(f"unknown variance_factor {variance_factor!r}; known: {sorted(VARIANCE_EXPONENT)}")
    old, new = tuple(model.widths), tuple(int(w) for w in new_widths)
    base = old if base_widths is None else tuple(base_widths)
    if len(new) != len(old) or len(base) != len(old) or any(n < o for n, o in zip(new, old)):
        raise ValueError(f"grow: widths {new} (base {base}) must have {len(old)} entries, each >= current {old}")
    if mode != "net2net" and any((n - o) % 2 for n, o in zip(new, old)):
        raise ValueError(f"grow: mode {mode!r} adds units in pairs, so {old} -> {new} must grow by even counts")
    groups, exponent = model.width_groups(), VARIANCE_EXPONENT[variance_factor]
    sources = {g: _copy_sources(old[i], new[i], generator) for g, i in groups.items()} if mode == "net2net" else {}
    first = next(model.parameters())
    new_model = model.with_widths(new).to(device=first.device, dtype=first.dtype).train(model.training)
    old_state, state = model.state_dict(), {}
    step = GrowthStep({n: tuple(p.shape) for n, p in model.named_parameters()},
                      {n: 1.0 for n, _ in model.named_parameters()})
    for layer, norm, g_in, g_out in model.growth_layers():
        w, b = old_state[f"{layer}.weight"], old_state.get(f"{layer}.bias")
        o_new = new[groups[g_out]] if g_out in groups else w.shape[0]
        i_new = new[groups[g_in]] if g_in in groups else w.shape[1]
        if mode == "net2net":
            w2, b2, step.old_scale[f"{layer}.weight"] = _net2net_layer(w, b, sources.get(g_out), sources.get(g_in))
            scale = 1.0  # for the bias and the BN: copies keep their source's values
        else:
            fan, i_base = math.prod(w.shape[2:]), (base[groups[g_in]] if g_in in groups else w.shape[1])
            if mode == "variance_transfer" and norm is not None:  # old weights and new draws: std ~ C ** -e
                scale = (w.shape[1] / i_new) ** exponent
                std = math.sqrt(2.0 / (i_base * fan)) * (i_base / i_new) ** exponent
            else:
                scale = 1.0
                std = math.sqrt(2.0 / (i_new * fan)) if w.dim() == 4 else 1.0 / math.sqrt(3.0 * i_new)
            w2, b2 = _pair_layer(w, b, o_new, i_new, scale, std, generator)
            step.old_scale.update({f"{layer}.weight": scale} if b is None else
                                  {f"{layer}.weight": scale, f"{layer}.bias": scale})
        state.update({f"{layer}.weight": w2} if b is None else {f"{layer}.weight": w2, f"{layer}.bias": b2})
        if norm is not None:
            bn = {k[len(norm) + 1:]: v for k, v in old_state.items() if k.startswith(norm + ".")}
            grown = (_net2net_norm(bn, sources[g_out][0]) if mode == "net2net"
                     else _pair_norm(bn, o_new, scale, model.get_submodule(norm).eps))
            state.update({f"{norm}.{k}": v for k, v in grown.items()})
    missing = sorted(set(new_model.state_dict()) - set(state))
    if missing:
        raise ValueError(f"grow: {type(model).__name__}.growth_layers() does not cover {missing[:3]}")
    new_model.load_state_dict(state)
    return new_model, step


def _pair_layer(w, b, o_new, i_new, scale, std, generator):
    """weight [O, I, *k] -> [o_new, i_new, *k], bias [O] -> [o_new]; new rows/columns are appended in pairs."""
    o_old, i_old, kernel = w.shape[0], w.shape[1], tuple(w.shape[2:])
    pairs_out, pairs_in = (o_new - o_old) // 2, (i_new - i_old) // 2
    draw = lambda *shape: (torch.randn(shape, generator=generator, device=generator.device) * std).to(w)
    out = w.new_empty((o_new, i_new, *kernel))
    out[:o_old, :i_old] = w * scale
    if pairs_out:  # new output units: pair-equal incoming weights V (rows 2j, 2j+1 of the new block)
        out[o_old:] = draw(pairs_out, i_new, *kernel).repeat_interleave(2, dim=0)
    if pairs_in:   # new input units (equal within a pair): columns +Z, -Z; rows of new output pairs stay equal
        z = draw(o_old + pairs_out, pairs_in, *kernel)
        z = torch.cat([z[:o_old], z[o_old:].repeat_interleave(2, dim=0)])
        out[:, i_old::2], out[:, i_old + 1::2] = z, -z
    bias = None if b is None else torch.cat([b * scale, b.new_zeros(o_new - o_old)])
    return out, bias


def _pair_norm(bn, n_new, scale, eps):
    """BatchNorm state of n_old channels -> n_new: old running stats follow the rescaled input (see grow())."""
    added = n_new - bn["running_mean"].numel()
    var = bn["running_var"] if scale == 1.0 else scale ** 2 * (bn["running_var"] + eps) - eps
    cat = lambda old, fill: torch.cat([old, torch.full((added,), fill, dtype=old.dtype, device=old.device)])
    return {"weight": cat(bn["weight"], 1.0), "bias": cat(bn["bias"], 0.0),
            "running_mean": cat(bn["running_mean"] * scale, 0.0), "running_var": cat(var, 1.0),
            "num_batches_tracked": bn["num_batches_tracked"]}


def _copy_sources(n_old, n_new, generator):
    """Net2Net's random mapping: unit i of the grown group copies unit src[i] (src[:n_old] = identity), and
    count[j] = how many units now carry old unit j (itself included)."""
    copies = torch.randint(n_old, (n_new - n_old,), generator=generator, device=generator.device).cpu()
    src = torch.cat([torch.arange(n_old), copies])
    return src, torch.bincount(src, minlength=n_old)


def _net2net_layer(w, b, out_sources, in_sources):
    """Rows copied along the output group's sources; columns copied along the input group's sources and
    divided by their source's copy count. Returns the weight, the bias and the old weight's factor."""
    if out_sources is not None:
        src = out_sources[0].to(w.device)
        w, b = w[src], None if b is None else b[src]
    if in_sources is None:
        return w, b, 1.0
    src, count = (t.to(w.device) for t in in_sources)
    shape = (1, -1) + (1,) * (w.dim() - 2)
    return w[:, src] / count.to(w)[src].view(shape), b, 1.0 / count.to(w).view(shape)


def _net2net_norm(bn, src):
    """BatchNorm state copied channel by channel along src (a copy normalises exactly like its source)."""
    return {k: v if k == "num_batches_tracked" else v[src.to(v.device)] for k, v in bn.items()}


# ---------------------------------------------------------------- optimizer state across a growth

def carry_optimizer_state(optimizer: torch.optim.Optimizer, old_model: nn.Module, new_model: nn.Module,
                          step: GrowthStep, rescale_state: bool = True) -> torch.optim.Optimizer:
    """Point `optimizer` at new_model's parameters, in place (so an attached LR scheduler keeps working), and
    carry its state: every per-entry state tensor (momentum buffer, Adam moments) is copied into the old block
    of a zero tensor of the new shape, so new units start with zero state. Scalars (Adam's step) are kept.

    rescale_state (our choice; the sources are silent on momentum at a growth): multiply the carried state by
    the same factor as the old weights (squared for second moments), so that a buffer keeps its size relative
    to its weights under variance transfer and stays consistent with Net2Net's split outgoing weights.
    """
    name_of = {id(p): n for n, p in old_model.named_parameters()}
    new_params, state = dict(new_model.named_parameters()), defaultdict(dict)
    for group in optimizer.param_groups:
        carried = []
        for p in group["params"]:
            if id(p) not in name_of:
                raise ValueError("carry_optimizer_state: the optimizer holds a tensor not in old_model")
            name, q = name_of[id(p)], new_params[name_of[id(p)]]
            carried.append(q)
            for key, value in optimizer.state.get(p, {}).items():
                if torch.is_tensor(value) and value.shape == p.shape:
                    factor = step.old_scale[name] ** STATE_POWER.get(key, 1) if rescale_state else 1.0
                    grown = torch.zeros_like(q)
                    grown[old_block(p.shape)] = value * factor
                    value = grown
                state[q][key] = value
        group["params"] = carried
    optimizer.state = state
    return optimizer


# ---------------------------------------------------------------- LR adaptation

def initial_stage_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameter name -> uint8 tensor of its shape: the growth stage that created each entry (all 0 at start)."""
    return {n: torch.zeros(p.shape, dtype=torch.uint8, device=p.device) for n, p in model.named_parameters()}


def extend_stage_masks(masks: dict[str, torch.Tensor], new_model: nn.Module, step: GrowthStep,
                       stage: int) -> dict[str, torch.Tensor]:
    """Masks of the grown model: old entries keep their stage, entries created by this growth get `stage`."""
    out = {n: torch.full(p.shape, stage, dtype=torch.uint8, device=p.device) for n, p in new_model.named_parameters()}
    for name, mask in out.items():
        mask[old_block(step.old_shapes[name])] = masks[name]
    return out


def lr_multipliers(model: nn.Module, masks: dict[str, torch.Tensor], scope: str = "global") -> dict[str, torch.Tensor]:
    """Parameter name -> float tensor of its shape: the LR multiplier of each entry, eta_t / eta_0 =
    ||W_dt||_F / ||W_0||_F for the entries created at stage t (growingnet wiki's summary of the paper's LR
    adaptation; stage 0 gets 1). Norms are over conv/linear weights (>= 2-D); BN affine and bias entries take
    the multiplier of their stage.
    scope "global" (default; the paper's W_dt is the sub-network of stage t across the whole net): one ratio per
    stage over all weights. "layer": each weight tensor's own ratios (1-D parameters keep the global ones).
    Parameters with only stage-0 entries are left out (multiplier 1). Recompute at each growth and every epoch
    (our choice: norms drift slowly; per step would cost a pass over the weights).
    """
    if scope not in ("global", "layer"):
        raise ValueError(f"unknown LR-adaptation scope {scope!r}; known: ('global', 'layer')")
    params = dict(model.named_parameters())
    weights = [n for n, p in params.items() if p.dim() >= 2]
    stages = 1 + max(int(m.max()) for m in masks.values())

    def ratios(names):  # stage -> ||entries of that stage||_F / ||stage-0 entries||_F
        squares = torch.zeros(stages, dtype=torch.float64, device=params[names[0]].device)
        for n in names:
            squares.index_add_(0, masks[n].flatten().long(), params[n].detach().flatten().double() ** 2)
        norms = squares.sqrt()
        return norms / norms[0] if norms[0] > 0 else torch.ones_like(norms)

    table = ratios(weights)
    own = lambda n, p: ratios([n]) if scope == "layer" and p.dim() >= 2 else table
    return {n: own(n, p).to(p.dtype)[masks[n].long()] for n, p in params.items() if masks[n].any()}


def scaled_step(optimizer: torch.optim.Optimizer, model: nn.Module, multipliers: dict[str, torch.Tensor]) -> None:
    """optimizer.step() with a per-entry LR multiplier: p <- p_before + m * (p_after - p_before). Our choice:
    slices of a tensor cannot sit in different param groups, and scaling gradients would leave weight decay and
    momentum unscaled; for SGD (momentum, Nesterov, weight decay) and Adam/AdamW the update is lr times a term
    and the state does not involve lr, so scaling the update is exactly a per-entry learning rate."""
    params = dict(model.named_parameters())
    before = {n: params[n].detach().clone() for n in multipliers}
    optimizer.step()
    with torch.no_grad():
        for n, m in multipliers.items():
            params[n].copy_(torch.lerp(before[n], params[n], m))
