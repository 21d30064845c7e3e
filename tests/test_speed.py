"""The GPU speed options (params.yaml profiles.<p>.speed, pipeline/train/speed.py) on CPU, where the same code paths
run: every option off is the plain fp32 step bit for bit; bf16 / fp16 autocast and channels-last stay close to it;
the fp16 grad scaler is checkpointed; a bad key is one line naming it; the options that change numbers change the
run's identity."""
from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeline import config
from pipeline.errors import PipelineError
from pipeline.models.lstm_lm import LSTMConfig, LSTMLM
from pipeline.schemas.speed import Speed
from pipeline.train import image, lm
from pipeline.train.engine import RunSpec
from pipeline.train.jobs import Inputs, Job
from pipeline.train.runner import seed_generators, start_run
from pipeline.train.speed import Speedup

CLASSES, N, SIDE = 4, 64, 12  # 64 training images of 12 x 12, 4 classes told apart by their mean colour


# ---------------------------------------------------------------------------------------------- tiny data, models
def tiny_images(on_device: bool = True) -> image.ImageData:
    g = np.random.default_rng(0)

    def make(n):
        y = np.arange(n) % CLASSES
        colour = np.array([[60, 60, 60], [200, 60, 60], [60, 200, 60], [60, 60, 200]])[y]  # [n, 3]
        x = np.clip(colour[:, None, None, :] + g.normal(0, 50, (n, SIDE, SIDE, 3)), 0, 255).astype(np.uint8)
        return x, y.astype(np.int64)

    (x, y), (test_x, test_y) = make(N), make(20)
    return image.ImageData.from_arrays(x, y, np.arange(N), N, test_x, test_y, CLASSES, "cpu", on_device)


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                                  nn.Flatten())
        self.head = nn.Linear(32, CLASSES)

    def forward(self, x):
        return self.head(self.body(x))


def spec() -> RunSpec:
    return RunSpec(experiment="unit", variant="tiny", seed=0, profile="smoke", method="m", dataset="toy",
                   subset=None, metric="test_acc", mode="max", target={"metric": "test_acc", "value": 0.5,
                                                                         "mode": "max"})


IMAGE_LOOP = dict(samples_per_epoch=N, eval_every=1, eval_batch=8, augment=True, clip_grad_norm=1.0)


def fit_images(folder, speed: Speed, epochs: int = 2):
    """A tiny image run at `speed` (its own folders: the spec leaves speed out of the hash); (run, model)."""
    run = start_run(spec(), folder / "run", folder / "ckpt", "cpu", speed=speed)  # seeds the global RNG
    model = TinyCNN()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loop = image.ImageLoop(epochs=epochs, **IMAGE_LOOP)
    image.fit(run, model, optimizer, None, tiny_images(speed.data_on_device), image.FixedBatch(16), loop,
              seed_generators(0))
    return run, model


class FixedBlock:
    def block_size(self, epoch, history):
        return 6


LM_LOOP = dict(batch_size=4, clip_grad_norm=0.5, loss_reduction="mean", lr_block_scaling="none",
               lr_reference_block=6, eval_batch_size=2, eval_block=10)


def tiny_lm() -> LSTMLM:
    return LSTMLM(LSTMConfig(vocab_size=20, embed_size=8, hidden_size=8, num_layers=2, dropout=0.0),
                  torch.Generator().manual_seed(0))


def tokens(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 20, (n,), generator=torch.Generator().manual_seed(seed))


def fit_lm(folder, speed: Speed, epochs: int = 2):
    run = start_run(spec(), folder / "run", folder / "ckpt", "cpu", speed=speed)
    model = tiny_lm()
    data = {"train": tokens(400, 0), "valid": tokens(60, 1), "test": tokens(60, 2)}
    lm.fit(run, model, torch.optim.Adam(model.parameters(), lr=0.01), None, FixedBlock(), data,
           lm.LMLoop(epochs=epochs, **LM_LOOP))
    return run, model


def weights(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def history(run, *drop) -> list[dict]:
    timing = {"elapsed_seconds", "tokens_per_s", "time", *drop}
    return [{k: v for k, v in row.items() if k not in timing} for row in run.history]


# ---------------------------------------------------------------------------------------------- (a) off = fp32
def test_options_off_are_the_plain_fp32_image_step_bit_for_bit():
    """The image step written out by hand as it was before the options (no helper) against train_epoch with every
    option off, explicitly and by default: the same weights, bit for bit."""
    data, loop = tiny_images(), image.ImageLoop(epochs=1, **IMAGE_LOOP)
    out = []
    for way in ("by hand", "default", "explicit"):
        torch.manual_seed(0)
        model = TinyCNN()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        stream, aug = image.IndexStream(data.global_index, torch.Generator().manual_seed(1)), torch.Generator()
        aug.manual_seed(2)
        if way == "by hand":
            model.train()
            for _ in range(N // 16):
                rows = data.rows(stream.take(16))
                x = image.augment(data.normalize(data.x[rows]), aug)
                loss = F.cross_entropy(model(x), data.y[rows])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
        else:
            extra = (Speedup(Speed(), "cpu"),) if way == "explicit" else ()
            seen = torch.zeros(N, dtype=torch.bool)
            image.train_epoch(model, optimizer, None, data, stream, image.FixedBatch(16), loop, aug, seen, *extra)
        out.append(weights(model))
    assert all(torch.equal(a, b) for other in out[1:] for a, b in zip(out[0], other))


def test_options_off_are_the_plain_fp32_lm_step_bit_for_bit():
    source, loop = lm.batchify(tokens(400, 0), 4), lm.LMLoop(epochs=1, **LM_LOOP)
    out = []
    for way in ("by hand", "default", "explicit"):
        model = tiny_lm()
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        if way == "by hand":
            model.train()
            hidden = model.init_hidden(4)
            for i in range(0, source.size(0) - 1, 6):
                x, y = lm.get_batch(source, i, 6)
                logits, hidden = model(x, lm.detach_hidden(hidden))
                loss = F.cross_entropy(logits.reshape(-1, 20), y.reshape(-1))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
                optimizer.step()
        else:
            extra = (Speedup(Speed(), "cpu"),) if way == "explicit" else ()
            lm.train_epoch(model, source, 6, optimizer, loop, *extra)
        out.append(weights(model))
    assert all(torch.equal(a, b) for other in out[1:] for a, b in zip(out[0], other))


def test_images_held_on_the_host_give_the_same_numbers(tmp_path):
    """data_on_device false: the images stay in host memory and batches are copied; the augmentation draws and
    every number are those of the images held on the device."""
    host = tiny_images(on_device=False)
    assert host.x.device.type == "cpu" and host.device == host.y.device
    on, on_model = fit_images(tmp_path / "on", Speed())
    off, off_model = fit_images(tmp_path / "off", Speed(data_on_device=False))
    assert history(on) == history(off)
    assert all(torch.equal(a, b) for a, b in zip(weights(on_model), weights(off_model)))


# ---------------------------------------------------------------------------------------------- (b) autocast
def test_bf16_autocast_runs_the_same_loops_close_to_fp32(tmp_path):
    for fit, loss in ((fit_images, "train_loss"), (fit_lm, "train_loss")):
        fp32, _ = fit(tmp_path / fit.__name__ / "fp32", Speed())
        bf16, _ = fit(tmp_path / fit.__name__ / "bf16", Speed(autocast="bf16"))
        a, b = [r[loss] for r in fp32.history], [r[loss] for r in bf16.history]
        assert all(math.isfinite(v) for v in b) and not bf16.diverged
        assert b != a and b == pytest.approx(a, rel=0.05)  # bf16 keeps 8 bits of mantissa: close, not identical
    assert bf16.history[-1]["test_ppl"] == pytest.approx(fp32.history[-1]["test_ppl"], rel=0.05)


def test_fp16_grad_scaler_is_checkpointed_and_a_killed_run_resumes_identically(tmp_path, monkeypatch, killed_after):
    """The scale grows after every good step here (growth_interval 1, not 2000), so it overflows, steps are skipped
    and the scale at a checkpoint matters: a resumed run that restarted the scale would train differently."""
    monkeypatch.setattr(torch.amp, "GradScaler", functools.partial(torch.amp.GradScaler, growth_interval=1))
    speed = Speed(autocast="fp16")
    whole, whole_model = fit_images(tmp_path / "whole", speed, epochs=3)
    state = torch.load(whole.checkpoint_path, weights_only=True)["objects"]
    assert "grad_scaler" in state and state["grad_scaler"]["scale"] != 2.0**16  # the scale moved
    assert all(math.isfinite(r["train_loss"]) for r in whole.history)
    assert "grad_scaler" not in torch.load(fit_images(tmp_path / "bf16", Speed(autocast="bf16"), 1)[0]
                                           .checkpoint_path, weights_only=True)["objects"]  # no scaler: none saved

    with killed_after(1):
        fit_images(tmp_path / "killed", speed, epochs=3)
    resumed, resumed_model = fit_images(tmp_path / "killed", speed, epochs=3)
    assert history(resumed) == history(whole)
    assert all(torch.equal(a, b) for a, b in zip(weights(resumed_model), weights(whole_model)))


# ---------------------------------------------------------------------------------------------- (c) channels-last
def test_channels_last_gives_the_same_predictions_and_steps_within_tolerance():
    torch.manual_seed(0)
    data, model = tiny_images(), TinyCNN().eval()
    fast = Speedup(Speed(channels_last=True), "cpu")
    x = data.normalize(data.x)
    expected = model(x)
    fast.model(model)
    assert model.body[0].weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(model(fast.inputs(x)), expected, rtol=1e-4, atol=1e-5)

    losses = []  # one epoch of the image step, NCHW and NHWC, from the same start
    for speedup in (Speedup(Speed(), "cpu"), fast):
        torch.manual_seed(0)
        model = speedup.model(TinyCNN())
        stream, aug = image.IndexStream(data.global_index, torch.Generator().manual_seed(1)), torch.Generator()
        stats = image.train_epoch(model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), None, data,
                                  stream, image.FixedBatch(16), image.ImageLoop(epochs=1, **IMAGE_LOOP), aug,
                                  torch.zeros(N, dtype=torch.bool), speedup)
        losses.append(stats["train_loss"])
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)


def test_a_run_refuses_channels_last_off_cuda(tmp_path):
    """torch's CPU channels-last convolution backward aborts the process for some shapes (1x1 stride 2, batch 3):
    a CPU run refuses the option in one line instead."""
    with pytest.raises(PipelineError, match=r"^profiles\.smoke\.speed\.channels_last: for CUDA devices only") as info:
        fit_images(tmp_path, Speed(channels_last=True))
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------- (d) the config
def error_for(raw: dict) -> str:
    with pytest.raises(config.ConfigError) as info:
        config.validate(raw)
    assert "\n" not in str(info.value), "errors are one line"
    return str(info.value)


@pytest.mark.parametrize("profile, key, value, expected", [
    ("smoke", "turbo", True, "profiles.smoke.speed.turbo: unknown key"),
    ("quick", "autocast", "fp8", "profiles.quick.speed.autocast: Input should be 'fp32', 'bf16' or 'fp16'"),
    # `autocast: off` written bare is YAML 1.1's false, hence "fp32" for no autocast
    ("paper", "autocast", False, "profiles.paper.speed.autocast: Input should be 'fp32', 'bf16' or 'fp16'"),
    ("paper", "channels_last", "yes", "profiles.paper.speed.channels_last: Input should be a valid boolean"),
])
def test_a_bad_speed_key_is_one_line_naming_it(raw_params, profile, key, value, expected):
    raw_params["profiles"][profile]["speed"][key] = value
    assert expected in error_for(raw_params)


def test_every_profile_states_its_speed_and_an_omitted_one_is_an_error(raw_params):
    for profile in config.PROFILES:
        assert config.validate(raw_params, profile).speed == Speed()  # the papers' numerics everywhere
    del raw_params["profiles"]["smoke"]["speed"]
    with pytest.raises(config.ConfigError, match="profiles.smoke.speed: required key is missing"):
        config.validate(raw_params)


# ---------------------------------------------------------------------------------------------- (e) identity
def test_options_that_change_numbers_change_the_runs_identity(raw_params, tmp_path):
    def run_spec(**speed):
        raw_params["profiles"]["smoke"]["speed"].update(speed)
        params = config.validate(raw_params)
        name = params.experiments[0]
        job = Job(params, name, params.variants(name)[0], 0, Inputs(), tmp_path / "run", tmp_path / "ckpt")
        return job, job.spec("test_acc", "max", reads=[])  # no data read: the identity of config and code

    job, default = run_spec()
    assert default.config_hash() == run_spec()[1].config_hash()  # a rerun is the same run
    assert default.config["speed"] == {"autocast": "fp32", "channels_last": False, "cudnn_benchmark": False}
    assert job.start(default).speed == Speed()  # the Run carries the profile's options to the loops
    assert run_spec(data_on_device=False)[1].config_hash() == default.config_hash()  # the same numbers
    bf16 = run_spec(autocast="bf16")[1]
    assert bf16.config_hash() != default.config_hash() and bf16.config["speed"]["autocast"] == "bf16"
    assert run_spec(autocast="fp32", channels_last=True)[1].config_hash() not in (default.config_hash(),
                                                                                   bf16.config_hash())
