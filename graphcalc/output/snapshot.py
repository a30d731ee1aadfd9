"""The predicted step as a PyTorch memory snapshot, for PyTorch's own memory viewer.

`torch.cuda.memory._dump_snapshot` pickles a dict with `segments` (the allocator's state when the
snapshot is taken) and `device_traces` (per device, every allocator event recorded: alloc,
free_requested, free_completed, segment_alloc, segment_free, ...; each with addr, size, stream and
frames [{filename, line, name}], and a category where the profiler knows one). pytorch.org/
memory_viz and `python -m torch.cuda._memory_viz trace_plot` draw such a file.

Here the trace is the replay's own events (`tracking.LiveStorages.events`) from the parameters'
creation to the end of the last step, each storage one block: its bytes as the replay counts them
(512-byte blocks for cuda), its category in the names of PyTorch's memory profiler
(`torch.profiler._memory_profiler.Category`: parameter, gradient, optimizer_state, input,
activation, temporary), and as its one frame the layer that allocated it, the phase and the step.
The snapshot is taken after the last step: the segments hold what is live then (parameters,
optimizer state...). The caching allocator is not modelled: each block has a segment of its own
(reserved = allocated), at an address no other block ever takes.

PyTorch's viewer colours the blocks by category and, in the versions read (MemoryViz.js,
`annotate_snapshot`), fails on a trace whose categories leave out 'unknown' (it pushes it onto a
misspelt list): the closing `snapshot` entry carries it.
"""

from __future__ import annotations

import pickle

from graphcalc.passes.timeline import Where

# graphcalc's categories -> torch.profiler._memory_profiler.Category names, lowercased as
# torch.cuda._memory_viz._profile_to_snapshot writes them
CATEGORY = {"parameters": "parameter", "gradients": "gradient",
            "optimizer_state": "optimizer_state", "optimizer_temporaries": "temporary",
            "batch": "input", "activations": "activation", "workspace": "temporary"}
BASE_ADDRESS = 0x7F0000000000
ALIGN = 512
SMALL = 1 << 20  # the allocator's small-block limit: segment_type "small" up to 1 MiB


def snapshot(rp) -> dict:
    """The snapshot dict of a replay (graphcalc.fake.replay.Replay): events up to the last step's end."""
    events = rp.recorder.tracker.events[:rp.step_events[-1]]
    categories = rp.categories()
    where = Where(rp.recorder.marks)
    tracker = rp.recorder.tracker
    # What a storage is for, where the layer running says too little: the parameter or buffer
    # itself (made before the step), or the parameter a gradient or a state tensor is for.
    what: dict[int, str] = {}
    for name, f in rp.fake_params.items():
        serial = tracker.serial(f)
        if serial is not None:
            what.setdefault(serial, name)
    for serial in rp.batch_serials:
        what[serial] = "[batch]"
    for serial, name in rp.param_of_serial.items():
        what.setdefault(serial, f"for {name}")
    trace: list[dict] = []
    live: dict[int, dict] = {}  # serial -> its alloc entry
    next_addr = BASE_ADDRESS
    for i, (serial, delta) in enumerate(events):
        if delta > 0:
            step, phase, layer = where.at(i + 1)
            cat = CATEGORY.get(categories.get(serial, "activations"), "activation")
            frames = [{"filename": layer, "line": 0, "name": f"{phase} of step {step}"}]
            if serial in what:
                if phase == "setup":
                    frames = [{"filename": what[serial], "line": 0, "name": "before the step"}]
                else:
                    frames.insert(0, {"filename": what[serial], "line": 0, "name": cat})
            entry = {"action": "alloc", "addr": next_addr, "size": delta, "stream": 0,
                     "frames": frames, "category": cat}
            next_addr += -(-delta // ALIGN) * ALIGN
            trace.append(dict(entry, action="segment_alloc"))
            trace.append(entry)
            live[serial] = entry
        elif delta < 0:
            entry = live.pop(serial, None)
            if entry is None:  # a storage counted before the trace began (none today)
                continue
            for action in ("free_requested", "free_completed", "segment_free"):
                trace.append(dict(entry, action=action))
    trace.append({"action": "snapshot", "addr": 0, "size": 0, "stream": 0, "frames": [],
                  "category": "unknown"})
    segments = []
    for entry in sorted(live.values(), key=lambda e: e["addr"]):
        size = entry["size"]
        segments.append({
            "device": 0, "address": entry["addr"], "total_size": size, "allocated_size": size,
            "active_size": size, "requested_size": size, "stream": 0,
            "segment_type": "small" if size <= SMALL else "large",
            "blocks": [{"size": size, "requested_size": size, "state": "active_allocated",
                        "frames": entry["frames"]}]})
    return {"segments": segments, "device_traces": [trace]}


def write_snapshot(rp, path) -> None:
    """Pickle the snapshot to `path`, in protocol 4: the viewer's own unpickler reads 2 to 4."""
    data = pickle.dumps(snapshot(rp), protocol=4)
    from graphcalc.outputs import write_atomic

    write_atomic(path, data)
