"""Measure a real training step: peak live tensor bytes, FLOPs by FlopCounterMode, step time.

This is the ground truth `verify` and the tests compare predictions with. It shares nothing with
the prediction but the step itself (`replay.training_step`) and the storage accounting rule
(`tracking.LiveStorages`): the tensors are real, the kernels run, memory is really allocated.
On CUDA the peak is `torch.cuda.max_memory_allocated`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map

from .options import Options, make_optimizer
from .replay import cast_inputs, training_step
from .tracking import LiveStorages


@dataclass(frozen=True)
class Measured:
    peak_bytes: int
    step_peaks: tuple[int, ...]
    params: int
    step_seconds: float


class _LiveCounter(TorchDispatchMode):
    def __init__(self, tracker: LiveStorages):
        super().__init__()
        self.tracker = tracker

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.tracker.track(t)
        return out


def measure_step(model: nn.Module, make_inputs: Callable[[int], Any], options: Options, *,
                 loss_fn=None, on_step: Callable[[int], None] | None = None) -> Measured:
    """Run `options.steps` real steps on `model` (built for real) and measure them."""
    device = torch.device(options.device)
    model = model.to(device=device, dtype=options.torch_dtype)
    model.train()
    inputs = make_inputs(options.batch)
    if options.amp is None:
        inputs = cast_inputs(inputs, options.torch_dtype)
    inputs = tree_map(lambda t: t.to(device) if isinstance(t, torch.Tensor) else t, inputs)
    params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    trainable = [p for p in {id(p): p for p in model.parameters()}.values() if p.requires_grad]
    step_peaks = []
    times = []
    if device.type == "cuda":
        optimizer = make_optimizer(options.optimizer, trainable)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        for step in range(options.steps):
            start = time.perf_counter()
            training_step(model, inputs, loss_fn, optimizer, amp_dtype=options.amp_dtype,
                          device_type="cuda")
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
            step_peaks.append(torch.cuda.max_memory_allocated())
            if on_step:
                on_step(step)
        return Measured(max(step_peaks), tuple(step_peaks), params, min(times))
    tracker = LiveStorages(keep_events=False)
    for t in list(model.parameters()) + list(model.buffers()):
        tracker.track(t)
    for t in tree_leaves(inputs):
        if isinstance(t, torch.Tensor):
            tracker.track(t)
    try:
        with _LiveCounter(tracker):
            # Made inside the counter: some optimizers (Adagrad) create their state right here.
            optimizer = make_optimizer(options.optimizer, trainable)
            for step in range(options.steps):
                tracker.reset_peak()
                start = time.perf_counter()
                training_step(model, inputs, loss_fn, optimizer, amp_dtype=options.amp_dtype,
                              device_type="cpu")
                times.append(time.perf_counter() - start)
                step_peaks.append(tracker.peak)
                if on_step:
                    on_step(step)
    finally:
        tracker.close()
    return Measured(max(step_peaks), tuple(step_peaks), params, min(times))
