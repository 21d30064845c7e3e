"""A profile's `speed:` mapping: how the training step uses the hardware (values and reasons: params.yaml).

Each option is off by default where it changes the papers' numerics; pipeline/train/speed.py applies them in the
shared loops (pipeline/train/image.py, lm.py) on any device, so the CPU tests run the same code paths.
"""
from __future__ import annotations

from typing import Literal

from .base import Strict

AUTOCAST = ("fp32", "bf16", "fp16")  # "fp32": no autocast (not "off": YAML 1.1 reads a bare off as false)


class Speed(Strict):
    autocast: Literal[AUTOCAST] = "fp32"  # forward passes in bf16 / fp16 under torch.autocast (fp16: a grad scaler)
    channels_last: bool = False  # CNNs and their input batches in torch.channels_last memory format (tensor cores)
    data_on_device: bool = True  # image arrays held on the training device; False: in host memory, copied per batch
    cudnn_benchmark: bool = False  # torch.backends.cudnn.benchmark: cuDNN times its kernels and keeps the fastest

    def identity(self) -> dict:
        """The options that may change a run's numbers, for its identity (config hash, MLflow params).
        data_on_device is left out: it moves the same bytes, and every number is computed where it was before."""
        return self.model_dump(exclude={"data_on_device"})
