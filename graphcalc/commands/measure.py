"""Measure a real training step: peak live tensor bytes, FLOPs by FlopCounterMode, step time.

This is the ground truth `verify` and the tests compare predictions with. It shares nothing with
the prediction but the step itself (`graphcalc.fake.step.training_step`) and the storage accounting rule
(`tracking.LiveStorages`): the tensors are real, the kernels run, memory is really allocated.
On CUDA the peak is `torch.cuda.max_memory_allocated`.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn
from torch.utils._pytree import tree_leaves

from graphcalc.fake import checkpointing
from graphcalc.sources import loader
from graphcalc.options import Options, make_optimizer
from graphcalc.fake.step import example_batch, prepare_inputs, training_step
from graphcalc.fake.tracking import LiveCounter, LiveStorages


def _raw(f):
    """Hand FlopCounterMode one of its own (already shape-wrapped) formulas as it is."""

    def g(*args, out_val=None, **kwargs):
        return f(*args, out_val=out_val, **kwargs)

    g._get_raw = True
    return g


def _conv_backward_fixed(grad_out, x, w, bias, stride, padding, dilation, transposed,
                         output_padding, groups, output_mask, out_val=None):
    """torch's own conv backward formula with pytorch PR #183405 applied: torch 2.13 counts the
    weight gradient of a grouped convolution `groups` times too many."""
    import torch.utils.flop_counter as fc

    args = (grad_out, x, w, bias, stride, padding, dilation, transposed, output_padding, groups)
    grad_input = fc.conv_backward_flop(*args, [output_mask[0], False, False], out_val=out_val)
    grad_weight = fc.conv_backward_flop(*args, [False, output_mask[1], False], out_val=out_val)
    return grad_input + grad_weight // groups


def _lstm_layer(x, w_ih, w_hh, *args, out_val=None, **kwargs):
    """oneDNN's LSTM layer: FlopCounterMode has no formula for it (it counts 0). Each of the
    T*N tokens of x (T, N, I) meets W_ih (4H x I) and W_hh (4H x H) once: 2 FLOPs per weight
    element per token. graphcalc's own formula (flops/rnn.py); tests/test_rnn.py checks both
    against a count by hand."""
    return 2 * x.shape[0] * x.shape[1] * (w_ih.numel() + w_hh.numel())


def _lstm_layer_backward(x, w_ih, w_hh, *args, out_val=None, **kwargs):
    """Input and weight gradients: twice the forward products."""
    return 2 * _lstm_layer(x, w_ih, w_hh)


def _corrections():
    import torch.utils.flop_counter as fc

    aten = torch.ops.aten
    table = {aten.convolution_backward: _raw(_conv_backward_fixed),
             aten.mkldnn_rnn_layer: _raw(_lstm_layer),
             aten.mkldnn_rnn_layer_backward: _raw(_lstm_layer_backward)}
    # The CPU SDPA kernels have no entry in torch 2.13's registry (pytorch #195460): torch's own
    # CUDA formulas apply to them unchanged.
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        table[aten._scaled_dot_product_flash_attention_for_cpu] = _raw(fc.sdpa_flop)
        table[aten._scaled_dot_product_flash_attention_for_cpu_backward] = _raw(
            fc.sdpa_backward_flop)
    return table


# FlopCounterMode's known gaps in torch 2.13: two filled with torch's own formulas, and the CPU
# LSTM kernel, which torch has no formula for, with graphcalc's (checked by hand in the tests).
REFERENCE_CORRECTIONS = _corrections()


def count_flops(model: nn.Module, inputs, loss_fn, corrected: bool = True) -> tuple[int, int]:
    """(forward+loss, backward) FLOPs of one real step, by FlopCounterMode."""
    forward, backward, _ = count_step_flops(model, inputs, loss_fn, corrected)
    return forward, backward


def count_step_flops(model: nn.Module, inputs, loss_fn, corrected: bool = True,
                     checkpoint: tuple[str, ...] = ()) -> tuple[int, int, int]:
    """(forward+loss, backward, recomputed) FLOPs of one real step, by FlopCounterMode, with the
    modules `checkpoint` names under torch.utils.checkpoint: backward counts the forwards the
    checkpoints re-run, as FlopCounterMode does; recomputed is those alone (a second
    FlopCounterMode around each re-run)."""
    from torch.utils.flop_counter import FlopCounterMode

    from graphcalc.fake.step import call_model, compute_loss

    mapping = REFERENCE_CORRECTIONS if corrected else None
    paths = checkpointing.resolve(model, checkpoint) if checkpoint else ()
    with checkpointing.checkpointed(model, paths), \
            checkpointing.real_recompute_flops(mapping) as recomputed, \
            FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        output = call_model(model, inputs)
        loss = compute_loss(loss_fn, output, inputs)
        forward = counter.get_total_flops()
        loss.backward()
    model.zero_grad(set_to_none=True)
    return forward, counter.get_total_flops() - forward, recomputed[0]


@dataclass(frozen=True)
class Measured:
    peak_bytes: int
    step_peaks: tuple[int, ...]
    params: int
    step_seconds: float
    reserved_bytes: int | None = None  # CUDA: max_memory_reserved


def counted_steps(model: nn.Module, inputs, loss_fn, options: Options, *,
                  prepare: Callable[[nn.Module], nn.Module] | None = None,
                  context: Callable[[LiveStorages], Any] | None = None,
                  on_step: Callable[[int], None] | None = None) -> tuple[list[int], list[float]]:
    """`options.steps` real CPU steps, counting live tensor bytes: (peak of each step, seconds).

    The model, its buffers and the inputs are live from the start. The optimizer is made inside
    the count (Adagrad creates its state right there), and so is `prepare(model)`, which returns
    the model to train (DDP makes its gradient buckets when it wraps). `context(tracker)` is
    entered around the count (FSDP's storage resizes report to the tracker through it).
    """
    tracker = LiveStorages(keep_events=False)
    for t in [*model.parameters(), *model.buffers(), *tree_leaves(inputs)]:
        if isinstance(t, torch.Tensor):
            tracker.track(t)
    step_peaks, times = [], []
    try:
        with context(tracker) if context else contextlib.nullcontext(), LiveCounter(tracker):
            if prepare is not None:
                model = prepare(model)
            trainable = [p for p in {id(p): p for p in model.parameters()}.values()
                         if p.requires_grad]
            optimizer = make_optimizer(options.optimizer, trainable, fused=options.fused)
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
    return step_peaks, times


def measure_step(model: nn.Module, make_inputs: Callable[[int], Any], options: Options, *,
                 loss_fn=None, on_step: Callable[[int], None] | None = None,
                 routing: Callable[[], Any] = contextlib.nullcontext) -> Measured:
    """Run `options.steps` real steps on `model` (built for real) and measure them, inside
    `routing()` (a `graphcalc.routing.ForcedRouting` for a mixture-of-experts model), with the
    modules `options.checkpoint` names under torch.utils.checkpoint."""
    loader.materialize_lazy(model, make_inputs)  # as a training script does, before the optimizer
    paths = checkpointing.resolve(model, options.checkpoint) if options.checkpoint else ()
    with checkpointing.checkpointed(model, paths):
        return _measure_step(model, make_inputs, options, loss_fn, on_step, routing)


def _measure_step(model, make_inputs, options: Options, loss_fn, on_step, routing) -> Measured:
    device = torch.device(options.device)
    model = model.to(device=device, dtype=options.torch_dtype)
    model.train()
    inputs = prepare_inputs(example_batch(make_inputs, options.batch), options, device)
    params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    trainable = [p for p in {id(p): p for p in model.parameters()}.values() if p.requires_grad]
    if device.type == "cuda":
        optimizer = make_optimizer(options.optimizer, trainable, fused=options.fused)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        with routing():
            step_peaks, times = _cuda_steps(model, inputs, loss_fn, optimizer, options, on_step)
        return Measured(max(step_peaks), tuple(step_peaks), params, min(times),
                        torch.cuda.max_memory_reserved())
    step_peaks, times = counted_steps(model, inputs, loss_fn, options, on_step=on_step,
                                      context=lambda tracker: routing())
    return Measured(max(step_peaks), tuple(step_peaks), params, min(times))


def _cuda_steps(model, inputs, loss_fn, optimizer, options: Options, on_step):
    """Real CUDA steps: (max_memory_allocated after each, seconds of each)."""
    step_peaks, times = [], []
    for step in range(options.steps):
        start = time.perf_counter()
        training_step(model, inputs, loss_fn, optimizer, amp_dtype=options.amp_dtype,
                      device_type="cuda")
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        step_peaks.append(torch.cuda.max_memory_allocated())
        if on_step:
            on_step(step)
    return step_peaks, times