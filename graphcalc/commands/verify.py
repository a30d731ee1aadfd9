"""`graphcalc verify`: predicted against measured on a real step, and `graphcalc fit`: the largest
batch whose predicted peak fits a memory budget."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from typing import Callable

import torch

from graphcalc.sources import loader
from graphcalc.commands.analyze import analyze_module
from graphcalc.errors import GraphcalcError, ShapeError, UsageError
from graphcalc.commands.measure import Measured, count_step_flops, measure_step
from graphcalc.routing import ForcedRouting
from graphcalc.options import MAX_BATCH, Options
from graphcalc.report import Report


@dataclass(frozen=True)
class Check:
    figure: str
    predicted: float | None
    measured: float | None
    unit: str  # "B", "", "FLOP", "s"
    judged: bool = True  # False: shown beside the measurement, not held to --tolerance

    @property
    def error_percent(self) -> float | None:
        if self.predicted is None or self.measured is None or self.measured == 0:
            return None
        return 100.0 * (self.predicted - self.measured) / self.measured


@dataclass(frozen=True)
class Verification:
    report: Report
    measured: Measured
    checks: tuple[Check, ...]
    tolerance_percent: float

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.judged and c.error_percent is not None
                     and abs(c.error_percent) > self.tolerance_percent)


def verify(source: loader.ModelSource, options: Options, make_inputs, *,
           tolerance_percent: float = 5.0,
           on_step: Callable[[int], None] | None = None) -> Verification:
    if options.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available here (use --device cpu)")
    if options.device == "cuda":
        options = on_this_gpu(options)
    report = analyze_module(loader.build_model(source, device="meta"), make_inputs, options,
                            loss_fn=source.loss, name=source.name)
    # A model with mixture-of-experts routers runs its real steps routed as the prediction
    # assumed (graphcalc.routing), so that the two are the same step.
    routed = (lambda: ForcedRouting(options.routing)) if report.routers else contextlib.nullcontext
    torch.manual_seed(0)
    measured = measure_step(loader.build_model(source, device=None), make_inputs, options,
                            loss_fn=source.loss, on_step=on_step, routing=routed)
    flop_model = loader.build_model(source, device=None).to(options.device)
    if options.dtype != "fp32":
        flop_model = flop_model.to(options.torch_dtype)
    from graphcalc.fake.step import example_batch, prepare_inputs

    inputs = prepare_inputs(example_batch(make_inputs, options.batch), options, options.device)
    flop_model.train()
    with routed():
        forward, backward, recomputed = count_step_flops(flop_model, inputs, source.loss,
                                                         checkpoint=options.checkpoint)
    checks = (
        Check("peak memory", report.memory.peak_bytes, measured.peak_bytes, "B"),
        Check("parameters", report.totals.params, measured.params, ""),
        Check("FLOPs forward", report.totals.flops_forward, forward, "FLOP"),
        Check("FLOPs backward", report.totals.flops_backward, backward, "FLOP"),
    )
    if report.totals.flops_recompute or recomputed:
        checks += (Check("FLOPs recomputed (in backward)", report.totals.flops_recompute,
                         recomputed, "FLOP"),)
    checks += (Check("step time", None, measured.step_seconds, "s"),)
    if measured.reserved_bytes is not None:
        # predicted by the simulated caching allocator (graphcalc.gpu.allocator) over the replay;
        # shown, not yet held to the tolerance: no GPU has measured it here
        predicted = report.gpu.peak_reserved_bytes if report.gpu is not None else None
        checks += (Check("CUDA reserved", predicted, measured.reserved_bytes, "B",
                         judged=False),)
    return Verification(report, measured, checks, tolerance_percent)


def on_this_gpu(options: Options, device: int = 0) -> Options:
    """The options of a prediction for the GPU the real steps run on: its table entry when
    graphcalc knows its name (`torch.cuda.get_device_name`), else its memory and compute
    capability as the device reports them. A card the options name already is kept."""
    if options.gpu is not None or options.gpu_memory is not None:
        return options
    from graphcalc.errors import GraphcalcError
    from graphcalc.gpu.gpus import find_gpu

    name = torch.cuda.get_device_name(device)
    try:
        found = find_gpu(name)
    except GraphcalcError:
        props = torch.cuda.get_device_properties(device)
        return replace(options, gpu_memory=int(props.total_memory),
                       gpu_capability=tuple(torch.cuda.get_device_capability(device)),
                       gpu_note=f"the GPU this runs on, {name} (not in graphcalc's table: its "
                                "memory and compute capability as the device reports them)")
    return replace(options, gpu=found.gpu.key, gpu_note=f"the GPU this runs on, {name}")


@dataclass(frozen=True)
class Fit:
    memory_bytes: int
    batch: int  # the largest batch whose predicted peak fits; 0 when not even batch 1 does
    peak_bytes: int
    recommended_batch: int  # 80% of it, as the seed tutorials advise
    recommended_peak_bytes: int
    evaluations: int
    points: tuple[tuple[int, int], ...] = ()  # (batch, predicted peak) of every batch analysed
    # the smallest batch the model trains at (2 with a BatchNorm over one value per channel),
    # where batch 1 was analysed: the search from the lines looks at it only where the answer
    # is 2 or below (else 1, not looked at)
    smallest_batch: int = 1
    note: str = ""  # why batch 1 is not the smallest batch, where it was looked at
    # True: found from three analyses, the peak being convex in the batch (`_affine`); False:
    # the secant search went on (a peak that is not: the caching allocator's segments)
    affine: bool = False


# The batches whose replays give the lines: above 1, which may run other kernels than every
# larger batch (on CUDA a linear layer at batch 1 takes no cuBLASLt workspace) or not train at all
# (a BatchNorm over one value per channel); batch 1 is analysed only where it could be the answer
# or the recommendation.
LINES = (2, 64)


def fit(peak_at: Callable[[int], int], memory_bytes: int,
        levels: dict[int, list[int]] | None = None, lines=None) -> Fit:
    """Largest batch with peak_at(batch) <= memory_bytes: from three analyses where they prove
    it (`_affine`: batches 2 and 64, then the answer), else by a secant search on the bracket
    that reuses them, from batch 1. `lines`: a `DeviceLines` for a GPU's device total, read off
    the replays' lines; `levels`: the live levels of the replays, for a peak."""
    if memory_bytes <= 0:
        raise UsageError(f"memory budget must be positive, got {memory_bytes}")
    seen: dict[int, int] = {}

    def peak(b: int) -> int:
        if b not in seen:
            seen[b] = peak_at(b)
        return seen[b]

    reader = lines.reader if lines is not None else \
        None if levels is None else _levels_reader(levels)
    found = None
    if reader is not None:
        try:
            found = _affine(peak, memory_bytes, reader,
                            lines.holds if lines is not None else lambda batch: True)
        except GraphcalcError:  # said again from batch 1, where the search starts
            found = None
    affine = found is not None
    floor, note = 1, ""
    if found is None or found.recommended_batch < LINES[0]:
        try:
            peak(1)
        except ShapeError as e:
            # A model that cannot train on one sample ("Expected more than 1 value per channel
            # when training") starts at 2; one that fails there too fails as it did at 1.
            try:
                peak(2)
            except GraphcalcError:
                raise e from None
            floor, note = 2, f"batch 1 cannot train ({e}): the smallest batch is 2"
        if found is None:
            found = _search(peak, memory_bytes, floor, seen)
        else:
            recommended = max(floor, found.recommended_batch)
            found = replace(found, recommended_batch=recommended,
                            recommended_peak_bytes=peak(recommended))
    return replace(found, evaluations=len(seen), points=tuple(sorted(seen.items())),
                   smallest_batch=floor, note=note, affine=affine)


def _levels_reader(levels: dict[int, list[int]]):
    """The predicted peak at any batch from the live levels of the replays at lo and hi (each
    level a line through them), or None where they are no lines."""

    def read(lo_batch: int, hi_batch: int) -> Callable[[int], int] | None:
        a, b = levels.get(lo_batch), levels.get(hi_batch)
        if a is None or b is None or len(a) != len(b):
            return None
        lo = torch.tensor(a, dtype=torch.int64)
        rise = torch.tensor(b, dtype=torch.int64) - lo
        if bool((rise % (hi_batch - lo_batch) != 0).any()):
            return None  # not a whole number of bytes a sample: not affine
        slope = rise // (hi_batch - lo_batch)
        return lambda x: int((lo + slope * (x - lo_batch)).max())

    return read


class DeviceLines:
    """A GPU's device total at any batch without a replay: the replay at that batch read off
    the lines of two (graphcalc.fake.lines), through the simulated caching allocator. The
    third replay, at the batch found, must lie on the lines (`holds`): three points of a line
    rule out every size of degree two or less in the batch, so the events, and the allocator's
    answer on them, are the step's at every batch."""

    def __init__(self, required: Callable[[object], int]):
        self.replays: dict[int, object] = {}  # batch -> its replay (fit_source keeps them)
        self.required = required  # a replay -> what the card must hold for it
        self.lines = None

    def reader(self, lo: int, hi: int) -> Callable[[int], int] | None:
        from graphcalc.fake.lines import Lines

        if lo not in self.replays or hi not in self.replays:
            return None
        self.lines = Lines.through(self.replays[lo], lo, self.replays[hi], hi)
        if self.lines is None:
            return None
        cache: dict[int, int] = {}

        def predicted(x: int) -> int:
            if x not in cache:
                cache[x] = self.required(self.lines.at(x))
            return cache[x]

        return predicted

    def holds(self, batch: int) -> bool:
        rp = self.replays.get(batch)
        return self.lines is not None and rp is not None and self.lines.holds(rp, batch)


def _affine(peak: Callable[[int], int], memory_bytes: int, reader,
            holds: Callable[[int], bool] = lambda batch: True) -> Fit | None:
    """The answer in three analyses where the step is affine in the batch. Two replays (at
    batches 2 and 64, `LINES`) give every live-byte level of the step as a line in the batch
    (each allocation a size affine in it, the same ops in the same order); their highest is
    the predicted peak at any batch, and the largest batch B whose predicted peak fits is then
    analysed (the third replay). When its peak is the one the lines predicted (and, for a GPU's
    device total, `holds(B)`: B's replay lies on the lines), B is the answer and the
    recommended batch's peak is read off the lines (below 2 the caller analyses it); when not
    (a step that is not affine in the batch), the two replays' steps differ, or batch 2 does
    not fit, None: the search goes on from batch 1. `reader(lo, hi)`: the predicted peak at any
    batch from the analyses at lo and hi, or None."""
    lo, hi = LINES
    if peak(lo) > memory_bytes:
        return None
    peak(hi)
    predicted = reader(lo, hi)
    if predicted is None or predicted(lo) != peak(lo) or predicted(hi) != peak(hi):
        return None
    if predicted(MAX_BATCH) <= memory_bytes:
        batch = MAX_BATCH
    else:
        good, bad = lo, MAX_BATCH  # predicted(good) fits, predicted(bad) does not
        while bad - good > 1:
            mid = (good + bad) // 2
            good, bad = (mid, bad) if predicted(mid) <= memory_bytes else (good, mid)
        batch = good
    pb = peak(batch)
    if pb != predicted(batch) or pb > memory_bytes or not holds(batch):
        return None
    recommended = max(1, int(batch * 0.8))
    return Fit(memory_bytes, batch, pb, recommended,
               predicted(recommended) if recommended >= lo else 0, 0)


def _search(peak: Callable[[int], int], memory_bytes: int, floor: int = 1,
            seen: dict[int, int] | None = None) -> Fit:
    if peak(floor) > memory_bytes:
        return Fit(memory_bytes, 0, peak(floor), 0, 0, 0)
    lo, hi = floor, None
    for b, p in (seen or {}).items():  # what was analysed already brackets the answer
        if b >= floor and p <= memory_bytes:
            lo = max(lo, b)
        elif b >= floor:
            hi = b if hi is None else min(hi, b)
    if hi is not None and hi <= lo:
        hi = None
    probe = lo + 1
    while hi is None:
        if peak(probe) > memory_bytes:
            hi = probe
            break
        lo = probe
        slope = (peak(lo) - peak(floor)) / (lo - floor) if lo > floor else 0
        guess = int(floor + (memory_bytes - peak(floor)) / slope) if slope > 0 else lo * 64
        probe = min(max(guess + 1, lo * 2 if guess <= lo else guess + 1), MAX_BATCH)
        if probe <= lo:
            return Fit(memory_bytes, lo, peak(lo), *_recommend(peak, lo, floor), 0)
    while hi - lo > 1:
        slope = (peak(hi) - peak(lo)) / (hi - lo)
        guess = lo + int((memory_bytes - peak(lo)) / slope) if slope > 0 else (lo + hi) // 2
        probe = min(max(guess, lo + 1), hi - 1)
        if peak(probe) <= memory_bytes:
            lo = probe
            if probe + 1 < hi and peak(probe + 1) > memory_bytes:
                hi = probe + 1
        else:
            hi = probe
    return Fit(memory_bytes, lo, peak(lo), *_recommend(peak, lo, floor), 0)


def _recommend(peak, batch: int, floor: int = 1) -> tuple[int, int]:
    b = max(floor, int(batch * 0.8))
    return b, peak(b)


def fit_source(source: loader.ModelSource, make_inputs, options: Options, memory_bytes: int,
               on_analysis: Callable[[int, int], None] | None = None) -> Fit:
    """With a GPU (options.gpu or options.gpu_memory) the figure searched is what the card must
    hold, GpuFit.required_bytes (reserved + CUDA context), else the predicted peak."""
    model = loader.build_model(source, device="meta")
    on_gpu = options.gpu is not None or options.gpu_memory is not None
    levels, lines, keep = line_readers(options)
    count = 0

    def peak_at(batch: int) -> int:
        nonlocal count
        count += 1
        if on_analysis is not None:
            on_analysis(count, batch)  # which analysis, at which batch (the CLI's progress)
        kept = []
        report = analyze_module(model, make_inputs, replace(options, batch=batch),
                                loss_fn=source.loss,
                                on_replay=kept.append if levels is not None or lines else None)
        if kept:
            keep(batch, kept[-1])
        return report.gpu.required_bytes if on_gpu else report.memory.peak_bytes

    return fit(peak_at, memory_bytes, levels, lines)


def line_readers(options: Options):
    """What `fit` reads its lines off for a step with `options`: (the live levels of each
    replay, for a peak; a `DeviceLines` of the replays themselves, for a GPU's device total,
    whose allocator segments are no line but whose storages are; a function keeping the replay
    at a batch for them). Neither per rank."""
    on_gpu = options.gpu is not None or options.gpu_memory is not None
    levels: dict[int, list[int]] | None = None if on_gpu or options.distributed else {}
    lines = DeviceLines(lambda rp: _device_required(rp, options)) \
        if on_gpu and not options.distributed else None

    def keep(batch: int, rp) -> None:
        if levels is not None:
            levels[batch] = live_levels(rp.step_graph)
        if lines is not None:
            lines.replays[batch] = rp

    return levels, lines, keep


def _device_required(rp, options: Options) -> int:
    """What the card must hold for a replay's step: the report's GpuFit.required_bytes."""
    from graphcalc.commands.analyze import _gpu

    return _gpu(rp, options, None).required_bytes


def live_levels(sg) -> list[int]:
    """The live bytes of a replayed step after each of its events (the report's peak is the
    highest)."""
    from graphcalc.passes.graphpasses import memory_events, start_level

    level = start_level(sg)
    out = [level]
    for *_, delta in memory_events(sg):
        level += delta
        out.append(level)
    return out


def verify_distributed(spec: str, source: loader.ModelSource, options: Options, make_inputs, *,
                       inputs: list[str] | None = None,
                       tolerance_percent: float = 5.0, hf=None) -> Verification:
    """`verify --world-size N --shard ddp|fsdp`: start N ranks on this machine (gloo, CPU), run
    the real steps wrapped as the strategy says and check the per-rank peak of each rank."""
    from graphcalc.commands.measure_distributed import measure_distributed

    if options.device != "cpu":
        raise UsageError("verify --world-size runs its ranks on the CPU (gloo): use --device cpu")
    if options.shard not in ("ddp", "fsdp"):
        raise UsageError(f"verify --shard {options.shard}: only ddp and fsdp have a real engine "
                         "here to check against")
    report = analyze_module(loader.build_model(source, device="meta"), make_inputs, options,
                            loss_fn=source.loss, name=source.name)
    ranks = measure_distributed(spec, options, inputs=inputs, hf=hf)
    checks = tuple(Check(f"peak memory, rank {m.rank}", report.memory.peak_bytes, m.peak_bytes, "B")
                   for m in ranks)
    checks += (Check("step time, rank 0", None, ranks[0].step_seconds, "s"),)
    measured = Measured(max(m.peak_bytes for m in ranks), ranks[0].step_peaks,
                        report.totals.params, ranks[0].step_seconds)
    return Verification(report, measured, checks, tolerance_percent)
