"""Live tensor storage accounting: the memory a step holds at each moment.

Each storage is counted once however many tensors view it, from the moment an op returns it until
its storage object dies (a `weakref.finalize` on the storage, which PyTorch keeps alive exactly as
long as the underlying allocation). This is the quantity `torch.cuda.memory_allocated` reports on a
GPU, less the allocator's rounding, which `round_to` adds back (512 bytes on CUDA).

Used twice: by the replay on fake tensors (the prediction) and by `verify` on real tensors (the
measurement), so both sides count the same thing.
"""

from __future__ import annotations

import weakref
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._python_dispatch import is_traceable_wrapper_subclass
from torch.utils._pytree import tree_leaves


def storage_bytes(nbytes: int, round_to: int) -> int:
    if round_to <= 1 or nbytes == 0:
        return nbytes
    return -(-nbytes // round_to) * round_to


class LiveStorages:
    """Counts live storages. Each gets a serial number (pointers are reused, serials are not)."""

    def __init__(self, round_to: int = 1, on_peak: Callable[[], None] | None = None,
                 keep_events: bool = True):
        self.round_to = round_to
        self.on_peak = on_peak
        self.keep_events = keep_events
        self._serial_of: dict[int, int] = {}  # storage pointer -> serial, while live
        self._bytes_of: dict[int, int] = {}  # serial -> bytes, while live
        # serial -> the bytes asked for, before rounding to `round_to` (kept after the free):
        # what is affine in the batch where the rounded size is not (graphcalc.fake.lines)
        self.requested: dict[int, int] = {}
        self._keys_of: dict[int, int] = {}  # serial -> how many live storages hold it (aliases)
        self._finalizers: list[weakref.finalize] = []
        self._next = 0
        self.current = 0
        self.peak = 0
        self.peak_event = 0
        # (serial, +bytes | -bytes), in order: the memory timeline.
        self.events: list[tuple[int, int]] = []
        self._settled = 0  # events up to here are in their final order (`mark`)

    def track(self, t: torch.Tensor, nbytes: int | None = None) -> int | None:
        """Start counting t's storage if it is new; returns its serial (None if it has none).
        `nbytes` overrides the storage's size where the real kernel allocates differently."""
        try:
            st = t.untyped_storage()
        except (RuntimeError, NotImplementedError, TypeError):
            return None  # sparse, nested and other storage-less layouts
        key = st._cdata
        serial = self._serial_of.get(key)
        if serial is not None:
            return serial
        serial = self._next
        self._next += 1
        self.requested[serial] = st.nbytes() if nbytes is None else nbytes
        nbytes = storage_bytes(self.requested[serial], self.round_to)
        self._serial_of[key] = serial
        self._bytes_of[serial] = nbytes
        self._keys_of[serial] = 1
        self._finalizers.append(weakref.finalize(st, self._free, key, serial))
        self._change(serial, nbytes)
        return serial

    def transient(self, nbytes: int) -> int:
        """A buffer a kernel allocates and frees while it runs (a cuDNN workspace): counted, then
        freed at once; returns its serial."""
        serial = self._next
        self._next += 1
        self.requested[serial] = nbytes
        nbytes = storage_bytes(nbytes, self.round_to)
        self._change(serial, nbytes)
        self._change(serial, -nbytes)
        return serial

    def alias(self, t: torch.Tensor, like: torch.Tensor) -> None:
        """t's storage holds the same memory as like's: one allocation seen as two storage
        objects (a real tensor written with fake values goes on as its fake conversion, while
        the real one may still be referenced). It is freed when both have died."""
        serial = self.serial(like)
        if serial is None:
            return
        try:
            st = t.untyped_storage()
        except (RuntimeError, NotImplementedError, TypeError):
            return
        key = st._cdata
        if key in self._serial_of:
            return
        self._serial_of[key] = serial
        self._keys_of[serial] += 1
        self._finalizers.append(weakref.finalize(st, self._free, key, serial))

    def mark(self) -> int:
        """The number of events so far, for a point between ops (an op's start and end, a phase
        change): the frees since the last mark, each run of them in serial order. Storages that
        die together (a cache cleared, a container dropped) die in an order no one chose (the
        autocast cache is a hash map by address), and a figure taken between two of them (the
        stacked timeline's, event by event) would differ from one run to the next; the live set
        after the run, and every peak, are the same in any order."""
        events, i, end = self.events, self._settled, len(self.events)
        while i < end:
            if events[i][1] >= 0:
                i += 1
                continue
            j = i + 1
            while j < end and events[j][1] < 0:
                j += 1
            if j - i > 1:
                events[i:j] = sorted(events[i:j])
            i = j
        self._settled = end
        return end

    def _change(self, serial: int, delta: int) -> None:
        """The one place the count moves: an event, and a new peak when it is one."""
        self.current += delta
        if self.keep_events:
            self.events.append((serial, delta))
        if self.current > self.peak:
            self.peak = self.current
            self.peak_event = len(self.events)
            if self.on_peak is not None:
                self.on_peak()

    def serial(self, t: torch.Tensor) -> int | None:
        try:
            return self._serial_of.get(t.untyped_storage()._cdata)
        except (RuntimeError, NotImplementedError, TypeError):
            return None

    def _free(self, key: int, serial: int) -> None:
        if self._serial_of.get(key) != serial:
            return
        del self._serial_of[key]
        self._keys_of[serial] -= 1
        if self._keys_of[serial] == 0:
            del self._keys_of[serial]
            self._change(serial, -self._bytes_of.pop(serial))

    def resized(self, t: torch.Tensor) -> None:
        """t's storage was resized in place (FSDP frees and re-allocates its unsharded parameters
        with `storage.resize_`, which no op reports): count its new size."""
        serial = self.serial(t)
        if serial is None:
            self.track(t)
            return
        nbytes = storage_bytes(t.untyped_storage().nbytes(), self.round_to)
        delta = nbytes - self._bytes_of[serial]
        if delta == 0:
            return
        self._bytes_of[serial] = nbytes
        self._change(serial, delta)

    def reset_peak(self) -> None:
        self.peak = self.current
        self.peak_event = len(self.events)

    def close(self) -> None:
        """Stop watching: storages still alive no longer call back into this object."""
        for f in self._finalizers:
            f.detach()
        self._finalizers.clear()


def plain_tensors(t: torch.Tensor):
    """The tensors that hold t's memory: t itself, or the inner tensors of a wrapper subclass
    (a DTensor's local shard), whose own storage is a placeholder of the global size."""
    if is_traceable_wrapper_subclass(t):
        attrs, _ = t.__tensor_flatten__()
        for a in attrs:
            inner = getattr(t, a)
            if isinstance(inner, torch.Tensor):
                yield from plain_tensors(inner)
    else:
        yield t


class LiveCounter(TorchDispatchMode):
    """Counts every storage an op returns into `tracker`, and nothing else."""

    def __init__(self, tracker: LiveStorages):
        super().__init__()
        self.tracker = tracker

    def run(self, func, args, kwargs):
        return func(*args, **kwargs)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = self.run(func, args, kwargs or {})
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                for p in plain_tensors(t):
                    self.tracker.track(p)
        return out
