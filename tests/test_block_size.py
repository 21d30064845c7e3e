"""Experiment 1 (adaptive block size): schedules by hand, the section's shape, and the LM loop on tiny token data.

The tiny corpus is a random sparse Markov chain written here (vocab.txt, train/valid/test.npy, meta.json) into a
temporary folder that each job is given as its --data; the repository's smoke profile supplies every other setting.
"""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from typer.testing import CliRunner

from pipeline import config
from pipeline.experiments.block_size import train as experiment
from pipeline.experiments.block_size.schedule import (BlockSchedule, block_size_at, build_schedule, fixed_trace,
                                                      plateau)
from pipeline.models.lstm_lm import LSTMConfig, LSTMLM
from pipeline.train import lm
from pipeline.train.jobs import Inputs, Job

CPU = torch.device("cpu")
TIMING = ("elapsed_seconds", "tokens_per_s", "time")
GROWING = ("doubling", "linear", "plateau", "doubling_sum")  # the variants whose schedule has b0 and max_block


# ---------------------------------------------------------------------------------------------- schedules
def test_doubling_is_the_papers_schedule():
    spec = {"kind": "doubling", "b0": 16, "every": 10, "max_block": 256}
    assert fixed_trace(spec, 50) == [16] * 10 + [32] * 10 + [64] * 10 + [128] * 10 + [256] * 10
    assert block_size_at(spec, 75, []) == 256  # capped at max_block


def test_constant_linear_exponential_by_hand():
    assert fixed_trace({"kind": "constant", "block": 35}, 3) == [35, 35, 35]
    linear = {"kind": "linear", "b0": 16, "step": 60, "every": 10, "max_block": 256}
    assert [block_size_at(linear, t, []) for t in (0, 9, 10, 25, 39, 40, 55)] == [16, 16, 76, 136, 196, 256, 256]
    exp = {"kind": "exponential", "b0": 10, "factor": 3, "every": 2, "max_block": 100}
    assert fixed_trace(exp, 8) == [10, 10, 30, 30, 90, 90, 100, 100]


def test_plateau_grows_after_patience_bad_epochs_and_reads_only_the_past():
    losses = [5.0, 4.0, 3.995, 3.99, 3.5, 3.5, 3.5, 3.5, 3.5, 3.5]
    history = [{"valid_loss": v} for v in losses]
    settings = dict(b0=16, factor=2, patience=2, delta=0.01, max_block=64)
    # 4.0 is the best until 3.5; 3.995 and 3.99 do not beat 4.0 - 0.01 -> two bad epochs -> 32 from epoch 4;
    # 3.5 is a gain; then two bad epochs -> 64 from epoch 7; capped after that
    expected = [16, 16, 16, 16, 32, 32, 32, 64, 64, 64]
    assert [plateau(t, history, **settings) for t in range(10)] == expected
    assert [plateau(t, history[:t], **settings) for t in range(10)] == expected  # only history[:epoch] matters
    schedule = build_schedule({"kind": "plateau", **settings})
    assert schedule.block_size(7, history) == schedule.block_size(7, history) == 64  # pure: no hidden state


def test_bad_schedule_fails_with_its_name():
    with pytest.raises(ValueError, match="'halving' is unknown"):
        BlockSchedule("halving")
    with pytest.raises(ValueError, match="needs a 'kind'"):
        build_schedule({"block": 3})


# ---------------------------------------------------------------------------------------------- the section
def test_section_resolves_variants_and_keeps_references_out_of_the_grid(raw_params):
    for profile in config.PROFILES:
        p = config.validate(raw_params, profile)
        assert p.variants("block_size") == ["fixed16", "doubling", "fixed256", "linear", "plateau", "doubling_sum"]
        section = p.section("block_size")
        assert "zaremba_small" in section.references and "zaremba_small" not in p.variants("block_size")
        p.check_variant("block_size", "zaremba_small")  # runnable by name
        # the section's default schedule (doubling) is the doubling variant's; the other growing kinds keep its
        # b0, every and max_block where their kind has them; a constant schedule keeps none of them
        defaults = section.raw["schedule"]
        assert p.settings("block_size", "doubling").schedule.model_dump() == defaults
        for name in GROWING:
            s = p.settings("block_size", name).schedule.model_dump()
            assert {k: s[k] for k in ("b0", "max_block")} == {k: defaults[k] for k in ("b0", "max_block")}, name
            assert s.get("every", defaults["every"]) == defaults["every"], name
        for name in ("fixed16", "fixed256"):
            assert set(p.settings("block_size", name).schedule.model_dump()) == {"kind", "block"}
        summed = p.settings("block_size", "doubling_sum").train
        assert (summed.lr_block_scaling, summed.loss_reduction, summed.optimizer) == ("linear", "mean", "adam")
        for plain in ("fixed16", "doubling", "fixed256", "linear", "plateau"):
            t = p.settings("block_size", plain).train
            assert (t.lr_block_scaling, t.loss_reduction) == ("none", "mean"), plain
        z = p.settings("block_size", "zaremba_small")  # the same in every profile
        assert (z.model.hidden_size, z.train.batch_size, z.train.epochs, z.schedule.block) == (200, 20, 13, 20)
    paper = config.validate(raw_params, "paper").settings("block_size", "doubling")
    assert fixed_trace(paper.schedule.model_dump(), paper.train.epochs)[::10] == [16, 32, 64, 128, 256]
    assert (paper.model.hidden_size, paper.model.num_layers, paper.train.lr, paper.train.batch_size) == (650, 2, 0.01, 64)


def test_bad_variant_override_is_one_line_naming_the_key(raw_params):
    raw_params["block_size"]["variants"]["linear"]["train"] = {"lr_typo": 1}
    with pytest.raises(config.ConfigError, match=r"block_size\.variants\.linear\.train\.lr_typo: unknown key") as err:
        config.validate(raw_params, "paper")
    assert "\n" not in str(err.value)


def test_b0_above_max_block_is_rejected(raw_params):
    raw_params["block_size"]["schedule"]["b0"] = 512
    with pytest.raises(config.ConfigError, match=r"block_size\.schedule: b0 512 exceeds max_block (64|256)"):
        config.validate(raw_params, "paper")


def test_zaremba_lr_is_halved_every_epoch_after_the_fourth(raw_params):
    cfg = config.validate(raw_params, "quick").settings("block_size", "zaremba_small")
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=cfg.train.lr)
    sched = experiment.build_lr_scheduler(cfg.train, opt)
    lrs = []
    for _ in range(cfg.train.epochs):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([20.0] * 4 + [20.0 * 0.5 ** k for k in range(1, 10)])


# ---------------------------------------------------------------------------------------------- tiny data
def write_tokens(root, vocab=24, n_train=2400, n_eval=330, seed=0):
    """A prepared text dataset: a Markov chain where every word has 3 possible successors."""
    g = np.random.default_rng(seed)
    nxt = g.integers(0, vocab, size=(vocab, 3))
    def walk(n):
        out = np.empty(n, dtype=np.int64)
        out[0] = 0
        for i in range(1, n):
            out[i] = nxt[out[i - 1], g.integers(3)]
        return out
    root.mkdir(parents=True, exist_ok=True)
    (root / "vocab.txt").write_text("".join(f"w{i}\n" for i in range(vocab)))
    for split, n in (("train", n_train), ("valid", n_eval), ("test", n_eval)):
        np.save(root / f"{split}.npy", walk(n))
    (root / "meta.json").write_text(json.dumps({"dataset": "ptb", "kind": "ptb", "synthetic": True,
                                                "vocab_size": vocab}))
    return root


def prepared(tmp_path):
    return tmp_path / "data" / "prepared" / "ptb"


def tiny_raw(raw_params, tmp_path, **train):
    smoke = raw_params["block_size"].setdefault("profiles", {}).setdefault("smoke", {})
    smoke["model"] = {**smoke.get("model", {}), "dropout": 0.2}  # dropout on: its RNG must resume too
    smoke["train"] = {**smoke.get("train", {}), "epochs": 3, "batch_size": 8, **train}
    write_tokens(prepared(tmp_path))
    return raw_params


def tiny_params(raw_params, tmp_path, **train):
    return config.validate(tiny_raw(raw_params, tmp_path, **train), "smoke")


def train(p, tmp_path, variant, seed, run_dir, checkpoint_root):
    """One job of the variant on the tiny text in tmp_path (its only --data)."""
    inputs = Inputs(data={"ptb": prepared(tmp_path)})
    return experiment.train(Job(p, "block_size", variant, seed, inputs, run_dir, checkpoint_root, CPU))


def history(run_dir):
    with open(run_dir / "history.csv") as f:
        return list(csv.DictReader(f))


def test_each_epoch_uses_the_schedules_block(raw_params, tmp_path):
    smoke = raw_params["block_size"]["profiles"]["smoke"]
    smoke["variants"]["plateau"] = {"schedule": {"patience": 1, "delta": 100.0}}  # every epoch after the first is "bad"
    p = tiny_params(raw_params, tmp_path)
    for variant in ("doubling", "linear", "fixed16", "plateau"):
        run_dir = tmp_path / "runs" / variant
        metrics = train(p, tmp_path, variant, 0, run_dir, tmp_path / "ckpt")
        rows = history(run_dir)
        used = [int(r["block_size"]) for r in rows]
        spec = p.settings("block_size", variant).schedule.model_dump()
        past = [{"valid_loss": float(r["valid_loss"])} for r in rows]
        assert used == [block_size_at(spec, t, past[:t]) for t in range(len(rows))]
        if variant != "plateau":
            assert used == fixed_trace(spec, 3)
        assert metrics["extra"]["largest_block"] == max(used) and metrics["metric"] == "test_ppl"
        assert float(rows[-1]["test_ppl"]) == metrics["final"] and rows[0]["test_ppl"] == ""
    assert used == [16, 16, 32]  # plateau: the first epoch sets the best loss, the second is bad -> grow


def test_a_job_reads_only_the_data_it_is_given(raw_params, tmp_path):
    """No --data for the variant's dataset: a one-line DataError naming the missing argument, before any run file."""
    from pipeline.data.fetch import DataError

    p = tiny_params(raw_params, tmp_path)
    job = Job(p, "block_size", "fixed16", 0, Inputs(), tmp_path / "run", tmp_path / "ckpt", CPU)
    with pytest.raises(DataError, match="no --data for dataset 'ptb'") as err:
        experiment.train(job)
    assert "\n" not in str(err.value) and not (tmp_path / "run").exists()


@pytest.mark.parametrize("variant", ["doubling", "doubling_sum"])  # doubling_sum: the checkpoint holds the base lr
def test_killed_run_resumes_bit_identical(raw_params, tmp_path, killed_after, variant):
    p = tiny_params(raw_params, tmp_path)
    reference = train(p, tmp_path, variant, 3, tmp_path / "a", tmp_path / "ckpt_a")
    with killed_after(2):
        train(p, tmp_path, variant, 3, tmp_path / "b", tmp_path / "ckpt_b")
    assert not (tmp_path / "b" / "metrics.json").exists()
    resumed = train(p, tmp_path, variant, 3, tmp_path / "b", tmp_path / "ckpt_b")
    timing = {"train_seconds", "seconds_to_target", "started_at", "ended_at"}
    assert {k: v for k, v in resumed.items() if k not in timing} == {k: v for k, v in reference.items() if k not in timing}
    strip = lambda rows: [{k: v for k, v in r.items() if k not in TIMING} for r in rows]
    assert strip(history(tmp_path / "b")) == strip(history(tmp_path / "a"))
    other_seed = train(p, tmp_path, variant, 4, tmp_path / "c", tmp_path / "ckpt_c")
    assert other_seed["final"] != reference["final"]  # the comparison above is not vacuous


def test_sigkilled_job_resumes_bit_identical(raw_params, tmp_path):
    """A real kill: the training process gets SIGKILL right after its first checkpoint; the rerun resumes from it
    and ends with the metrics of an uninterrupted run (timing aside)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    raw = tiny_raw(raw_params, tmp_path, epochs=30)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "PIPELINE_PROFILE": "smoke", "PIPELINE_THREADS": "1"}

    def train(out, ckpt):
        return ["-m", "pipeline", "train", "block_size", "doubling", "--seeds", "0",
                "--data", str(prepared(tmp_path)), "--out", str(tmp_path / out), "--checkpoints", str(tmp_path / ckpt),
                "--device", "cpu", "--params", str(params_file)]

    subprocess.run([sys.executable, *train("a", "ckpt_a")], check=True, env=env, capture_output=True)
    job = subprocess.Popen([sys.executable, *train("b", "ckpt_b")], env=env, stderr=subprocess.PIPE, text=True)
    ckpt_dir = tmp_path / "ckpt_b" / "block_size" / "doubling" / "seed0"
    deadline = time.monotonic() + 120
    while not any(ckpt_dir.glob("*.pt")) and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    job.send_signal(signal.SIGKILL)
    job.wait()
    assert job.returncode == -signal.SIGKILL and not (tmp_path / "b" / "seed0" / "metrics.json").exists()
    rerun = subprocess.run([sys.executable, *train("b", "ckpt_b")], check=True, env=env, capture_output=True, text=True)
    assert "resumed block_size/doubling/seed0 after epoch" in rerun.stdout + rerun.stderr
    a, b = (json.loads((tmp_path / d / "seed0" / "metrics.json").read_text()) for d in ("a", "b"))
    timing = {"train_seconds", "seconds_to_target", "started_at", "ended_at"}
    assert {k: v for k, v in a.items() if k not in timing} == {k: v for k, v in b.items() if k not in timing}


def test_a_checkpoint_of_other_data_is_not_resumed(raw_params, tmp_path, capsys):
    """The checkpoint key covers the data a run reads: after the prepared text changes, the rerun of a finished
    run trains afresh on the new text instead of rewriting the old numbers."""
    p = tiny_params(raw_params, tmp_path)
    first = train(p, tmp_path, "fixed16", 0, tmp_path / "a", tmp_path / "ckpt")
    write_tokens(prepared(tmp_path), seed=1)  # another chain, same shapes
    capsys.readouterr()
    second = train(p, tmp_path, "fixed16", 0, tmp_path / "b", tmp_path / "ckpt")
    assert "resumed" not in capsys.readouterr().out
    assert second["final"] != first["final"]
    config_b = json.loads((tmp_path / "b" / "config.json").read_text())
    assert config_b["run"]["inputs"]["data"] and config_b["run"]["inputs"]["code"]
    with pytest.raises(Exception, match="holds a finished run of another config"):
        train(p, tmp_path, "fixed16", 0, tmp_path / "a", tmp_path / "ckpt")  # never overwritten silently


def test_lm_loop_lowers_perplexity(raw_params, tmp_path):
    """Through the real fit(): validation perplexity falls over the epochs and ends far below the vocabulary size
    (24 words, 3 successors each: a perfect model reaches 3)."""
    p = tiny_params(raw_params, tmp_path, epochs=4)
    metrics = train(p, tmp_path, "fixed16", 0, tmp_path / "run", tmp_path / "ckpt")
    ppl = [float(r["valid_ppl"]) for r in history(tmp_path / "run")]
    assert ppl[-1] < ppl[0] and ppl[-1] < 12 and metrics["final"] < 12


def test_planted_nan_gives_diverged_and_exit_0(raw_params, tmp_path, monkeypatch):
    raw = tiny_raw(raw_params, tmp_path)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    real_ce, calls = F.cross_entropy, []

    def nan_in_the_second_epoch(*args, **kwargs):  # 300 rows / block 16 = 19 training steps per epoch
        calls.extend([1] if torch.is_grad_enabled() else [])  # count training calls only, not evaluation
        loss = real_ce(*args, **kwargs)
        return loss * float("nan") if len(calls) >= 25 else loss

    monkeypatch.delenv("PIPELINE_PROFILE", raising=False)
    monkeypatch.setattr(lm.F, "cross_entropy", nan_in_the_second_epoch)
    from pipeline.__main__ import app

    out = tmp_path / "runs" / "fixed16"
    result = CliRunner().invoke(app, ["train", "block_size", "fixed16", "--seeds", "0",
                                      "--data", str(prepared(tmp_path)), "--out", str(out),
                                      "--checkpoints", str(tmp_path / "ckpt"), "--device", "cpu",
                                      "--params", str(params_file)])
    assert result.exit_code == 0, result.output
    assert "diverged" in result.output
    metrics = json.loads((out / "seed0" / "metrics.json").read_text())
    assert metrics["diverged"] is True and metrics["final"] is None and metrics["epochs"] == 1


# ---------------------------------------------------------------------------------------------- the loop itself
class Spy(nn.Module):
    """Wraps the LM and records, per forward call, the input block and the hidden state it was given."""

    def __init__(self, inner: LSTMLM):
        super().__init__()
        self.inner, self.calls = inner, []

    def init_hidden(self, batch_size):
        return self.inner.init_hidden(batch_size)

    def forward(self, x, hidden):
        logits, new = self.inner(x, hidden)
        self.calls.append({"x": x.clone(), "given": tuple(h.detach().clone() for h in hidden),
                           "given_grad": any(h.requires_grad for h in hidden),
                           "returned": tuple(h.detach().clone() for h in new)})
        return logits, new


def tiny_model(vocab=24, seed=0):
    torch.manual_seed(seed)
    return LSTMLM(LSTMConfig(vocab_size=vocab, embed_size=8, hidden_size=8, num_layers=2, dropout=0.0))


def test_hidden_state_is_carried_across_blocks_and_reset_each_epoch():
    source = lm.batchify(torch.randint(0, 24, (63,), generator=torch.Generator().manual_seed(0)), 3)  # [21, 3]
    spy = Spy(tiny_model())
    opt = torch.optim.SGD(spy.parameters(), lr=0.5)
    loop = lm.LMLoop(epochs=2, batch_size=3, clip_grad_norm=0.25, loss_reduction="mean", lr_block_scaling="none",
                     lr_reference_block=16, eval_batch_size=10, eval_block=35)
    for _ in range(2):
        lm.train_epoch(spy, source, 6, opt, loop)
    assert len(spy.calls) == 8  # 20 targets per column in blocks of 6, 6, 6, 2; two epochs
    for epoch in range(2):
        calls = spy.calls[4 * epoch: 4 * epoch + 4]
        assert all(torch.count_nonzero(h) == 0 for h in calls[0]["given"])  # reset at the start of the epoch
        for before, after in zip(calls, calls[1:]):
            assert all(torch.equal(a, b) for a, b in zip(after["given"], before["returned"]))  # carried
            assert any(torch.count_nonzero(h) > 0 for h in after["given"])
        assert not any(c["given_grad"] for c in calls)  # detached: truncated BPTT
        assert torch.equal(torch.cat([c["x"] for c in calls]), source[:-1])  # every row once, in order


class Bigram(nn.Module):
    """A model without state (logits depend on the current token only): batched and unbatched scores must agree."""

    def __init__(self, vocab, seed=0):
        super().__init__()
        self.table = nn.Embedding(vocab, vocab)
        nn.init.normal_(self.table.weight, generator=torch.Generator().manual_seed(seed))

    def init_hidden(self, batch_size):
        return (torch.zeros(1, batch_size, 1),)

    def forward(self, x, hidden):
        return self.table(x), hidden


def scored_targets(monkeypatch):
    """Record the target ids that evaluate() scores (ignore_index skipped)."""
    real_ce, seen = F.cross_entropy, []

    def recording(logits, target, **kwargs):
        seen.extend(target[target != kwargs.get("ignore_index", -100)].tolist())
        return real_ce(logits, target, **kwargs)

    monkeypatch.setattr(lm.F, "cross_entropy", recording)
    return seen


def test_eval_streams_overlap_by_one_token_as_drawn():
    source = lm.eval_streams(torch.arange(14), 4)  # the docstring's a .. n
    P = lm.PAD
    assert source.t().tolist() == [[0, 1, 2, 3, 4], [4, 5, 6, 7, P], [7, 8, 9, 10, P], [10, 11, 12, 13, P]]
    assert lm.eval_streams(torch.arange(3), 10)[:, :3].t().tolist() == [[0, 1], [1, 2], [2, P]]  # empty streams
    with pytest.raises(ValueError, match="too few"):
        lm.eval_streams(torch.arange(1), 10)


@pytest.mark.parametrize("n", [333, 331, 12])  # 333 = 33 x 10 + 3, 331 - 1 = 33 x 10, 12: 11 targets for 10 streams
@pytest.mark.parametrize("block", [1, 7, 35, 1000])
def test_evaluation_scores_every_token_after_the_first_exactly_once(n, block, monkeypatch):
    """Token ids = positions, so the scored targets are the scored positions: exactly 1 .. N-1, each once."""
    seen = scored_targets(monkeypatch)
    model = Bigram(vocab=n)
    tokens = torch.arange(n)
    result = lm.evaluate(model, lm.eval_streams(tokens, 10), block)
    assert result["tokens"] == n - 1
    assert sorted(seen) == list(range(1, n))  # every position after the first, none twice, none dropped
    with torch.no_grad():  # a stateless model: the batched score is exactly the one-long-sequence score
        nll = F.cross_entropy(model.table(tokens[:-1]), tokens[1:], reduction="sum").item()
    assert result["loss"] * result["tokens"] == pytest.approx(nll, rel=1e-6)
    assert result["ppl"] == pytest.approx(math.exp(nll / (n - 1)), rel=1e-6)


@pytest.mark.parametrize("block", [1, 7, 35, 1000])
def test_evaluation_of_a_stateful_model_is_each_stream_read_alone(block):
    """With carried (h, c), "equal" means: the batched score is the sum over the streams of each stream read in
    one forward pass from a zero state -- the state carries across chunks and is reset only at stream starts,
    so the chunk length does not matter. (It differs from a single one-stream pass by the 9 resets.)"""
    stream = torch.randint(0, 24, (333,), generator=torch.Generator().manual_seed(1))
    model = tiny_model()
    source = lm.eval_streams(stream, 10)
    result = lm.evaluate(model, source, block)
    nll, start = 0.0, 0
    with torch.no_grad():
        for length in [34, 34] + [33] * 8:  # 332 targets over 10 streams
            piece = stream[start: start + length + 1, None]  # its targets plus the token before them
            logits, _ = model(piece[:-1])
            nll += F.cross_entropy(logits.reshape(-1, 24), piece[1:].reshape(-1), reduction="sum").item()
            start += length
    assert start == 332 and result["tokens"] == 332
    assert result["loss"] * result["tokens"] == pytest.approx(nll, rel=1e-5)


def test_summed_loss_scales_the_sgd_step_by_the_block():
    source = lm.batchify(torch.randint(0, 24, (24,), generator=torch.Generator().manual_seed(2)), 2)  # [12, 2]
    steps = {}
    for reduction in ("mean", "sum_over_block"):
        model = tiny_model(seed=5)
        before = [p.detach().clone() for p in model.parameters()]
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        lm.train_epoch(model, source, 11, opt, lm.LMLoop(epochs=1, batch_size=2, clip_grad_norm=None,
                                                         loss_reduction=reduction, lr_block_scaling="none",
                                                         lr_reference_block=16, eval_batch_size=10, eval_block=35))  # one block of 11 steps
        steps[reduction] = [p.detach() - b for p, b in zip(model.parameters(), before)]
    for mean_step, sum_step in zip(steps["mean"], steps["sum_over_block"]):
        assert torch.allclose(sum_step, 11 * mean_step, rtol=1e-4, atol=1e-7)


# ---------------------------------------------------------------------------------------------- doubling_sum's step
def one_step_change(cfg, block, seed=5):
    """Parameter change after one training step at `block` from fixed weights and text, built as the experiment
    builds a run (optimizer, loop) from the variant's settings `cfg`; also the lr the optimizer holds afterwards."""
    model = tiny_model(seed=seed)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = experiment.build_optimizer(cfg.train, model)
    source = lm.batchify(torch.randint(0, 24, (2 * (block + 1),), generator=torch.Generator().manual_seed(3)), 2)
    lm.train_epoch(model, source, block, optimizer, experiment.build_loop(cfg.train))  # exactly one block
    change = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)])
    return change, optimizer.param_groups[0]["lr"]


@pytest.mark.parametrize("profile", ["paper", "smoke"])
def test_doubling_sum_step_grows_with_the_block_under_the_configured_optimizer(raw_params, profile):
    """The resolved doubling_sum (Adam, clip 0.25, as params.yaml has it): at block 16 its step is the plain
    variants' step; at 32 it is twice theirs, at 64 four times. The plain variants' step does not depend on the
    variant, and the optimizer's lr is the base lr again after the epoch (what the LR scheduler sees)."""
    p = config.validate(raw_params, profile)
    settings = lambda name: p.settings("block_size", name)
    assert settings("doubling_sum").train.optimizer == "adam" and settings("doubling_sum").train.clip_grad_norm
    base_lr = settings("doubling").train.lr
    for block, factor in ((16, 1.0), (32, 2.0), (64, 4.0)):
        plain, lr_after = one_step_change(settings("doubling"), block)
        assert lr_after == base_lr
        for name in ("fixed16", "fixed256", "linear", "plateau"):  # untouched: the same step as doubling
            assert torch.equal(one_step_change(settings(name), block)[0], plain), name
        summed, lr_after = one_step_change(settings("doubling_sum"), block)
        assert lr_after == base_lr  # restored: the scheduler and the checkpoint see the unscaled lr
        assert torch.allclose(summed, factor * plain, rtol=1e-5, atol=1e-7)  # atol: float32 rounding of p - p0
        assert summed.norm() / plain.norm() == pytest.approx(factor, rel=1e-5)


def test_block_scaled_lr_composes_with_the_plateau_scheduler(raw_params, tmp_path):
    """Through the real fit(): ReduceLROnPlateau acts on the base lr and the row's lr is base x block / 16.
    Every epoch after the first is "bad" (threshold 100 nats, patience 0), so the base lr halves from epoch 2."""
    plateau = {"kind": "plateau", "factor": 0.5, "patience": 0, "threshold": 100.0, "min_lr": 0.0}
    p = tiny_params(raw_params, tmp_path, lr_schedule=plateau)
    lrs = {}
    for variant in ("doubling", "doubling_sum"):
        train(p, tmp_path, variant, 0, tmp_path / variant, tmp_path / "ckpt")
        lrs[variant] = [float(r["lr"]) for r in history(tmp_path / variant)]
        assert [int(r["block_size"]) for r in history(tmp_path / variant)] == [16, 32, 64]
    base = p.settings("block_size", "doubling").train.lr
    assert p.settings("block_size", "doubling_sum").train.lr_reference_block == 16
    assert lrs["doubling"] == pytest.approx([base, base, base / 2])
    assert lrs["doubling_sum"] == pytest.approx([base, 2 * base, 4 * base / 2])


def test_plateau_min_lr_floors_the_base_lr(raw_params, tmp_path):
    plateau = {"kind": "plateau", "factor": 0.5, "patience": 0, "threshold": 100.0, "min_lr": 0.008}
    p = tiny_params(raw_params, tmp_path, lr_schedule=plateau, epochs=4, lr=0.01)
    train(p, tmp_path, "fixed16", 0, tmp_path / "run", tmp_path / "ckpt")
    assert [float(r["lr"]) for r in history(tmp_path / "run")] == pytest.approx([0.01, 0.01, 0.008, 0.008])


def test_adam_betas_eps_and_weight_decay_come_from_params(raw_params):
    raw_params["block_size"]["train"].update(adam_betas=[0.8, 0.95], adam_eps=1e-6, weight_decay=1e-4)
    cfg = config.validate(raw_params, "paper").settings("block_size", "doubling")
    group = experiment.build_optimizer(cfg.train, tiny_model()).param_groups[0]
    assert (group["betas"], group["eps"], group["weight_decay"]) == ((0.8, 0.95), 1e-6, 1e-4)
    assert isinstance(experiment.build_optimizer(cfg.train, tiny_model()), torch.optim.Adam)
    sgd = config.validate(raw_params, "paper").settings("block_size", "zaremba_small")
    optimizer = experiment.build_optimizer(sgd.train, tiny_model())
    assert type(optimizer) is torch.optim.SGD and optimizer.param_groups[0]["lr"] == sgd.train.lr


def test_summed_loss_under_adam_or_twice_scaled_is_refused_naming_the_key(raw_params):
    raw_params["block_size"]["variants"]["doubling_sum"]["train"] = {"loss_reduction": "sum_over_block"}
    with pytest.raises(config.ConfigError, match=r"block_size\.variants\.doubling_sum\.train: loss_reduction "
                                                 r"sum_over_block is inert under adam"):
        config.validate(raw_params, "paper")
    raw_params["block_size"]["variants"]["doubling_sum"]["train"] = {
        "loss_reduction": "sum_over_block", "optimizer": "sgd", "lr_block_scaling": "linear"}
    with pytest.raises(config.ConfigError, match="both scale the step by the block; choose one"):
        config.validate(raw_params, "paper")
    raw_params["block_size"]["variants"]["doubling_sum"]["train"] = {"loss_reduction": "sum_over_block",
                                                                     "optimizer": "sgd"}
    config.validate(raw_params, "paper")  # the SGD (Zaremba) meaning stays available
