"""The cost plan against a real run: estimated vs measured training seconds of one quick-profile job on this machine.

One block_size variant of the quick profile (real PTB, read from a local mirror; CIFAR has no local copy), one seed:
    1. calibrate  pipeline.plan.calibrate times real training steps of the same variant -> FLOP/s of this machine,
                  before and after the run (the faster of the two: other processes only ever slow a step down)
    2. estimate   the plan's training FLOPs of the run (the experiment's cost hook) / that FLOP/s -> seconds
    3. measure    the pipeline's own train(job) trains the run; metrics.json train_seconds (training only, as the
                  estimate) and train_flops (which must equal the plan's)
The training seconds of every epoch are printed too: on a shared machine other processes slow some epochs, and the
fastest epoch x epochs is the run's time without them. Also printed: the estimate had the machine been calibrated on
another experiment's step (the probe matters: an LSTM step and a small CNN step reach different FLOP/s on a CPU).

    python benchmarks/plan_check.py                       # fixed16, seed 0, the quick profile's 5 epochs (~4-6 min)
    python benchmarks/plan_check.py --epochs 2            # fewer epochs, through a temporary copy of params.yaml
    python benchmarks/plan_check.py --clock cpu           # CPU seconds instead of wall-clock (a shared machine)

On a machine shared with other work, wall-clock seconds measure the others' load as much as the plan: `--clock cpu`
times the calibration and the run in this process's CPU seconds (one thread: about the wall-clock of a quiet
machine), which other processes barely change.

The data mirror: --mirror, else PIPELINE_DATA_MIRROR, else ../shared/datasets/ptb. Everything is written under a
temporary folder (params copy, prepared PTB, run files, checkpoints). Prints one JSON line per number.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
import time
from pathlib import Path

import torch
import yaml

from pipeline import config, plan
from pipeline.data.stages import prepare_dataset
from pipeline.train.jobs import Inputs, Job

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = "block_size"


def params_copy(work: Path, mirror: Path, epochs: int | None, seed: int) -> config.Params:
    """params.yaml, quick profile, one seed, data under `work`, PTB from `mirror`, and `epochs` if given."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw.update(profile="quick", seeds=[seed])
    raw["data"].update(root=str(work / "data"), mirror=str(mirror))
    if epochs is not None:
        raw[EXPERIMENT]["profiles"]["quick"]["train"]["epochs"] = epochs
    path = work / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    os.environ.pop("PIPELINE_DATA_MIRROR", None)  # the copy names the mirror
    return config.load(path, "quick")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="fixed16", help="a block_size variant (fixed16: one block all along, as "
                                                         "the calibration step)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=None, help="fewer epochs than the quick profile's (a temp copy)")
    ap.add_argument("--mirror", type=Path, default=Path(os.environ.get("PIPELINE_DATA_MIRROR")
                                                          or ROOT.parent / "shared" / "datasets" / "ptb"))
    ap.add_argument("--threads", type=int, default=1, help="torch threads (a training job's default: 1)")
    ap.add_argument("--repeats", type=int, default=10, help="timed calibration steps (after one warm-up)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: calibration and train_seconds count this process's CPU seconds (see above)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    if args.clock == "cpu":  # every time.perf_counter() of this process (the calibration's, Run.training's) reads
        time.perf_counter = time.process_time  # CPU seconds: on a shared machine other processes' load drops out
    with tempfile.TemporaryDirectory(prefix="plan-check-") as tmp:
        work = Path(tmp)
        p = params_copy(work, args.mirror.resolve(), args.epochs, args.seed)
        prepared = p.prepared_dir("ptb")
        prepare_dataset(p, "ptb", prepared)
        settings = p.settings(EXPERIMENT, args.variant)
        cost = p.experiment(EXPERIMENT).cost(settings, plan.data_sizes(p), "train")
        before, load = plan.calibrate(p, EXPERIMENT, args.variant, repeats=args.repeats), os.getloadavg()[0]
        others = [plan.calibrate(p, e, repeats=args.repeats) for e in p.experiments if e != EXPERIMENT]

        job = Job(p, EXPERIMENT, args.variant, args.seed, Inputs.from_paths(data=[prepared]),
                  work / "runs" / args.variant / f"seed{args.seed}", work / "checkpoints", torch.device("cpu"))
        metrics = p.experiment(EXPERIMENT).module("train").train(job)
        after = plan.calibrate(p, EXPERIMENT, args.variant, repeats=args.repeats)
        with open(job.run_dir / "history.csv") as f:
            elapsed = [float(row["elapsed_seconds"]) for row in csv.DictReader(f)]

    own = max(before, after, key=lambda c: c.flops_per_s)  # the less disturbed of the two calibrations
    estimated = cost.train_flops / own.flops_per_s
    epochs = [round(b - a, 1) for a, b in zip([0.0, *elapsed], elapsed)]  # training seconds of each epoch
    print(json.dumps({"job": f"{EXPERIMENT}/{args.variant}/seed{args.seed}", "profile": "quick",
                      "epochs": settings.train.epochs, "threads": args.threads, "clock": args.clock,
                      "planned_train_flops": cost.train_flops, "recorded_train_flops": metrics["train_flops"]}))
    print(json.dumps({"calibrated_on": own.probe, "gflop_per_s": round(own.flops_per_s / 1e9, 2),
                      "gflop_per_s_before_after": [round(c.flops_per_s / 1e9, 2) for c in (before, after)],
                      "load_average_before_after": [round(load, 2), round(os.getloadavg()[0], 2)],
                      "estimated_s": round(estimated, 1), "measured_s": round(metrics["train_seconds"], 1),
                      "measured_over_estimated": round(metrics["train_seconds"] / estimated, 2),
                      "epoch_s": epochs, "estimated_epoch_s": round(estimated / len(epochs), 1),
                      "fastest_epoch_over_estimated": round(min(epochs) * len(epochs) / estimated, 2)}))
    for c in others:
        print(json.dumps({"calibrated_on": c.probe, "gflop_per_s": round(c.flops_per_s / 1e9, 2),
                          "estimated_s": round(cost.train_flops / c.flops_per_s, 1)}))


if __name__ == "__main__":
    main()
