"""Growing a CIFAR net's width during training (Yuan, Savarese & Maire, NeurIPS 2023, "Accelerated Training via
Incrementally Growing Neural Networks using Variance Transfer and Learning Rate Adaptation"; NOTES.md section 2).

From a model at about 1/4 of its target widths, a schedule fixed in advance grows every layer to full width; each
growth step keeps the network's function and the optimizer's state. Variance transfer rescales the weights whose
fan-in grew; LR adaptation gives the parameters created at each growth stage their own learning-rate multiplier.

    schedule = GrowthSchedule((16, 32, 64), 160, 8, 0.25, None, 1.2)           (schedule.py)
    new_model, step = grow(model, widths, "variance_transfer", generator, variance_factor="linear",
                           base_widths=schedule.stage_widths()[0], init_fan="in", net2net_noise=0.0)
    carry_optimizer_state(optimizer, model, new_model, step, rescale_state=True)   in place; new entries get 0
    masks = extend_stage_masks(masks, new_model, step, stage=k)  the growth stage that created every entry
    multipliers = lr_multipliers(new_model, masks, scope="global", include_head=True)   at each growth (epoch)
    factors = extend_lr_compensation(factors, new_model, step)  optional: s^2 LR for weights rescaled before a BN
    scaled_step(optimizer, new_model, multipliers)             optimizer.step() with per-entry LR multipliers
    pipeline.models.flops.schedule_flops(build, widths, epochs, samples)   a schedule's training FLOPs

Choices where the sources are silent are marked "our choice" with the reason; the report must say so.
"""
from __future__ import annotations

import math
from collections import defaultdict
import dataclasses
from dataclasses import dataclass

import torch
from torch import nn


# ---------------------------------------------------------------- configuration

MODES = ("random", "variance_transfer", "net2net")
VARIANCE_EXPONENT = {"linear": 1.0, "sqrt": 0.5}  # rescale factor (C_old / C_new) ** exponent; see grow()
STATE_POWER = {"exp_avg_sq": 2, "max_exp_avg_sq": 2}  # optimizer second moments scale with the weights squared
INIT_FANS = ("in", "out")  # the Kaiming fan of new conv units' std sqrt(2 / fan); see grow()


# ---------------------------------------------------------------- one growth step

@dataclass(frozen=True)
class GrowthStep:
    """What a growth did to every parameter (by name). Old units keep their indices and new units are appended, so
    the old tensor is the leading block new[:d0, :d1, ...] (d = old shape) of the new one, times `old_scale`
    (a float, or a tensor broadcastable to the old shape)."""

    old_shapes: dict[str, tuple[int, ...]]
    old_scale: dict[str, float | torch.Tensor]
    bn_scale: dict[str, float] = dataclasses.field(default_factory=dict)  # variance transfer's s != 1 before a BN


def old_block(shape: tuple[int, ...]) -> tuple[slice, ...]:
    """Index of the old tensor inside the grown one: [:d0, :d1, ...]."""
    return tuple(slice(0, d) for d in shape)


def grow(model: nn.Module, new_widths: tuple[int, ...], mode: str, generator: torch.Generator, *,
         variance_factor: str, base_widths: tuple[int, ...] | None, init_fan: str,
         net2net_noise: float, parameterization: str = "kaiming") -> tuple[nn.Module, GrowthStep]:
    """A new model at `new_widths` computing the same function as `model` (eval mode: BN running statistics;
    train mode: batch statistics), and the GrowthStep mapping old parameters into it. A group of units that grows
    (model.width_groups(); a stage's residual stream is one group: stem or projection shortcut and every conv2
    write it) is widened in every layer that reads or writes it. Every draw uses `generator`, in layer order.
    - "random" (paper Fig. 1b): new units come in pairs with equal incoming weights V (Gaussian: Kaiming std
      sqrt(2 / fan) for convs, fan = k*k*C_in at the new widths for init_fan "in", k*k*C_out for "out" (the
      model's own He init, pipeline.models.init); 1 / sqrt(3 fan_in) for the head, the std of PyTorch's
      U(+-1/sqrt(fan_in)) the model's head starts with; under parameterization "mup" both at the base widths'
      fan-in x C_0 / C_new, parameterization.py) and opposite outgoing weights +Z / -Z in every consumer,
      so a pair cancels. New BN channels: weight 1, bias 0, running mean 0, var 1 -- equal within a pair.
    - "variance_transfer": as "random", and every layer whose fan-in C grew *and that feeds a BN* has its old
      weights (and bias) scaled by s = (C_old / C_new) ** e: e = 1 ("linear", W_{t+1} = W_t C_t / C_{t+1} as the
      growingnet wiki summarises the paper) or 1/2 ("sqrt", Kaiming's std law). Its new entries follow the same
      law: Kaiming std at the base widths (`base_widths`: the schedule's stage 0; fan as init_fan) times
      (C_0 / C_new) ** e, C the fan-in. s is recorded in step.bn_scale: the BN after the layer makes its output
      invariant to the scale of the weights, so s leaves the function alone but raises those weights' effective
      learning rate by 1/s^2 (see extend_lr_compensation).
      Function: the old outputs become s * y; the BN's running mean becomes s * mean and its running var
      s^2 (var + eps) - eps, so (s y - s mean) / sqrt(var' + eps) is the old normalised value exactly (in train
      mode batch statistics absorb s up to eps; var' < 0 is possible for var < eps (1/s^2 - 1), harmless as
      BN only uses var' + eps > 0). The head feeds no BN, so it is never rescaled: not a choice, rescaling the
      logits' weights would change the function the growth must keep. (Its new columns still join their stage's
      LR group: the paper's stage sub-network W_dt spans the whole network.)
    - "net2net" (Chen et al. 2016, Net2WiderNet): each new unit copies a random old unit (incoming weights, bias,
      BN channel with running statistics); every consumer divides the outgoing weights of a unit among it and
      its copies. At net2net_noise 0 the shares are equal, so copies get equal gradients and stay copies (they
      differ only through the source's carried optimizer state). net2net_noise > 0 breaks that symmetry: each
      outgoing entry's shares are (1 + noise * eps) / count with eps ~ N(0, 1) centred over the copies, so they
      still sum to 1 and the function stays exact (our choice: Chen et al. add small noise to the new weights,
      which perturbs the function). Increments need not be even here.
    """
    if mode not in MODES:
        raise ValueError(f"unknown growth mode {mode!r}; known: {MODES}")
    if variance_factor not in VARIANCE_EXPONENT:
        raise ValueError(f"unknown variance_factor {variance_factor!r}; known: {sorted(VARIANCE_EXPONENT)}")
    if parameterization == "mup" and (init_fan != "in" or variance_factor != "linear"):
        raise ValueError("grow: parameterization mup goes with init_fan 'in' and variance_factor 'linear'")
    if init_fan not in INIT_FANS or not net2net_noise >= 0:
        raise ValueError(f"grow: init_fan must be one of {INIT_FANS} (got {init_fan!r}), net2net_noise >= 0 "
                         f"(got {net2net_noise!r})")
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
            w2, b2, step.old_scale[f"{layer}.weight"] = _net2net_layer(w, b, sources.get(g_out), sources.get(g_in),
                                                                        net2net_noise, generator)
            scale = 1.0  # for the bias and the BN: copies keep their source's values
        else:
            i_base = base[groups[g_in]] if g_in in groups else w.shape[1]
            o_base = base[groups[g_out]] if g_out in groups else w.shape[0]
            kernel = math.prod(w.shape[2:])  # k*k of a conv (1 for the head)
            fan_new, fan_base = (i_new, i_base) if init_fan == "in" else (o_new, o_base)
            if mode == "variance_transfer" and norm is not None:  # old weights and new draws: std ~ C_in ** -e
                scale = (w.shape[1] / i_new) ** exponent
                std = math.sqrt(2.0 / (fan_base * kernel)) * (i_base / i_new) ** exponent
            else:  # a fresh init at the new widths: Kaiming's std (PyTorch's for the head)
                scale = 1.0  # under mup (init_fan "in"): both fans at the base widths, the std x C_0 / C_new
                shrink, conv_fan, head_fan = ((i_base / i_new, i_base, i_base) if parameterization == "mup"
                                              else (1.0, fan_new, i_new))
                std = shrink * (math.sqrt(2 / (conv_fan * kernel)) if w.dim() == 4 else 1 / math.sqrt(3 * head_fan))
            w2, b2 = _pair_layer(w, b, o_new, i_new, scale, std, generator)
            names = [f"{layer}.weight"] + ([] if b is None else [f"{layer}.bias"])
            step.old_scale.update({n: scale for n in names})
            if scale != 1.0:  # variance transfer before a BN: same function, but effective LR x 1/s^2 (see above)
                step.bn_scale.update({n: scale for n in names})
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


def _net2net_layer(w, b, out_sources, in_sources, noise, generator):
    """Rows copied along the output group's sources; columns copied along the input group's sources, each
    entry times its share of the source's column (1 / count, perturbed by `noise`, see grow()). Returns the
    weight, the bias and the old weight's factor (a tensor over the old block)."""
    if out_sources is not None:
        src = out_sources[0].to(w.device)
        w, b = w[src], None if b is None else b[src]
    if in_sources is None:
        return w, b, 1.0
    src, count = (t.to(w.device) for t in in_sources)
    shape = (1, -1) + (1,) * (w.dim() - 2)
    share = (1.0 / count.to(w)[src]).view(shape).expand(w.shape[0], -1, *w.shape[2:])
    if noise > 0:  # eps [O, I_new, *k], centred over the copies of each source: the shares still sum to 1
        eps = torch.randn((w.shape[0], len(src), *w.shape[2:]), generator=generator, device=generator.device).to(w)
        mean = torch.zeros_like(w).index_add_(1, src, eps) / count.to(w).view(shape)
        share = share * (1.0 + noise * (eps - mean[:, src]))
    old = tuple(slice(0, d) for d in (w.shape[0] if out_sources is None else len(out_sources[1]), len(count)))
    return w[:, src] * share, b, share[old]


def _net2net_norm(bn, src):
    """BatchNorm state copied channel by channel along src (a copy normalises exactly like its source)."""
    return {k: v if k == "num_batches_tracked" else v[src.to(v.device)] for k, v in bn.items()}


# ---------------------------------------------------------------- optimizer state across a growth

def carry_optimizer_state(optimizer: torch.optim.Optimizer, old_model: nn.Module, new_model: nn.Module,
                          step: GrowthStep, rescale_state: bool) -> torch.optim.Optimizer:
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


def lr_multipliers(model: nn.Module, masks: dict[str, torch.Tensor], scope: str,
                   include_head: bool) -> dict[str, torch.Tensor]:
    """Parameter name -> float tensor of its shape: the LR multiplier of each entry, eta_t / eta_0 =
    ||W_dt||_F / ||W_0||_F for the entries created at stage t (growingnet wiki's summary of the paper's LR
    adaptation; stage 0 gets 1). Norms are over conv/linear weights (>= 2-D); BN affine and bias entries take
    the multiplier of their stage.
    scope "global" (the paper's W_dt is the sub-network of stage t across the whole net): one ratio per
    stage over all weights. "layer": each weight tensor's own ratios (1-D parameters keep the global ones).
    include_head False (params growth.method.lr_include_head): the classifier `head` is left out of the norms
    and keeps multiplier 1. Parameters with only stage-0 entries are left out (multiplier 1). Recompute at each
    growth, and at every epoch start or not (params growth.method.lr_recompute; the sources do not say how often).
    """
    if scope not in ("global", "layer"):
        raise ValueError(f"unknown LR-adaptation scope {scope!r}; known: ('global', 'layer')")
    params = {n: p for n, p in model.named_parameters() if include_head or not n.startswith("head.")}
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


def stage_multipliers(model: nn.Module, masks: dict[str, torch.Tensor], multipliers: dict[str, torch.Tensor],
                      include_head: bool) -> list[float | None]:
    """Every stage's LR multiplier, stages 0..max(masks): the mean over the conv/linear weight entries that
    stage created (in scope "global" they all share one value; the head only with include_head, as in
    lr_multipliers); None for a stage that created no such weight."""
    stages = 1 + max(int(m.max()) for m in masks.values())
    sums, counts = torch.zeros(stages, dtype=torch.float64), torch.zeros(stages, dtype=torch.float64)
    for name, p in model.named_parameters():
        if p.dim() >= 2 and (include_head or not name.startswith("head.")):
            index = masks[name].flatten().long().cpu()
            m = multipliers[name].detach().flatten().double().cpu() if name in multipliers else torch.ones(len(index))
            sums.index_add_(0, index, m.double())
            counts.index_add_(0, index, torch.ones(len(index), dtype=torch.float64))
    return [float(s / c) if c else None for s, c in zip(sums, counts)]


def extend_lr_compensation(factors: dict[str, torch.Tensor], new_model: nn.Module,
                           step: GrowthStep) -> dict[str, torch.Tensor]:
    """Per-entry LR factors compensating variance transfer under BatchNorm (params growth.method.vt_compensate_lr;
    the paper does not compensate). A layer followed by BN is scale-invariant: scaling its weights by s leaves
    the function unchanged, but the gradient scales by 1/s and the relative step lr * g / w by 1/s^2. So the
    entries rescaled by s get their LR multiplied by s^2 (cumulative over growths; new entries 1), which keeps
    their relative step. Exact for the gradient term when a unit's whole incoming row is rescaled; approximate
    when new input columns join the row, and it does not make weight decay or carried momentum invariant."""
    out = {}
    for name, p in new_model.named_parameters():
        s = step.bn_scale.get(name, 1.0)
        if name not in factors and s == 1.0:
            continue
        factor = torch.ones_like(p.detach())
        factor[old_block(step.old_shapes[name])] = factors[name] * s ** 2 if name in factors else s ** 2
        out[name] = factor
    return out


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


# ---------------------------------------------------------------- the scale a growth leaves the weights at
@torch.no_grad()
def scale_ratio(grown: nn.Module, fresh: nn.Module) -> float:
    """Mean over the convolutions of RMS(grown weight) / RMS(fresh weight): the grown network's weight scale
    against a freshly initialised one of the same widths and initialisation convention (1.0: variance transfer
    kept the initialisation's scale; a smaller value acts as a larger effective LR under BatchNorm)."""
    fresh_weights = dict(fresh.named_parameters())
    rms = lambda w: float(w.detach().pow(2).mean().sqrt())  # noqa: E731  (on any device)
    ratios = [rms(w) / rms(fresh_weights[n]) for n, w in grown.named_parameters() if w.dim() == 4 and n in fresh_weights]
    return sum(ratios) / len(ratios)
