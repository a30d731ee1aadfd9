"""The choices a user makes about the step, validated once, with the message the CLI prints."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from graphcalc.errors import UsageError
from graphcalc import routing as routing_

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
OPTIMIZERS = ("sgd", "momentum", "adam", "adamw", "rmsprop", "adagrad")
DEVICES = ("cpu", "cuda")
# How the step is spread over `world_size` ranks (graphcalc.ranks.distributed): none (one device), ddp,
# zero1 (optimizer state sharded), zero2 (and gradients), fsdp (and parameters: fully_shard).
SHARDS = ("none", "ddp", "zero1", "zero2", "fsdp")
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
    world_size: int = 1
    shard: str = "none"
    routing: str = "balanced"  # mixture-of-experts routing assumed (graphcalc.routing)
    fused: bool = False  # the optimizer's fused kernels (torch.optim's fused=True)
    # The GPU the step is for (graphcalc.gpu.gpus; any name find_gpu reads, kept as its key) and its
    # memory in bytes (for a card not in the table, or to override the table's). Either implies
    # device cuda and a verdict: does the step fit?
    gpu: str | None = None
    gpu_memory: int | None = None
    expandable_segments: bool = False  # PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
    gpu_note: str | None = field(default=None, compare=False)  # how an ambiguous name was read
    # the compute capability of a card graphcalc's table lacks (verify on such a GPU reads it
    # off the device); a named card's comes from the table
    gpu_capability: tuple[int, int] | None = None
    # module path patterns run under torch.utils.checkpoint (graphcalc.fake.checkpointing)
    checkpoint: tuple[str, ...] = ()

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
        if isinstance(self.world_size, bool) or not isinstance(self.world_size, int) \
                or self.world_size < 1:
            raise UsageError(f"world size must be a whole number of at least 1, got "
                             f"{self.world_size!r}")
        object.__setattr__(self, "shard", _choose("shard", self.shard, SHARDS))
        try:
            object.__setattr__(self, "routing", routing_.parse(self.routing))
        except ValueError as e:
            raise UsageError(str(e)) from None
        if self.gpu is not None:
            from graphcalc.gpu.gpus import find_gpu

            found = find_gpu(self.gpu)
            object.__setattr__(self, "gpu", found.gpu.key)
            if found.note and self.gpu_note is None:
                object.__setattr__(self, "gpu_note", found.note)
        if self.gpu_memory is not None:
            if isinstance(self.gpu_memory, bool) or not isinstance(self.gpu_memory, int) \
                    or self.gpu_memory <= 0:
                raise UsageError(f"GPU memory must be a positive number of bytes, got "
                                 f"{self.gpu_memory!r}")
        if self.gpu is not None or self.gpu_memory is not None:
            object.__setattr__(self, "device", "cuda")  # a GPU target is a CUDA step
        patterns = (self.checkpoint,) if isinstance(self.checkpoint, str) else self.checkpoint
        object.__setattr__(self, "checkpoint", tuple(str(p).strip() for p in patterns))
        if "auto" in self.checkpoint:
            raise UsageError("--checkpoint auto chooses the modules for a memory budget: give "
                             "--memory too")
        if any(not p for p in self.checkpoint):
            raise UsageError("--checkpoint needs a module path pattern, e.g. h.* or "
                             "layers.*.mlp")
        if self.world_size == 1 and self.shard != "none":
            raise UsageError(f"--shard {self.shard} needs --world-size 2 or more")
        if self.world_size > 1 and self.shard == "none":
            raise UsageError(f"--world-size {self.world_size} needs a --shard strategy: "
                             f"choose one of {', '.join(SHARDS[1:])}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return AMP_DTYPES[self.amp] if self.amp else None

    @property
    def cuda_target(self):
        """The GPU a CUDA step is replayed for (graphcalc.gpu.cuda): the one named, else an sm80
        (A100-class) GPU."""
        from graphcalc.gpu.cuda import DEFAULT_TARGET, CudaTarget

        spec = self.gpu_spec
        if spec is None:
            if self.gpu_capability is not None:
                cap = tuple(self.gpu_capability)
                return CudaTarget(cap, f"an sm{cap[0]}{cap[1]} GPU")
            return DEFAULT_TARGET
        return CudaTarget(spec.compute_capability, spec.name, spec.cublas_workspace_bytes)

    @property
    def gpu_spec(self):
        """The graphcalc.gpu.gpus.GPU named, or None."""
        if self.gpu is None:
            return None
        from graphcalc.gpu.gpus import find_gpu

        return find_gpu(self.gpu).gpu

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def as_dict(self) -> dict:
        d = {"batch": self.batch, "dtype": self.dtype, "optimizer": self.optimizer,
             "amp": self.amp, "device": self.device}
        if self.routing != "balanced":
            d["routing"] = self.routing
        if self.fused:
            d["fused"] = True
        if self.gpu is not None or self.gpu_memory is not None:  # as before without a GPU
            d.update(gpu=self.gpu, gpu_memory=self.gpu_memory)
        if self.expandable_segments:
            d["expandable_segments"] = True
        if self.checkpoint:
            d["checkpoint"] = list(self.checkpoint)
        if self.distributed:  # the single-device JSON stays as it was
            d.update(world_size=self.world_size, shard=self.shard)
        return d


def make_optimizer(name: str, params, *, foreach: bool | None = None, fused: bool = False):
    """The torch.optim optimizer a user would write for `name`, with the library's defaults;
    `fused` asks for its fused kernels (SGD, Adam, AdamW, Adagrad have them)."""
    opt = torch.optim
    kw = {} if foreach is None else {"foreach": foreach}
    if fused:
        if name in ("rmsprop",):
            raise UsageError(f"--fused: torch.optim has no fused {name}; choose sgd, momentum, "
                             "adam, adamw or adagrad")
        kw = {"fused": True}
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
