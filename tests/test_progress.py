"""Progress in logs: each epoch line has the elapsed time and an ETA; long epochs report within the epoch."""
from __future__ import annotations

from pipeline.train import progress
from pipeline.train.progress import Progress, duration


def test_durations_read_as_a_person_would_write_them():
    assert [duration(s) for s in (12.34, 245, 7380)] == ["12.3 s", "4 min 05 s", "2 h 03 min"]


def test_epoch_lines_carry_elapsed_and_eta_and_long_epochs_report_inside(capsys, monkeypatch):
    clock = iter([0.0, 10.0, 10.0, 20.0, 20.0, 20.5, 45.0])  # monotonic() readings, in call order
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    p = Progress("edba/x/seed0", every=5.0)
    p.terminal = False  # as in a log file
    p.epoch_done({"train_loss": 1.5, "test_acc": 0.4}, epoch=1, total=4, train_seconds=8.0, done=False)  # t = 10
    p.epoch_done({"train_loss": 1.2}, epoch=2, total=4, train_seconds=16.0, done=False)  # t = 20
    p.within_epoch(3, 4, 100, 1000, "samples")  # t = 20.5: too soon after the last line
    p.within_epoch(3, 4, 600, 1000, "samples")  # t = 45
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "edba/x/seed0 epoch 1/4 train_loss=1.5 test_acc=0.4 (8.0 s training; 10.0 s elapsed, ETA 30.0 s)",
        "edba/x/seed0 epoch 2/4 train_loss=1.2 (16.0 s training; 20.0 s elapsed, ETA 20.0 s)",
        "edba/x/seed0 epoch 3/4: 60% (600/1,000 samples)"]


def test_a_terminal_gets_the_bar_and_no_lines(capsys):
    p = Progress("r", every=0.0)
    p.terminal = True
    p.within_epoch(1, 2, 1, 2, "samples")
    assert capsys.readouterr().err == ""  # the tqdm bar shows it instead
