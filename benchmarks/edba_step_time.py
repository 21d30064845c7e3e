"""EDBA step time / baseline step time on the same PreResNet and batch (paper settings: batch 100, SGD lr 0.001,
Nesterov 0.9, weight decay 1e-5), CPU by default. Target: at most 1.10x. EDBA's settings are params.yaml's
(the paper profile's edba section), so the benchmark measures the configuration the harness trains.

    baseline           forward/backward/step on the full batch
    baseline_again     the same again on its own copy: its ratio is the noise floor of the measurement
    edba shared        one forward with grad over the batch -> closed-form scoring -> backward of the kept rows' loss
    edba two_pass      no-grad selection forward -> scoring -> forward/backward/step on the kept rows (paper order)
    ... full           the same with the full batch always chosen (one candidate, the full batch): the worst case

A round times one step of every variant (in a fresh random order), so that load from other processes hits all alike;
the ratio to the baseline is taken within a round and the median over rounds is printed, for wall-clock time and
for this process's CPU time (which other processes' load disturbs far less; with --threads 1 it is the compute
itself). On a quiet machine the wall-clock ratio is the one to report. Also printed: the mean
kept fraction (the two-pass time depends on it) and the cosine between the shared-forward gradient and the
two-pass gradient of the same subset (how much full-batch BatchNorm statistics change the update).

    python benchmarks/edba_step_time.py                   # the paper's PreResNet-56, 1 thread, 20 rounds: ~3 minutes
    python benchmarks/edba_step_time.py --depth 20 --rounds 8   # a smaller PreResNet for a quick look
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F

from pipeline import config
from pipeline.device import synchronize
from pipeline.experiments.edba.method import EDBASampler
from pipeline.models.preresnet import preresnet
from pipeline.train.image import FixedBatch


def paper_settings():
    """The paper profile's settings of an EDBA variant (params.yaml): EDBA's own and the training batch."""
    return config.load(profile="paper").settings("edba", "edba-cifar10-full")


def make_step(variant: str, model, seed: int):
    """A closure running one training step of `variant` on (x, y) through the image loop's batch-policy protocol
    (FixedBatch / EDBASampler .loss); returns the number of rows trained on."""
    settings = paper_settings()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9, nesterov=True, weight_decay=1e-5)
    forward = "two_pass" if variant.startswith("two_pass") else "shared"
    cfg = settings.edba.model_copy(update={"forward": forward, **({"num_candidates": 1} if variant.endswith("full")
                                                                  else {})})
    batch = settings.train.batch_size
    policy = (FixedBatch(batch) if variant.startswith("baseline")
              else EDBASampler(cfg, torch.Generator().manual_seed(seed), batch))

    def step(x, y) -> int:
        optimizer.zero_grad(set_to_none=True)
        loss, rows, _ = policy.loss(model, x, y)
        loss.backward()
        optimizer.step()
        return len(y) if rows is None else len(rows)

    return step


def gradient_agreement(model, x, y, seed: int) -> tuple[float, float]:
    """Cosines (train-mode BN) between (a) the shared-forward and the two-pass gradient of one random half of the
    batch, and (b) for scale, the two-pass gradients of that half and of the other half (minibatch noise)."""
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    halves = perm[: len(y) // 2].sort().values, perm[len(y) // 2:].sort().values

    def grad(rows, shared: bool) -> torch.Tensor:
        m = copy.deepcopy(model).train()
        loss = (F.cross_entropy(m(x), y, reduction="none")[rows].mean() if shared
                else F.cross_entropy(m(x[rows]), y[rows]))
        loss.backward()
        return torch.cat([p.grad.flatten() for p in m.parameters()])

    two_pass = grad(halves[0], False)
    cos = lambda a, b: F.cosine_similarity(a, b, dim=0).item()
    return cos(grad(halves[0], True), two_pass), cos(grad(halves[1], False), two_pass)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depth", type=int, default=56, help="PreResNet depth (6n+2); default the paper's 56")
    ap.add_argument("--batch", type=int, default=100, help="paper's initial batch")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=20, help="timed rounds; a round is one step of every variant")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (0: torch's default); 1 keeps a shared machine's load out of the ratios")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(args.seed)
    model = preresnet(args.depth, args.classes, generator=g).to(device).train()
    batches = [(torch.randn(args.batch, 3, 32, 32, generator=g).to(device),
                torch.randint(0, args.classes, (args.batch,), generator=g).to(device)) for _ in range(4)]

    variants = ["baseline", "baseline_again", "shared", "shared_full", "two_pass", "two_pass_full"]
    steps = {v: make_step(v, copy.deepcopy(model), args.seed) for v in variants}  # same init for every variant
    kept = {v: [] for v in variants}
    for v in variants:
        for i in range(args.warmup):
            steps[v](*batches[i % len(batches)])
    order = torch.Generator().manual_seed(args.seed)
    clocks = {"wall": time.perf_counter, "cpu": time.process_time}  # cpu: this process only, robust to load
    seconds = {(c, v): [] for c in clocks for v in variants}  # per round: seconds of one step
    for r in range(args.rounds):
        x, y = batches[r % len(batches)]
        for k in torch.randperm(len(variants), generator=order).tolist():  # a fresh order every round
            v = variants[k]
            synchronize(device)
            start = {c: clock() for c, clock in clocks.items()}
            kept[v].append(steps[v](x, y))
            synchronize(device)
            for c, clock in clocks.items():
                seconds[c, v].append(clock() - start[c])

    print(f"PreResNet-{args.depth}, batch {args.batch}, {device}, {torch.get_num_threads()} threads, "
          f"{args.rounds} rounds after {args.warmup} warm-up steps; ratio = median over rounds of step/baseline")
    print(f"  {'variant':<14} {'wall s':>7} {'ratio':>6} {'cpu s':>7} {'ratio':>6} {'kept':>5}")
    for v in variants:
        cols = [f"{statistics.median(seconds[c, v]):7.4f} "
                f"{statistics.median(t / b for t, b in zip(seconds[c, v], seconds[c, 'baseline'])):6.3f}"
                for c in clocks]
        print(f"  {v:<14} {' '.join(cols)} {statistics.fmean(kept[v]) / args.batch:5.2f}")
    same, other = gradient_agreement(model, *batches[0], args.seed)
    print(f"  gradient cosine, one random half of the batch: shared forward vs two-pass {same:.4f}; "
          f"for scale, two-pass of the other half vs this half {other:.4f}")


if __name__ == "__main__":
    main()
