"""The cost plan of a profile: per experiment its jobs, their training FLOPs, GPU-hours and wall-clock.

    dag.stages(params) --train_/tune_ stages--> jobs: (experiment, variant or tuning job, seeds per job)
        --the experiment's cost hook (registry.Experiment.cost)--> Cost of one run, or of one tuning job
        --/ (an accelerator's peak FLOP/s x efficiency, or this machine's measured FLOP/s)--> GPU-hours
        --longest job first onto N GPUs x k slots--> wall-clock

The FLOPs are the harness's own analytic counts (pipeline.models.flops, lstm_lm.flops_per_token): 3x the forward
FLOPs of every sample or token drawn (plus EDBA's selection passes, growth's narrower early stages), the number a
run records as metrics.json train_flops; evaluation adds 1x forward per test or validation example scored. Jobs
come from the DAG, so grouping seeds per job (`job_per`) changes the jobs, never the FLOPs. The host knows no
experiment by name: one without the hook, or a hook that has no estimate, shows n/a.

A cost hook is `cost(settings, sizes, kind) -> Cost | None`: settings of one variant, sizes {dataset: DataSize},
kind "train" (one run: one seed), "tune" (the tuning job named after the variant) or "step" (one training step,
Cost.step builds it on a device: --calibrate times it). It imports torch inside, never at package import.
"""
from __future__ import annotations

import functools
import heapq
import json
import statistics
import textwrap
import time
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

from .errors import ConfigError


# ---------------------------------------------------------------------------------------------- the hook's terms
@dataclass(frozen=True)
class DataSize:
    """What a cost needs of a dataset, known without reading it: examples per split and classes."""

    train: int  # training images, or tokens of a text dataset
    test: int  # test images or tokens
    valid: int  # validation tokens of a text dataset (0: images have none besides a tuning split)
    classes: int  # classes, or the vocabulary of a text dataset
    subsets: dict[str, int] = field(default_factory=dict)  # subset -> samples (the same size for every seed)

    def size(self, subset: str | None) -> int:
        return self.train if subset in (None, "full") else self.subsets[subset]


@dataclass(frozen=True)
class Cost:
    """FLOPs of one run (or one tuning job, or one step) as the harness counts them."""

    train_flops: int  # 3x forward per sample or token drawn, over every epoch, + any extra forward passes
    eval_flops: int = 0  # 1x forward per example evaluated (test, validation)
    runs: int = 1  # trainings it covers: 1 for a run, the grid points of a tuning job
    notes: tuple[str, ...] = ()  # how it is counted where it is an estimate or leaves something out
    paper_flops: int | None = None  # the same run under the papers' own reading, where the project's costs more
    deviation: str = ""  # that choice, and the reason it is kept
    step: Callable | None = None  # kind "step": step(device) -> a function running one training step there


# ---------------------------------------------------------------------------------------------- accelerators
# Peak dense FLOP/s (no 2:4 sparsity) from the vendors' datasheets; tf32 and bf16 are tensor-core rates, halved
# where the sheet quotes them "with sparsity" (*). None: no published peak, or no hardware path, for that precision.
ACCELERATORS: dict[str, dict[str, float | None]] = {
    "h100": {"fp32": 67e12, "tf32": 494.7e12, "bf16": 989.4e12},  # NVIDIA H100 SXM5 datasheet: 67, 989*, 1,979*
    "a100": {"fp32": 19.5e12, "tf32": 156e12, "bf16": 312e12},  # NVIDIA A100 datasheet (SXM, dense)
    "v100": {"fp32": 15.7e12, "tf32": 15.7e12, "bf16": None},  # NVIDIA V100 SXM2 datasheet; no TF32 (runs fp32), bf16
    "l4": {"fp32": 30.3e12, "tf32": 60e12, "bf16": 121e12},  # NVIDIA L4 datasheet: 30.3, 120*, 242*
    "a10g": {"fp32": 31.2e12, "tf32": None, "bf16": None},  # AWS g5: the A10 datasheet's FP32; tensor: unpublished
    "rtx4090": {"fp32": 82.6e12, "tf32": 82.6e12, "bf16": 165.2e12},  # NVIDIA Ada Lovelace whitepaper (dense)
    "cpu": {},  # this machine: measured on one real training step (--calibrate)
}
# fp32 is the default: the params train in fp32 (no autocast). PyTorch runs convolutions on TF32 tensor cores by
# default on Ampere and later (torch.backends.cudnn.allow_tf32) but matmuls and LSTMs in fp32: fp32 is the safe peak
PRECISIONS = ("fp32", "tf32", "bf16")
DEFAULT_EFFICIENCY = 0.1
EFFICIENCY_REASON = ("small CNNs (16-64 channels) and LSTMs at batch 64-128 in fp32, unfused and uncompiled, are "
                     "bound by kernel launches and memory, not arithmetic (a PreResNet-56 step at batch 100: ~75 GFLOP "
                     "in ~1,000 kernels), so they sustain a small fraction of peak")


def throughput(device: str, precision: str, efficiency: float) -> float:
    """FLOP/s one GPU of `device` sustains: its peak at `precision` x efficiency. One-line errors for unknowns."""
    if device not in ACCELERATORS:
        raise ConfigError(f"--device {device}: unknown accelerator; known: {', '.join(ACCELERATORS)} "
                          f"(cpu: this machine, measured by --calibrate)")
    if device == "cpu":
        raise ConfigError("--device cpu: this machine's FLOP/s is measured, not looked up (--calibrate)")
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision {precision}: one of {', '.join(PRECISIONS)}")
    if not 0 < efficiency <= 1:
        raise ConfigError(f"--efficiency {efficiency}: a fraction of peak in (0, 1]")
    peak = ACCELERATORS[device][precision]
    if peak is None:
        raise ConfigError(f"--device {device}: no published {precision} peak; use --precision fp32")
    return peak * efficiency


# ---------------------------------------------------------------------------------------------- data sizes
# The published sizes of the real datasets (train, test, valid, classes); the synthetic ones follow params.
PUBLISHED = {"cifar10": (50_000, 10_000, 0, 10), "cifar100": (50_000, 10_000, 0, 100),  # cs.toronto.edu/~kriz
             "ptb": (929_589, 82_430, 73_760, 10_000)}  # Mikolov's PTB (pipeline/data/ptb.py)


def data_sizes(params) -> dict[str, DataSize | None]:
    """Every dataset of params.data.datasets: synthetic sizes from params, real ones published, or read from its
    prepared meta.json (an image folder); None where none of these is known."""
    from .data.subsets import subset_sizes

    out: dict[str, DataSize | None] = {}
    for name, ds in params.data.datasets.items():
        if params.synthetic and ds.kind == "ptb":
            t = params.data.synthetic.text
            shape = (t.train_tokens, t.test_tokens, t.valid_tokens, t.vocab_size)
        elif params.synthetic:
            i, classes = params.data.synthetic.images, params.data.synthetic.images.classes(ds.kind)
            shape = (classes * i.train_per_class, classes * i.test_per_class, 0, classes)
        else:
            shape = PUBLISHED.get(ds.kind) or _prepared_shape(params, name)
        subsets = subset_sizes(ds.subsets, shape[0], shape[3], name) if shape and ds.subsets else {}
        out[name] = DataSize(*shape, subsets=subsets) if shape else None
    return out


def _prepared_shape(params, name: str) -> tuple | None:
    meta = params.prepared_dir(name) / "meta.json"
    m = json.loads(meta.read_text()) if meta.is_file() else {}
    if "counts" not in m or bool(m.get("synthetic")) != params.synthetic:
        return None
    return (m["counts"]["train"], m["counts"]["test"], 0, len(m["classes"]))


@functools.cache
def model_flops(name: str, classes: int, widths: tuple | None) -> int:
    """Forward FLOPs of one 3x32x32 image through pipeline.models.build_model(name, classes, widths), counted by
    pipeline.models.flops.conv_linear_flops on the CPU (cached: the plan builds each model once)."""
    import torch

    from .models import build_model
    from .models.flops import conv_linear_flops

    return conv_linear_flops(build_model(name, classes, widths, generator=torch.Generator().manual_seed(0)))


def image_step(build: Callable, classes: int, batch: int) -> Callable:
    """step(device) -> a function running one training step of build(device) -> (model, optimizer) on a random
    batch [batch, 3, 32, 32]: forward, cross-entropy, backward, optimizer step (the image loop's, without drawing)."""
    def on(device):
        import torch
        import torch.nn.functional as F

        model, optimizer = build(device)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(batch, 3, 32, 32, generator=g).to(device)
        y = torch.randint(0, classes, (batch,), generator=g).to(device)

        def step():
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return step
    return on


# ---------------------------------------------------------------------------------------------- jobs and costs
class Job(NamedTuple):
    kind: str  # "train" or "tune"
    experiment: str
    name: str  # the variant (train) or the tuning job (tune)
    seeds: tuple[int, ...]  # the seeds a training job trains in turn; () for a tuning job


def jobs(params) -> list[Job]:
    """The training and tuning jobs of the DAG (`python -m pipeline train|tune <experiment> <name> ...`)."""
    from .dag import stages

    out = []
    for stage in stages(params):
        words = stage.cmd.split()
        if words[:3] != ["python", "-m", "pipeline"] or words[3] not in ("train", "tune"):
            continue
        seeds = tuple(params.seeds)
        if "--seeds" in words:
            seeds = tuple(int(s) for s in words[words.index("--seeds") + 1].split(","))
        out.append(Job(words[3], words[4], words[5], seeds if words[3] == "train" else ()))
    return out


@dataclass
class Row:
    """One line of the plan: the training (or tuning) jobs of one experiment."""

    experiment: str
    kind: str
    jobs: int = 0
    runs: int = 0
    train_flops: int = 0
    eval_flops: int = 0
    paper_flops: int = 0  # train FLOPs under the papers' reading (= train_flops where they agree)
    missing: int = 0  # jobs without an estimate (n/a)
    job_flops: list[int] = field(default_factory=list)  # FLOPs of every estimated job, for the wall-clock
    notes: dict[str, None] = field(default_factory=dict)  # in order, without repeats

    @property
    def label(self) -> str:
        return self.experiment + (" (tuning)" if self.kind == "tune" else "")


def estimate(params) -> list[Row]:
    """A Row per experiment and job kind, in the DAG's order, from every job's cost hook (None: n/a)."""
    sizes, rows, cache = data_sizes(params), {}, {}
    for job in jobs(params):
        row = rows.setdefault((job.experiment, job.kind), Row(job.experiment, job.kind))
        exp, key = params.experiment(job.experiment), (job.experiment, job.name, job.kind)
        if key not in cache:
            cache[key] = exp.cost(params.settings(job.experiment, job.name), sizes, job.kind) if exp.cost else None
        cost, n = cache[key], (len(job.seeds) if job.kind == "train" else 1)
        row.jobs += 1
        row.runs += n * (cost.runs if cost else 1)
        if cost is None:
            row.missing += 1
            continue
        row.train_flops += n * cost.train_flops
        row.eval_flops += n * cost.eval_flops
        row.paper_flops += n * (cost.train_flops if cost.paper_flops is None else cost.paper_flops)
        row.job_flops.append(n * (cost.train_flops + cost.eval_flops))
        row.notes.update(dict.fromkeys(t for t in (*cost.notes, cost.deviation) if t))
    return list(rows.values())


# ---------------------------------------------------------------------------------------------- this machine
@dataclass(frozen=True)
class Calibration:
    flops_per_s: float
    seconds_per_step: float
    flops_per_step: int
    probe: str  # what was timed: "<experiment>/<variant> on <device>, <n> thread(s)"


def calibrate(params, experiment: str | None = None, variant: str | None = None, device: str = "cpu",
              repeats: int = 3) -> Calibration:
    """This machine's FLOP/s on one real training step (forward, backward, optimizer step) of a variant: its
    analytic FLOPs / the median of `repeats` timed steps after one warm-up step. Default: the first variant of
    the first experiment whose hook has a step."""
    import torch

    from .device import synchronize

    sizes = data_sizes(params)
    for name in [experiment] if experiment else params.experiments:
        exp = params.experiment(name)
        for v in [variant] if variant else params.variants(name)[:1]:
            cost = exp.cost(params.settings(name, v), sizes, "step") if exp.cost else None
            if cost is not None and cost.step is not None:
                run, times = cost.step(torch.device(device)), []
                for _ in range(repeats + 1):
                    synchronize(torch.device(device))
                    start = time.perf_counter()
                    run()
                    synchronize(torch.device(device))
                    times.append(time.perf_counter() - start)
                seconds = statistics.median(times[1:])  # the first step warms up allocator and kernels
                probe = f"{name}/{v} on {device}, {torch.get_num_threads()} thread(s)"
                return Calibration(cost.train_flops / seconds, seconds, cost.train_flops, probe)
    raise ConfigError(f"--calibrate: no experiment{' ' + experiment if experiment else ''} has a cost hook "
                      f"with a training step to time")


# ---------------------------------------------------------------------------------------------- wall-clock
def wall_clock(job_seconds: list[float], gpus: int, per_gpu: int) -> float:
    """Seconds until every job is done on `gpus` GPUs with `per_gpu` jobs on each: jobs (their seconds alone on
    a GPU) are placed longest first on the slot that frees first; a slot runs at 1/per_gpu of a GPU (the GPU's
    aggregate throughput is unchanged by sharing). Dependencies (tuning before training) are ignored."""
    if gpus < 1 or per_gpu < 1:
        raise ConfigError(f"--gpus {gpus} / --jobs-per-gpu {per_gpu}: both at least 1")
    from .device import slots as claim_slots  # the slots jobs claim (pipeline/device.py): the same count

    slots = [0.0] * len(claim_slots(gpus, per_gpu))
    for seconds in sorted(job_seconds, reverse=True):
        heapq.heapreplace(slots, slots[0] + seconds * per_gpu)
    return max(slots, default=0.0)


# ---------------------------------------------------------------------------------------------- the printout
def _num(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}" if x >= 1 else f"{x:.2g}"


def _rate(flops_per_s: float) -> str:
    return f"{flops_per_s / 1e12:,.3g} TFLOP/s" if flops_per_s >= 1e12 else f"{flops_per_s / 1e9:,.3g} GFLOP/s"


def _hours(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds:.3g} s" if seconds < 120 else f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:,.1f} h" + (f" ({seconds / 86400:,.1f} days)" if seconds >= 2 * 86400 else "")


def render(params, rows: list[Row], flops_per_s: float, device: str, gpus: int = 1, per_gpu: int = 1) -> str:
    """The plan as text: the table and its total, the wall-clock with its model, the notes."""
    per_job = {len(j.seeds) for j in jobs(params) if j.kind == "train"}
    lines = [f"Cost plan, profile {params.profile}: {len(params.seeds)} seeds, "
             + ("one job per seed" if per_job == {1} else "one job per variant (its seeds in turn)"),
             *textwrap.wrap(f"Device {device} = {_rate(flops_per_s)} per device", 116), "",
             f"{'experiment':<22}{'jobs':>6}{'runs':>6}{'train PFLOP':>13}{'eval PFLOP':>12}{'GPU-hours':>11}"]
    rows = sorted(rows, key=lambda r: (params.experiments.index(r.experiment), r.kind != "train"))
    total = Row("total", "")
    for r in rows + [total]:
        if r is not total:
            for k in ("jobs", "runs", "train_flops", "eval_flops", "missing"):
                setattr(total, k, getattr(total, k) + getattr(r, k))
            total.job_flops += r.job_flops
        hours = (r.train_flops + r.eval_flops) / flops_per_s / 3600
        cells = [_num(r.train_flops / 1e15), _num(r.eval_flops / 1e15), _num(hours)] if r.job_flops else ["n/a"] * 3
        star = "*" if r.missing and r.job_flops else ""
        lines.append(f"{r.label:<22}{r.jobs:>6}{r.runs:>6}" + "".join(f"{c + star:>{w}}" for c, w in
                                                                    zip(cells, (13, 12, 11))))
    if total.missing:
        lines.append(f"n/a, *: {total.missing} job(s) have no estimate (no cost hook, or none for their kind); "
                     "the totals leave them out")
    seconds = [f / flops_per_s for f in total.job_flops]
    clock = _hours(wall_clock(seconds, gpus, per_gpu))
    lines += ["", f"Wall-clock on {gpus} GPU(s) x {per_gpu} job(s) per GPU: {clock}; the longest job alone "
                  f"{_hours(max(seconds, default=0))}",
              *textwrap.wrap("Model: GPU-hours = FLOPs / the throughput above. Jobs go longest first to the GPU slot "
                             "that frees first; k jobs on one GPU share it, each at 1/k of its speed (sharing is "
                             "assumed to add no throughput: where it does for small models, measure it and raise "
                             "--efficiency). Tuning jobs must end before their experiment's training starts; the "
                             "wall-clock ignores that order.", 116)]
    notes = []
    for r in rows:
        notes += [(r.label, n) for n in r.notes]
        own = sum(o.train_flops for o in rows if o.experiment == r.experiment and o.kind == "train")
        if r.kind == "tune" and r.train_flops and own:
            notes.append((r.label, f"the tuning jobs add {r.train_flops / own:.0%} to the experiment's training "
                                   f"FLOPs"))
        if r.paper_flops < r.train_flops and not r.missing:
            notes.append((r.label, f"{_num(r.train_flops / 1e15)} PFLOP of training as configured, "
                                   f"{_num(r.paper_flops / 1e15)} under the papers' reading noted above "
                                   f"({r.train_flops / r.paper_flops:.1f}x less)"))
    if notes:
        lines += ["", "Notes:"]
        for label, text in notes:
            lines += textwrap.wrap(f"- {label}: {text}", 116, subsequent_indent="  ")
    return "\n".join(lines)
