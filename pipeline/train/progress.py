"""How a run shows its progress: a tqdm bar on a terminal; plain lines in logs (Snakemake, Slurm, CI).

    Progress(name).epoch_done(row, epoch, total, train_seconds, done)   after each epoch: the bar moves, or a line
        `edba/x/seed0 epoch 3/300 train_loss=1.2 test_acc=0.41 (52.0 s training; 3 min 10 s elapsed, ETA 5 h 12 min)`
    Progress(name).within_epoch(epoch, total, done, of, unit)            after each step: in logs, a line at most
        every PIPELINE_PROGRESS_SECONDS (default 30) of a long epoch, `... epoch 3/300: 41% (20,500/50,000 samples)`

The ETA is this process's mean wall-clock time per epoch (evaluation and checkpoints included) times the epochs
left; a resumed run counts only the epochs it trained since it resumed.
"""
from __future__ import annotations

import os
import sys
import time

SHOWN = ("train_loss", "valid_ppl", "test_ppl", "test_acc", "block_size", "batch_size")  # the columns on a line


def duration(seconds: float) -> str:
    """12.3 s, 4 min 05 s, 2 h 03 min."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


class Progress:
    def __init__(self, name: str, every: float | None = None):
        self.name = name
        self.every = float(os.environ.get("PIPELINE_PROGRESS_SECONDS", "30")) if every is None else every
        self.terminal = sys.stderr.isatty()
        self._bar = None
        self._start = self._last_line = time.monotonic()
        self._epochs = 0  # epochs trained by this process

    def eta(self, epoch: int, total: int | None) -> str:
        elapsed = time.monotonic() - self._start
        left = (total or epoch) - epoch
        return f"{duration(elapsed)} elapsed, ETA {duration(elapsed / max(self._epochs, 1) * left)}"

    def epoch_done(self, row: dict, epoch: int, total: int | None, train_seconds: float, done: bool) -> None:
        self._epochs += 1
        text = " ".join(f"{k}={row[k]:.4g}" for k in SHOWN if isinstance(row.get(k), (int, float)))
        if self.terminal:
            from tqdm import tqdm

            if self._bar is None:
                self._bar = tqdm(total=total, initial=epoch - 1, desc=self.name, unit="epoch", leave=False)
            self._bar.set_postfix_str(text)
            self._bar.update(1)
            if done:
                self._bar.close()
            return
        of = f"/{total}" if total else ""
        print(f"{self.name} epoch {epoch}{of} {text} ({train_seconds:.1f} s training; {self.eta(epoch, total)})",
              file=sys.stderr, flush=True)
        self._last_line = time.monotonic()

    def within_epoch(self, epoch: int, total: int | None, done: int, of: int, unit: str) -> None:
        now = time.monotonic()
        if self.terminal or now - self._last_line < self.every:
            return
        self._last_line = now
        epochs = f"/{total}" if total else ""
        print(f"{self.name} epoch {epoch}{epochs}: {done / max(of, 1):.0%} ({done:,}/{of:,} {unit})",
              file=sys.stderr, flush=True)
