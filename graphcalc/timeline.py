"""The memory of the step over time: each step's peak, the timeline of (step, phase, layer)
stretches, and the report's Memory, from the replay's live-storage events.

Its own module so that `analyze` (one device) and `distributed` (per rank, with adjusted levels)
both read it without importing each other.
"""

from __future__ import annotations

from collections import Counter

from .options import Options
from .replay import OPTIMIZER, Replay
from .report import ROOT, Breakdown, Memory, TimelinePoint


def _name(path: str) -> str:
    return ROOT if path == "" else path


def step_timeline(rp: Replay, levels: list[int]) -> tuple[list[int], list[TimelinePoint]]:
    """The peak of each step, and a timeline: the highest point of each (step, phase, layer)
    stretch. `levels[i]` is the live bytes after event i (the replay's own, or one adjusted
    per rank by graphcalc.distributed)."""

    def peak_between(a: int, b: int) -> int:
        if b <= a:
            return levels[a - 1] if a > 0 else 0
        return max(levels[a:b])

    starts = rp.step_events
    step_peaks = [peak_between(starts[i], starts[i + 1]) for i in range(len(starts) - 1)]
    marks = [m for m in rp.recorder.marks
             if m.phase in ("forward", "loss", "backward", "optimizer", "end")]
    timeline = []
    for i, m in enumerate(marks):
        end = marks[i + 1].event if i + 1 < len(marks) else starts[-1]
        if m.phase == "end" or m.event > starts[-1]:
            continue
        timeline.append(TimelinePoint(m.step + 1, m.phase, _name(m.owner),
                                      peak_between(m.event, max(end, m.event))))
    return step_peaks, timeline


def step_memory(rp: Replay, options: Options) -> Memory:
    """The report's memory figures from the replay's live-storage events: the peak, its
    breakdown at the peak, where it falls, each step's peak and the timeline."""
    rec = rp.recorder
    events = rec.tracker.events
    categories = rp.categories()
    sums = Counter()
    for serial, delta in events[: rec.tracker.peak_event]:
        sums[categories.get(serial, "activations")] += delta
    breakdown = Breakdown(parameters=sums["parameters"], gradients=sums["gradients"],
                          optimizer_state=sums["optimizer_state"] + sums["optimizer_temporaries"],
                          batch=sums["batch"], activations=sums["activations"],
                          workspace=sums["workspace"])
    running, level = [], 0
    for _, delta in events:
        level += delta
        running.append(level)
    step_peaks, timeline = step_timeline(rp, running)
    step, phase, owner = rec.peak_where or (0, "setup", "")
    return Memory(
        device=options.device, peak_bytes=rec.tracker.peak,
        inference_peak_bytes=rp.inference_peak, breakdown=breakdown,
        first_step_peak_bytes=step_peaks[0] if step_peaks else 0,
        steady_step_peak_bytes=step_peaks[-1] if step_peaks else 0,
        peak_step=step + 1, peak_phase=phase,
        peak_layer=_name(owner) if owner != OPTIMIZER else OPTIMIZER,
        optimizer_state_bytes=rp.state_bytes,
        optimizer_temporary_bytes=sums["optimizer_temporaries"],
        timeline=tuple(timeline),
        attention_kernels=tuple(sorted(getattr(rec, "sdpa_backends", {}))),
        cuda_target=options.cuda_target.name if options.device == "cuda" else "")
