"""The choices a user makes about the step, validated once, with the message the CLI prints."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import UsageError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
OPTIMIZERS = ("sgd", "momentum", "adam", "adamw", "rmsprop", "adagrad")
DEVICES = ("cpu", "cuda")
# Batches past this are analysed (fake tensors cost nothing) but shapes must stay int64-sized.
MAX_BATCH = 2**40


def _choose(kind: str, value: str, valid) -> str:
    v = str(value).lower()
    if v not in valid:
        raise UsageError(f"unknown {kind} '{value}': choose one of {', '.join(valid)}")
    return v


@dataclass(frozen=True)
class Options:
    batch: int = 1
    dtype: str = "fp32"
    optimizer: str = "adam"
    amp: str | None = None
    device: str = "cpu"
    steps: int = 2

    def __post_init__(self):
        if isinstance(self.batch, bool) or not isinstance(self.batch, int):
            raise UsageError(f"batch must be a whole number, got {self.batch!r}")
        if self.batch < 1:
            raise UsageError(f"batch must be at least 1, got {self.batch}")
        if self.batch > MAX_BATCH:
            raise UsageError(f"batch {self.batch} is past the largest supported ({MAX_BATCH})")
        object.__setattr__(self, "dtype", _choose("dtype", self.dtype, DTYPES))
        object.__setattr__(self, "optimizer", _choose("optimizer", self.optimizer, OPTIMIZERS))
        if self.amp is not None:
            object.__setattr__(self, "amp", _choose("amp dtype", self.amp, AMP_DTYPES))
            if self.dtype != "fp32":
                raise UsageError("--amp keeps fp32 master weights: use it with --dtype fp32")
        object.__setattr__(self, "device", _choose("device", self.device, DEVICES))
        if self.steps < 1:
            raise UsageError(f"steps must be at least 1, got {self.steps}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return AMP_DTYPES[self.amp] if self.amp else None

    def as_dict(self) -> dict:
        return {"batch": self.batch, "dtype": self.dtype, "optimizer": self.optimizer,
                "amp": self.amp, "device": self.device}


def make_optimizer(name: str, params, *, foreach: bool | None = None):
    """The torch.optim optimizer a user would write for `name`, with the library's defaults."""
    opt = torch.optim
    kw = {} if foreach is None else {"foreach": foreach}
    if name == "sgd":
        return opt.SGD(params, lr=0.01, **kw)
    if name == "momentum":
        return opt.SGD(params, lr=0.01, momentum=0.9, **kw)
    if name == "adam":
        return opt.Adam(params, lr=1e-3, **kw)
    if name == "adamw":
        return opt.AdamW(params, lr=1e-3, **kw)
    if name == "rmsprop":
        return opt.RMSprop(params, lr=1e-3, **kw)
    if name == "adagrad":
        return opt.Adagrad(params, lr=1e-2, **kw)
    raise UsageError(f"unknown optimizer '{name}': choose one of {', '.join(OPTIMIZERS)}")
