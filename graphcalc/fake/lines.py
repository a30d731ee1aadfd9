"""The replay of a step at another batch, read off replays at three batches.

Where the step runs the same ops in the same order at every batch and each storage asks for a
number of bytes affine in the batch (a batch dimension in its shape, the rest fixed), every
event of the replay at batch x is known from two replays: the bytes asked for are the line
through them, rounded as the tracker rounds (the CUDA caching allocator's 512-byte blocks). A
third replay between them confirms it: each storage's bytes must lie on the line there too. A
size quadratic in the batch (a batch-by-batch similarity matrix) cannot pass through three
points of a line, so three exact points rule out every size of degree two or less, which is
every shape whose batch-dependent dimensions are at most two.

`plan` (graphcalc.ranks.distributed) uses it to size its per-rank batches from three replays
instead of one each. What is read off the lines: the live-storage events, each live storage's
bytes and where the peak falls; what is not (a maximum is no line): the inference forward's
peak, which the replay read off has as None.
"""

from __future__ import annotations

import copy
from dataclasses import replace

from graphcalc.fake.replay import Replay
from graphcalc.fake.tracking import storage_bytes


def _shape(rp: Replay):
    """What must be the same at every batch for the lines to hold: the events' serials and
    signs, the phase marks, step boundaries, storage roles and the kernels chosen."""
    rec = rp.recorder
    return ([(s, d > 0) for s, d in rec.tracker.events], rec.marks, rp.step_events,
            rp.categories(), rp.param_of_serial, rp.grad_serials, rp.state_serials,
            rp.param_serials, rp.batch_serials, rp.state_bytes, sorted(rec.tracker._bytes_of),
            getattr(rec, "sdpa_backends", None), list(rp.fake_params), sorted(rec.estimated))


def _sized_by_request(rp: Replay) -> bool:
    """Every event is its storage's request, rounded (no resize, no size override later)."""
    t = rp.recorder.tracker
    return all(abs(d) == storage_bytes(t.requested.get(s, -1), t.round_to) for s, d in t.events)


class Lines:
    """Each storage's requested bytes as a line in the batch, from replays at `lo` < `mid` <
    `hi`; `Lines.of` gives None where they do not hold."""

    def __init__(self, base: Replay, lo: int, start: dict[int, int], slope: dict[int, int]):
        self.base, self.lo, self.start, self.slope = base, lo, start, slope

    @classmethod
    def of(cls, replays: dict[int, Replay]) -> "Lines | None":
        """The lines through the smallest and largest batch of `replays`, held by the one
        between (three replays); None where they do not hold."""
        lo, mid, hi = sorted(replays)[0], sorted(replays)[len(replays) // 2], max(replays)
        if not lo < mid < hi:
            return None
        found = cls.through(replays[lo], lo, replays[hi], hi)
        return found if found is not None and found.holds(replays[mid], mid) else None

    @classmethod
    def through(cls, a: Replay, lo: int, b: Replay, hi: int) -> "Lines | None":
        """The lines through two replays (batch lo < hi) of the same step; None where the two
        steps differ or a storage's bytes grow by no whole number per sample. Two points make a
        line of anything: `holds` on a third is the proof."""
        if not (lo < hi and _shape(a) == _shape(b) and _sized_by_request(a)
                and _sized_by_request(b)):
            return None
        ra, rb = a.recorder.tracker.requested, b.recorder.tracker.requested
        if ra.keys() != rb.keys():
            return None
        start, slope = {}, {}
        for s, x in ra.items():
            rise = rb[s] - x
            if rise % (hi - lo):
                return None  # not a whole number of bytes per sample
            start[s], slope[s] = x, rise // (hi - lo)
        return cls(a, lo, start, slope)

    def holds(self, rp: Replay, batch: int) -> bool:
        """Whether a replay at a third batch is the same step with every storage on its line."""
        if _shape(rp) != _shape(self.base) or not _sized_by_request(rp):
            return False
        got = rp.recorder.tracker.requested
        return got.keys() == self.start.keys() and all(
            got[s] == x + self.slope[s] * (batch - self.lo) for s, x in self.start.items())

    def at(self, batch: int) -> Replay:
        """The replay at `batch`: its events, live bytes and peak from the lines."""
        rec, t = self.base.recorder, self.base.recorder.tracker
        sizes = {s: storage_bytes(self.start[s] + self.slope[s] * (batch - self.lo), t.round_to)
                 for s in self.start}
        events = [(s, sizes[s] if d > 0 else -sizes[s]) for s, d in t.events]
        level = peak = peak_event = 0
        for i, (_, d) in enumerate(events):
            level += d
            if level > peak:
                peak, peak_event = level, i + 1
        tracker = copy.copy(t)
        tracker.events, tracker.current, tracker.peak, tracker.peak_event = (
            events, level, peak, peak_event)
        tracker._bytes_of = {s: sizes[s] for s in t._bytes_of}
        tracker.requested = {s: self.start[s] + self.slope[s] * (batch - self.lo)
                             for s in self.start}
        recorder = copy.copy(rec)
        recorder.tracker = tracker
        recorder.peak_where = _where(rec.marks, peak_event)
        return replace(self.base, recorder=recorder, inference_peak=None, step_graph=None,
                       inference_error="read off the lines of three replays (a maximum is "
                                       "no line): not analysed")


def _where(marks, peak_event: int) -> tuple[int, str, str]:
    """(step, phase, owner) of the mark in force when event `peak_event` happened."""
    where = (0, "setup", "")
    for m in marks:
        if m.event < peak_event:
            where = (m.step, m.phase, m.owner)
        else:
            break
    return where
