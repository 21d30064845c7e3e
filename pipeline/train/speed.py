"""A profile's speed options (params.yaml profiles.<p>.speed, pipeline/schemas/speed.py) applied to the training step.

    speedup = for_run(run)          the run's options on its device; sets cuDNN's autotuning flag for the process
                                    (channels_last: CUDA only, see for_run)
    speedup.model(model)            channels_last: a CNN's weights in NHWC, in place (the optimizer keeps its tensors)
    speedup.inputs(x)               channels_last: a [B, C, H, W] batch in NHWC
    with speedup.autocast(): ...    the forward pass and the loss in bf16 / fp16 where torch.autocast casts
    speedup.backward(loss)          fp16: backward of the scaled loss, so that small gradients do not underflow
    speedup.unscale(optimizer)      fp16: the gradients back at their true scale, before a clip reads their norm
    speedup.step(optimizer)         fp16: skipped when a gradient overflowed (the scale then halves)
    speedup.objects()               {"grad_scaler": ...} when there is one: checkpointed with the run's other state

With every option off (Speed(), the papers' fp32 path) each of these is exactly the plain step: no autocast
context, loss.backward(), optimizer.step(). The same code runs on CPU (autocast and the grad scaler exist there too),
so the tests exercise every path; fp16 is meant for CUDA all the same (oneDNN has no fp16 LSTM kernel on common
CPUs, and CPUs gain nothing from it). nn.LSTM already runs cuDNN's fused kernels on CUDA (torch.backends.cudnn.enabled
is on by default): the LM needs no switch of its own; cudnn_benchmark only lets cuDNN time and pick its kernels.
"""
from __future__ import annotations

from contextlib import nullcontext

import torch

from ..errors import PipelineError
from ..schemas.speed import Speed

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}  # Speed.autocast -> the autocast dtype ("fp32": none)


class Speedup:
    def __init__(self, speed: Speed, device):
        self.speed, self.device_type = speed, torch.device(device).type
        self.dtype = DTYPES.get(speed.autocast)
        # fp16's 5 exponent bits underflow small gradients: scale the loss up, unscale before the step. bf16 has
        # fp32's exponent range and needs none.
        self.scaler = torch.amp.GradScaler(self.device_type) if speed.autocast == "fp16" else None

    def model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(memory_format=torch.channels_last) if self.speed.channels_last else model

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.speed.channels_last else x

    def autocast(self):
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def unscale(self, optimizer) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer) -> None:
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)  # unscales first if unscale() was not called; skips on inf/nan gradients
        self.scaler.update()

    def objects(self) -> dict:
        """Stateful objects to checkpoint with the run (the grad scaler's scale and growth tracker), if any."""
        return {"grad_scaler": self.scaler} if self.scaler is not None else {}


FP32 = Speedup(Speed(), "cpu")  # every option off: the plain fp32 step (the loops' default outside a run)


def for_run(run) -> Speedup:
    """The run's speed options (Run.speed, from params.yaml via Job.start) on the run's device.

    channels_last is refused off CUDA: torch 2.13's CPU (oneDNN) channels-last convolution backward corrupts the
    heap for some shapes (a 1x1 stride-2 convolution, the PreResNet shortcut, with a batch of 3 or 5 aborts the
    process), and NHWC pays off only on tensor cores anyway. Speedup itself applies it anywhere (the tests do).
    """
    if run.speed.channels_last and torch.device(run.device).type != "cuda":
        raise PipelineError(f"profiles.{run.spec.profile}.speed.channels_last: for CUDA devices only (torch's CPU "
                            f"channels-last convolution backward crashes for some shapes); set it false to train on "
                            f"{run.device}")
    # cudnn.benchmark: cuDNN times candidate kernels per input shape and keeps the fastest; which one wins can
    # differ between runs, so GPU reruns are no longer bit-identical (on CPU the flag does nothing)
    torch.backends.cudnn.benchmark = run.speed.cudnn_benchmark
    return Speedup(run.speed, run.device)
