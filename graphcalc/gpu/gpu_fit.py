"""Will the step fit on the GPU? The replay's allocations through the simulated caching allocator
(graphcalc.gpu.allocator), the CUDA context beside them, against the card's memory (graphcalc.gpu.gpus).

The verdict:
- the reserved peak with no limit plus the context is within the card: fits, with the headroom;
- else the allocator is run again with the card's memory less the context as cudaMalloc's limit:
  where a cudaMalloc would fail it returns its cached segments and retries, as the real one
  does. If that always succeeds, it fits (the allocator had to return cached memory, so the
  headroom is small); if some allocation still fails, it does not fit, short by the most that
  allocation lacked.
"""

from __future__ import annotations

from bisect import bisect_right

from graphcalc.gpu.allocator import simulate
from graphcalc.gpu.gpus import cuda_context
from graphcalc.options import Options
from graphcalc.report import GpuFit


def _capacity(options: Options):
    spec = options.gpu_spec
    if options.gpu_memory is not None:
        return spec, options.gpu_memory, "--memory"
    if spec is not None:
        return spec, spec.memory_bytes, spec.memory_source
    return None, None, None


# The estimated allocations (cuDNN's convolution workspaces, graphcalc.gpu.cuda.conv_workspace):
# the verdict keeps room for the one live at the allocated peak to be a third larger. On the
# real H200 runs (tests/data/h200) the estimate live at a peak fell short by up to 24% of itself
# (seed_cnn's first convolution's weight gradient, 1.8 MiB); away from the peaks one ResNet-50
# weight gradient fell short by more (46.5 MiB), and another GPU or cuDNN may pick another
# algorithm. (A margin on every estimate would judge by the stems' workspaces too, which the
# estimate puts far above what cuDNN takes: fit then gives a ResNet-18 on an H200 two thirds of
# the batch that really fits.)
ESTIMATE_MARGIN = 1 / 3
# And room for the replay's own error: against the real H200 runs (tests/test_gpu_streams.py)
# the allocated peak is never under by more than 2% (ViT-B/16's attention backward: -1.8%); a
# verdict keeps that share of the allocated peak free, so that `fit` never hands out a batch
# that runs out of memory.
ACCURACY_MARGIN = 0.02


def _estimate_at_peak(events, estimated) -> tuple[int, int]:
    """(the largest estimated allocation, the estimated bytes live when allocated peaks)."""
    if not estimated:
        return 0, 0
    level = peak = live = at_peak = largest = 0
    for serial, delta in events:
        level += delta
        if serial in estimated:
            live += delta
            largest = max(largest, delta)
        if level > peak:
            peak, at_peak = level, live
    return largest, at_peak


def gpu_fit(events, marks, options: Options, *, name_of=lambda owner: owner,
            estimated=frozenset()) -> GpuFit:
    """The GPU section of a report from the replay's `events` (LiveStorages.events) and its
    `marks` (StepRecorder.marks: where each stretch of events ran). The serials in `estimated`
    hold estimated bytes: the verdict keeps ESTIMATE_MARGIN of the one live at the peak free."""
    spec, capacity, source = _capacity(options)
    context, context_range = cuda_context(spec)
    largest, at_peak = _estimate_at_peak(events, estimated)
    unlimited = simulate(events, expandable_segments=options.expandable_segments)
    margin = -(-int(max(at_peak * ESTIMATE_MARGIN,
                        unlimited.peak_allocated_bytes * ACCURACY_MARGIN)) // 512) * 512
    shown, fits, short, released = unlimited, None, None, False
    if capacity is not None:
        if unlimited.peak_reserved_bytes + context + margin <= capacity:
            fits = True
        else:
            bounded = simulate(events, capacity - context - margin,
                               expandable_segments=options.expandable_segments)
            if bounded.oom:
                fits, short = False, bounded.shortfall_bytes
            else:
                fits, released, shown = True, True, bounded
    total = shown.peak_reserved_bytes + context
    step, phase, layer = _moment(marks, shown.peak_reserved_event)
    return GpuFit(
        gpu=spec.name if spec else None, gpu_key=spec.key if spec else None,
        compute_capability=spec.sm if spec else None, note=options.gpu_note,
        capacity_bytes=capacity, capacity_source=source,
        peak_allocated_bytes=shown.peak_allocated_bytes,
        peak_reserved_bytes=shown.peak_reserved_bytes, segments_at_peak=shown.segments_at_peak,
        reserved_peak_step=step + 1, reserved_peak_phase=phase, reserved_peak_layer=name_of(layer),
        expandable_segments=options.expandable_segments,
        cublas_workspace_bytes=spec.cublas_workspace_bytes if spec else None,
        cuda_context_bytes=context, cuda_context_range=context_range,
        device_total_bytes=total,
        headroom_bytes=None if capacity is None else capacity - total - margin,
        fits=fits, short_by_bytes=short, released_cache=released,
        caveats=caveats(spec, options), estimated_bytes=largest,
        estimate_margin_bytes=margin)


def gpu_fit_unsimulated(peak_allocated: int, options: Options) -> GpuFit:
    """Under --world-size/--shard the per-rank timeline is adjusted from one rank's replay and
    is no stream of allocations to simulate: the device total is the per-rank peak allocated
    plus the context, a lower bound of what the rank reserves."""
    spec, capacity, source = _capacity(options)
    context, context_range = cuda_context(spec)
    total = peak_allocated + context
    fits = None if capacity is None else total <= capacity
    return GpuFit(
        gpu=spec.name if spec else None, gpu_key=spec.key if spec else None,
        compute_capability=spec.sm if spec else None, note=options.gpu_note,
        capacity_bytes=capacity, capacity_source=source, peak_allocated_bytes=peak_allocated,
        peak_reserved_bytes=peak_allocated, segments_at_peak=0, reserved_peak_step=0,
        reserved_peak_phase="", reserved_peak_layer="",
        expandable_segments=options.expandable_segments,
        cublas_workspace_bytes=spec.cublas_workspace_bytes if spec else None,
        cuda_context_bytes=context, cuda_context_range=context_range,
        device_total_bytes=total, headroom_bytes=None if capacity is None else capacity - total,
        fits=fits, short_by_bytes=None if fits in (None, True) else total - capacity,
        released_cache=False, reserved_simulated=False, caveats=caveats(spec, options))


def caveats(spec, options: Options) -> tuple[str, ...]:
    """What the card cannot do of the step asked for."""
    out = []
    if spec is not None and not spec.bf16 and "bf16" in (options.dtype, options.amp):
        out.append(f"the {spec.name} ({spec.sm}) has no native bf16 (sm80 and later): its "
                   "bf16 kernels are emulated or missing; fp16 is its half type")
    return tuple(out)


def _moment(marks, consumed: int) -> tuple[int, str, str]:
    """(step, phase, owner) of the event that brought reserved to its peak: the last mark at or
    before it (a mark's `event` is the number of events before its stretch)."""
    if not marks or consumed <= 0:
        return 0, "setup", ""
    i = bisect_right([m.event for m in marks], consumed - 1) - 1
    if i < 0:
        return 0, "setup", ""
    m = marks[i]
    return m.step, m.phase, m.owner

