"""The memory timeline of the replayed steps as a stack: live bytes by category, event by event.

The replay's tracker logs every storage it counts as an event (serial, +bytes or -bytes), in order
(`tracking.LiveStorages.events`); `Replay.categories()` says where each storage's memory goes. The
stack after `x` events is the running sum of those deltas per category, so its six figures sum to
the tracker's live bytes there, exactly. A small step keeps every event; a big one keeps, from each
of `MAX_POINTS / 2` equal stretches, its lowest and its highest event (the curve's envelope at
any width a picture has), and always the event of the peak.

The x axis is the event count: the steps' allocations and frees in order, not time.
"""

from __future__ import annotations

import bisect
from collections import Counter
from typing import Callable, Iterable

from graphcalc.options import Options
from graphcalc.fake.replay import OPTIMIZER, Replay
from graphcalc.report import (ROOT, STACK_CATEGORIES, Breakdown, Memory, PhaseSpan, StackPoint,
                     TimelinePoint)

MAX_POINTS = 800
PHASES = ("forward", "loss", "backward", "optimizer", "end")


def chosen_events(levels: list[int], start: int, end: int, peak_x: int,
                  max_points: int = MAX_POINTS) -> list[int]:
    """The x (events applied) to keep in [start, end], where the level at x is levels[x - 1]."""
    if end - start + 1 <= max_points:
        return list(range(start, end + 1))
    buckets = max(1, max_points // 2)
    size = -(-(end - start + 1) // buckets)
    keep = {start, end}
    if start <= peak_x <= end:
        keep.add(peak_x)
    for b0 in range(max(start, 1), end + 1, size):
        seg = levels[b0 - 1:min(b0 + size, end + 1) - 1]
        keep.add(b0 + seg.index(max(seg)))
        keep.add(b0 + seg.index(min(seg)))
    return sorted(keep)


def _name(owner: str) -> str:
    return ROOT if owner == "" else owner


class Where:
    """The (step, phase, layer) of the event just applied at x, from the replay's marks."""

    def __init__(self, marks):
        self.marks = [m for m in marks if m.phase in PHASES]
        self.events = [m.event for m in self.marks]

    def at(self, x: int) -> tuple[int, str, str]:
        i = bisect.bisect_right(self.events, x - 1) - 1
        if i < 0:
            return 1, "setup", "[setup]"
        m = self.marks[i]
        return m.step + 1, m.phase, _name(m.owner)

    def spans(self, start: int, end: int) -> tuple[PhaseSpan, ...]:
        """Consecutive stretches of one (step, phase) inside events [start, end)."""
        out: list[PhaseSpan] = []
        for i, m in enumerate(self.marks):
            a = max(m.event, start)
            b = min(self.marks[i + 1].event if i + 1 < len(self.marks) else end, end)
            if b <= a:
                continue
            if out and (out[-1].step, out[-1].phase) == (m.step + 1, m.phase) and out[-1].end == a:
                out[-1] = PhaseSpan(m.step + 1, m.phase, out[-1].start, b)
            else:
                out.append(PhaseSpan(m.step + 1, m.phase, a, b))
        return tuple(out)


def stack(changes: Iterable[tuple[int, str, int]], keep: list[int],
          where: Callable[[int], tuple[int, str, str]],
          override: dict[int, Counter] | None = None) -> tuple[StackPoint, ...]:
    """StackPoints at the x of `keep` from `changes` (x, category, delta): a change with x is
    applied before the point at x is taken. `override` gives a point's figures outright (the
    distributed timeline's peak between two events)."""
    wanted = iter(keep)
    nxt = next(wanted, None)
    by_cat: Counter = Counter()
    out = []

    def point(x: int, counts) -> StackPoint:
        step, phase, layer = where(x)
        return StackPoint(x, step, phase, layer, *(int(counts[c]) for c in STACK_CATEGORIES))

    for x, cat, delta in changes:
        while nxt is not None and nxt < x:
            out.append(point(nxt, (override or {}).get(nxt, by_cat)))
            nxt = next(wanted, None)
        by_cat[cat] += delta
    while nxt is not None:
        out.append(point(nxt, (override or {}).get(nxt, by_cat)))
        nxt = next(wanted, None)
    return tuple(out)


def replay_stack(rp, levels: list[int], peak_x: int) -> tuple[tuple[StackPoint, ...],
                                                              tuple[PhaseSpan, ...]]:
    """The stacked timeline of a replay's steps, from the start of the first to the end of the
    last; `levels[i]` the live bytes after event i, `peak_x` the events applied at the peak."""
    events = rp.recorder.tracker.events
    categories = rp.categories()
    start, end = rp.step_events[0], rp.step_events[-1]
    keep = chosen_events(levels, start, end, peak_x, MAX_POINTS)
    where = Where(rp.recorder.marks)
    changes = ((i + 1, categories.get(serial, "activations"), delta)
               for i, (serial, delta) in enumerate(events[:end]))
    return stack(changes, keep, where.at), where.spans(start, end)


def step_timeline(rp: Replay, levels: list[int]) -> tuple[list[int], list[TimelinePoint]]:
    """The peak of each step, and a timeline: the highest point of each (step, phase, layer)
    stretch. `levels[i]` is the live bytes after event i (the replay's own, or one adjusted
    per rank by graphcalc.ranks.distributed)."""

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
    """The report's Memory from the replay's live-storage events."""
    rec = rp.recorder
    events = rec.tracker.events
    categories = rp.categories()
    sums = Counter()
    for serial, delta in events[: rec.tracker.peak_event]:
        sums[categories.get(serial, "activations")] += delta
    breakdown = Breakdown.of(sums)
    running, level = [], 0
    for _, delta in events:
        level += delta
        running.append(level)
    step_peaks, timeline = step_timeline(rp, running)
    points, phases = replay_stack(rp, running, rec.tracker.peak_event)
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
        timeline=tuple(timeline), timeline_stack=points, timeline_phases=phases,
        **kernels(rp, options))


def kernels(rp: Replay, options: Options) -> dict:
    """What the step ran on, for the report's Memory: the attention kernels it chose and, on a
    CUDA step, the GPU generation it modelled."""
    return {"attention_kernels": tuple(sorted(getattr(rp.recorder, "sdpa_backends", {}))),
            "cuda_target": options.cuda_target.name if options.device == "cuda" else ""}
