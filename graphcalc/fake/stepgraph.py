"""The training step as a `torch.fx.Graph` of ATen ops, recorded by the replay as it runs.

`StepGraphBuilder` is fed by `replay.StepRecorder.__torch_dispatch__`, in the same single pass
over the step on fake tensors (no second trace). The graph reads as `make_fx` records one: a
placeholder per parameter, buffer and batch tensor, a `call_function` node per ATen op (target
the `OpOverload`), `operator.getitem` nodes for the parts of a multi-output op, constants inlined,
and a `get_attr` node (`_tensor_constant0`, as make_fx names them) for a tensor the step never
made. An argument is the node that made the tensor (by tensor identity; a view or in-place write
this replay did not see returned falls back to the node that made or last wrote its storage).

Each node's `meta`:
- `val`: a `TensorValue` (shape, dtype, device, stride) or a tuple of them: light, so that no fake
  tensor is held alive (holding them would change the memory the replay measures). The device is
  the one predicted for (`cuda` for a CUDA step replayed on CPU fakes).
- `module`: the layer path as the report names it ("(root)", "[loss]", "[optimizer]", "[setup]");
- `phase` ("setup", "batch", "forward", "loss", "backward", "optimizer") and `step` (from 1);
- `flops`, `bias_adds`: what the recorder counted for it (graphcalc.flops; 0 where it counts
  nothing: after the first step, in the optimizer), None for an op with no formula;
- `allocated`: the storages it made (a placeholder's were counted before the first event: its
  `allocates` is their bytes, its `allocated` empty), as `tracking.LiveStorages` counted them: (serial, bytes)
  in the order they were counted (a cuBLAS workspace taken before the op first);
  `freed`: (serial, -bytes) of the storages that died after it, before the next op made any;
  `allocates`, `frees`: their sums in bytes;
- `call` (the first forward's ops only): the stretch it ran in, `(path, call, part)` as the
  recorder keys them (`replay.FlowKey`: call `call` of layer `path`, part 0; or the `part`-th run
  of a container's own ops between its children); `StepGraph.calls` lists them in the order seen;
- `returns` (only on the node after which a layer's forward returned, first forward):
  ((path, call, 0), ((node, part, shape), ...)): the call, and the node (and part) that made
  each tensor it returned: how `graphpasses.layer_flow` sees a tensor pass through a layer that
  runs no op on it (Identity, Dropout(0.0));
- `saves` (forward and loss of the first step only): ((path, serial, bytes), ...): the storages
  autograd saved for backward at this node, each at its first save, and the layer that ran;
- `phase_marks` (only where the step changed phase after the node and before the next op, as
  zero_grad's frees run in no op): (i, step, phase, module): from `freed[i]` on, the step ran
  `phase` of `step` inside `module`.

Together the nodes hold every event of the tracker from the first placeholder on, in its order:
the memory walk over them (graphcalc.passes.graphpasses) is the tracker's count, event for event.
`StepGraph.categories` says where each storage's memory goes (filled once the replay knows).

The passes over the graph are in `graphcalc.passes.graphpasses`.
"""

from __future__ import annotations

import operator
import weakref
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.fx as fx
from torch.utils._pytree import tree_leaves

from graphcalc.report import ROOT
from graphcalc.fake.tracking import LiveStorages
from graphcalc.units import dtype_name


class TensorValue(NamedTuple):
    """What `meta["val"]` keeps of a tensor (as torch.fx's TensorMetadata, lighter)."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    device: str
    stride: tuple[int, ...]


KNOWN_CONSTANT_NUMEL = 4096


def _known_value(t: torch.Tensor) -> torch.Tensor | None:
    """A small constant's real value: a real tensor's, or what a fake one was made from."""
    from torch._subclasses.fake_tensor import FakeTensor, unset_fake_temporarily

    try:
        if t.numel() > KNOWN_CONSTANT_NUMEL:
            return None
        if isinstance(t, FakeTensor):
            t = t.constant
            if t is None:
                return None
        with unset_fake_temporarily():
            return t.detach().clone()
    except (RuntimeError, NotImplementedError, AttributeError):
        return None


def _layout(t: torch.Tensor) -> tuple | None:
    """(shape, stride, storage offset): which view of its storage a tensor is."""
    try:
        return tuple(t.shape), tuple(t.stride()), t.storage_offset()
    except (RuntimeError, NotImplementedError):
        return None


def value_of(t: torch.Tensor, device: str) -> TensorValue:
    try:
        stride = tuple(t.stride())
    except (RuntimeError, NotImplementedError):
        stride = ()
    return TensorValue(tuple(t.shape), t.dtype, device, stride)


def layer_name(path: str) -> str:
    return ROOT if path == "" else path


def _identifier(name: str) -> str:
    """`layers.0.weight` -> `layers_0_weight`; a leading digit gets a `_` (`0.weight`)."""
    out = "".join(c if c.isalnum() or c == "_" else "_" for c in name)
    return f"_{out}" if not out or out[0].isdigit() else out


_PLAIN = (int, float, bool, str)


class Call(NamedTuple):
    """One stretch of the first forward (`StepGraph.calls`): the (path, call) of the forwards
    running round it, outermost first; and, for a layer's call that returned (part 0; not the
    loss, not a container's own runs), the shapes of the tensors it returned, their bytes and
    the dtype of the first, and the shapes of the tensors it was handed."""

    context: tuple[tuple[str, int], ...]
    shapes: tuple[tuple[int, ...], ...] = ()
    out_bytes: int = 0
    dtype: str | None = None
    returned: bool = False
    inputs: tuple[tuple[int, ...], ...] = ()


class StepGraphBuilder:
    """Appends one node per op the recorder sees; `finish()` closes the graph."""

    def __init__(self, tracker: LiveStorages, device: str = "cpu"):
        self.graph = fx.Graph()
        self.tracker = tracker
        self.device = device
        # id(tensor) -> (weakref, node, part of a multi-output op or None)
        self._node_of: dict[int, tuple[Any, fx.Node, int | None]] = {}
        # storage serial -> (node, part) that made it or last wrote it in place
        self._storage_node: dict[int, tuple[fx.Node, int | None]] = {}
        # the layout (shape, stride, offset) of the tensor each storage's node made
        self._storage_layout: dict[int, tuple | None] = {}
        self._here: tuple[str, str, int] = (ROOT, "setup", 0)  # the op being recorded
        self._getitems: dict[tuple[fx.Node, int], fx.Node] = {}
        self._objects: dict[int, tuple[Any, fx.Node]] = {}  # id(ScriptObject) -> (it, maker)
        self._cursor = 0  # the tracker's events up to here belong to nodes already made
        self._last: fx.Node | None = None
        self._constants: dict[int, tuple[Any, fx.Node]] = {}
        self.constants: dict[str, TensorValue] = {}  # get_attr target -> its value
        self.constant_values: dict[str, torch.Tensor] = {}  # the small ones' real values
        self._finished = False
        self._op_info: dict[Any, tuple[bool, str | None]] = {}  # op -> (left out?, node name)
        self.live_before = 0
        self.first_event = 0
        self.start_storages: tuple[tuple[int, int], ...] = ()
        # The first forward's stretches (`replay.FlowKey`: a layer's call, or a run of a
        # container's own ops), first seen first
        self.calls: dict[tuple[str, int, int], Call] = {}

    # --- inputs ----------------------------------------------------------------------------------
    def placeholders(self, named: dict[str, torch.Tensor], batch: Any) -> None:
        """A placeholder per parameter/buffer name and per batch tensor; each storage's bytes go
        to the first placeholder holding it. What the tracker counted before (the fakes' making
        and the batch's temporaries) is thereby folded into them."""
        seen: set[int] = set()
        done: dict[int, fx.Node] = {}

        def add(name: str, t: torch.Tensor) -> None:
            if id(t) in done:  # a tied weight: one placeholder, under its first name
                return
            node = self.graph.placeholder(_identifier(name))
            serial = self.tracker.serial(t)
            allocates = 0
            if serial is not None and serial not in seen:
                seen.add(serial)
                allocates = self.tracker._bytes_of.get(serial, 0)
            node.meta.update(val=value_of(t, self.device), module=ROOT, phase="setup", step=0,
                             flops=0, bias_adds=0, allocates=allocates, frees=0,
                             allocated=(), freed=(),
                             input=name)
            done[id(t)] = node
            self._bind(t, node, serial, new=True)
            self._last = node

        for name, t in named.items():
            add(name, t)
        for i, t in enumerate(t for t in tree_leaves(batch) if isinstance(t, torch.Tensor)):
            add(f"batch_{i}", t)
        self._cursor = self.first_event = self.tracker.mark()
        # Every storage live as the graph begins (the placeholders' and any temporary of the
        # batch still alive), and the live bytes the placeholders do not hold: the memory walk
        # starts from them.
        self.start_storages = tuple(self.tracker._bytes_of.items())
        self.live_before = self.tracker.current - sum(
            n.meta["allocates"] for n in self.graph.nodes)

    # --- one op ----------------------------------------------------------------------------------
    def _bind(self, t: torch.Tensor, node: fx.Node, serial: int | None, new: bool) -> None:
        self._node_of[id(t)] = (weakref.ref(t), node, None)
        if serial is not None and new:
            self._storage_node[serial] = (node, None)
            self._storage_layout[serial] = _layout(t)

    def _map(self, a):
        """An argument with each tensor replaced by its node (lists and tuples followed)."""
        if isinstance(a, torch.Tensor):
            return self._arg(a)
        if isinstance(a, _PLAIN) or a is None:
            return a
        if isinstance(a, (list, tuple)):
            # inline for the common elements (tensors, numbers): a call each saved, per op
            out = [self._arg(x) if isinstance(x, torch.Tensor)
                   else x if x is None or isinstance(x, _PLAIN) else self._map(x) for x in a]
            return tuple(out) if type(a) is tuple else out if type(a) is list else type(a)(out)
        if isinstance(a, dict):
            return {k: self._map(v) for k, v in a.items()}
        if isinstance(a, torch.ScriptObject):  # a profiler record_function handle
            made = self._objects.get(id(a))
            return made[1] if made is not None and made[0] is a else repr(a)
        return a

    def _arg(self, t: torch.Tensor) -> fx.Node:
        found = self._find(t)
        if found is None:
            return self._constant(t)
        (op, part), serial = found
        node = self._part(op, part)
        if serial is None:  # the very tensor an op returned
            return node
        layout = _layout(t)
        if layout is None or layout == self._storage_layout.get(serial) \
                or node.meta["val"].dtype != t.dtype:
            return node
        return self._view(t, node, layout)

    def _view(self, t: torch.Tensor, node: fx.Node, layout: tuple) -> fx.Node:
        """A tensor the step reads that no op returned, over a storage an op made or wrote: a view
        autograd or the optimizer took (a saved `mat2.t()` unpacked in backward, a slice). An
        `as_strided` node makes it from that op's output, so the graph computes what the step
        did; it costs nothing (no FLOP, no byte: a view) and passes read through it (`view_of`)."""
        shape, stride, offset = layout
        view = self.graph.call_function(torch.ops.aten.as_strided.default,
                                        (node, list(shape), list(stride), offset))
        module, phase, step = self._here
        view.meta.update(val=value_of(t, self.device), module=module, phase=phase, step=step,
                         flops=0, bias_adds=0, allocates=0, frees=0, allocated=(), freed=(),
                         view_of=node.name)
        self._node_of[id(t)] = (weakref.ref(t), view, None)
        return view

    def _part(self, op: fx.Node, index: int | None) -> fx.Node:
        """`op`, or the `operator.getitem` node of its part `index`, made on its first use."""
        if index is None:
            return op
        node = self._getitems.get((op, index))
        if node is None:
            place = op.meta["positions"][index] if "positions" in op.meta else index
            node = self.graph.call_function(operator.getitem, (op, place))
            node.meta.update(val=op.meta["val"][index], module=op.meta["module"],
                             phase=op.meta["phase"], step=op.meta["step"], flops=0, bias_adds=0,
                             allocates=0, frees=0, allocated=(), freed=())
            self._getitems[(op, index)] = node
        return node

    def _constant(self, t: torch.Tensor) -> fx.Node:
        made = self._constants.get(id(t))
        if made is not None and made[0]() is t:
            return made[1]
        target = f"_tensor_constant{len(self.constants)}"
        node = self.graph.get_attr(target)
        self.constants[target] = value_of(t, self.device)
        known = _known_value(t)
        if known is not None:
            self.constant_values[target] = known
        node.meta.update(val=self.constants[target], module=ROOT, phase="setup", step=0, flops=0,
                         bias_adds=0, allocates=0, frees=0, allocated=(), freed=())
        self._constants[id(t)] = (weakref.ref(t), node)
        return node

    def record(self, func, args, kwargs, out, *, module: str, phase: str, step: int,
               cost, counted: bool, op_start: int, writes: bool, outs: list,
               serials: list, call: tuple[str, int, int] | None = None) -> None:
        """One op, after the recorder tracked its outputs (`outs`, the tensors among `out`'s
        leaves, and their storages' `serials`); its events are the tracker's from
        `op_start` (when its dispatch began: what died before, died after the last node) on.
        prim:: queries (a tensor's device) and profiler:: marks are not the step's data: left
        out, as make_fx leaves them (their events go to the next node), unless they are an op
        without a FLOP formula."""
        info = self._op_info.get(func)
        if info is None:
            packet = getattr(func, "_overloadpacket", None)
            info = self._op_info[func] = (
                getattr(func, "namespace", "aten") in ("prim", "profiler"),
                packet.__name__ if packet is not None else None)
        quiet, name = info
        if quiet and not (counted and cost is None):
            return
        events = self.tracker.events
        start, end = max(op_start, self._cursor), self.tracker.mark()
        self._free_after_last(self._cursor, start)
        allocated = tuple(events[start:end])
        self._cursor = end
        # The arguments first: the getitem, view and constant nodes they need are made before
        # the op that reads them, so the graph is topologically ordered (Graph.lint() passes).
        self._here = (layer_name(module), phase, step + 1)
        mapped_args = self._map(args) if args else ()
        mapped_kwargs = self._map(kwargs) if kwargs else {}
        node = self.graph.create_node("call_function", func, name=name)
        # Set after, at once: create_node walks every argument of a call looking for a raw
        # SymInt to warn of (three quarters of its time), and each assignment to `args` or
        # `kwargs` re-files the node in the graph's lookup table by (op, target), which do not
        # change. The replay's shapes are static: no SymInt.
        node._update_args_kwargs(mapped_args, mapped_kwargs)
        if isinstance(out, torch.ScriptObject):
            self._objects[id(out)] = (out, node)
        single = isinstance(out, torch.Tensor)
        device = self.device
        val = value_of(out, device) if single else tuple(value_of(t, device) for t in outs)
        if counted:
            flops = None if cost is None else cost.flops
            bias_adds = 0 if cost is None else cost.bias_adds
        else:
            flops, bias_adds = 0, 0
        node.meta.update(val=val, module=layer_name(module), phase=phase, step=step + 1,
                         flops=flops, bias_adds=bias_adds,
                         allocates=sum(d for _, d in allocated), frees=0,
                         allocated=allocated, freed=())
        if call is not None:
            node.meta["call"] = call
        if not single and isinstance(out, (tuple, list)) and len(outs) < len(out) \
                and all(o is None or isinstance(o, torch.Tensor) for o in out):
            # an undefined output (convolution_backward without the input's gradient): the
            # parts are the tensors, the getitem reads their place in what the op returned
            node.meta["positions"] = tuple(i for i, o in enumerate(out)
                                           if isinstance(o, torch.Tensor))
        for i, t in enumerate(outs):
            index = None if single else i
            self._node_of[id(t)] = (weakref.ref(t), node, index)
            serial = serials[i]
            if serial is not None and (writes or serial not in self._storage_node):
                self._storage_node[serial] = (node, index)
                self._storage_layout[serial] = _layout(t)
        self._last = node

    # --- the first forward's calls --------------------------------------------------------------
    def stretch(self, key: tuple[str, int, int], context: tuple[tuple[str, int], ...]) -> None:
        """A stretch of the first forward seen for the first time, inside `context` (the
        (path, call) of the running forwards, outermost first)."""
        if key not in self.calls:
            self.calls[key] = Call(context)

    def returned(self, path: str, call: int, context: tuple[tuple[str, int], ...],
                 tensors: list, inputs: tuple[tuple[int, ...], ...] = ()) -> None:
        """Call `call` of layer `path`, handed tensors of shapes `inputs`, returned `tensors`. The last node gets meta `returns`:
        (the call's key, the (node, part) of each tensor returned, its shape), so that a pass
        can tell a layer that passes on a tensor it did not make (Identity, Dropout(0.0), a
        branch returning its input): it runs no op, yet the tensor flows through it."""
        key = (path, call, 0)
        self.stretch(key, context)
        self.calls[key] = self.calls[key]._replace(
            shapes=tuple(tuple(t.shape) for t in tensors),
            out_bytes=sum(t.numel() * t.element_size() for t in tensors),
            dtype=dtype_name(tensors[0].dtype) if tensors else None,
            returned=True, inputs=tuple(tuple(int(d) for d in s) for s in inputs))
        made = []
        for t in tensors:
            source = self._source(t)
            if source is not None:
                made.append((source[0], source[1], tuple(t.shape)))
        if self._last is not None:
            self._last.meta["returns"] = self._last.meta.get("returns", ()) + ((key, tuple(made)),)

    def saved(self, path: str, serial: int, nbytes: int) -> None:
        """Autograd saved storage `serial` (`nbytes`) for backward while layer `path` ran the
        last node, the first save of that storage: the node's meta `saves`."""
        if self._last is not None:
            self._last.meta["saves"] = self._last.meta.get("saves", ()) + ((path, serial,
                                                                            nbytes),)

    def _source(self, t: torch.Tensor) -> tuple[fx.Node, int | None] | None:
        """The (node, part) that made `t`: by the tensor itself, else by its storage (where it
        was made or last written in place); None for a tensor the step never made."""
        found = self._find(t)
        return found[0] if found is not None else None

    def _find(self, t: torch.Tensor):
        """`_source`'s lookup, saying which way it matched: ((node, part), None) for the tensor
        an op returned, ((node, part), serial) for one found by its storage; else None."""
        made = self._node_of.get(id(t))
        if made is not None and made[0]() is t:
            return (made[1], made[2]), None
        serial = self.tracker.serial(t)
        source = self._storage_node.get(serial) if serial is not None else None
        return (source, serial) if source is not None else None

    def _free_after_last(self, start: int, end: int) -> None:
        """Events [start, end) of the tracker died after the last node."""
        if end <= start or self._last is None:
            return
        meta = self._last.meta
        died = tuple(self.tracker.events[start:end])
        meta["freed"] = meta["freed"] + died
        meta["frees"] -= sum(d for _, d in died)

    def phase(self, step: int, phase: str, module: str) -> None:
        """The step moved to `phase` (of `step`, counted from 0) inside `module`, between ops:
        what dies from here until the next op's first storage, it died in that phase."""
        if self._finished or self._last is None:
            return
        end = self.tracker.mark()
        self._free_after_last(self._cursor, end)
        self._cursor = end
        meta = self._last.meta
        mark = (len(meta["freed"]), step + 1, phase, layer_name(module))
        marks = meta.get("phase_marks", ())
        if marks and marks[-1][0] == mark[0]:  # no event in the phase before: replaced
            marks = marks[:-1]
        meta["phase_marks"] = marks + (mark,)

    def finish(self) -> "StepGraph":
        """The graph, with the frees after the last op and an output node."""
        if not self._finished:
            end = self.tracker.mark()
            self._free_after_last(self._cursor, end)
            self._cursor = end
            self.graph.output(None)
            self._finished = True
            self._node_of.clear()
            self._getitems.clear()
            self._objects.clear()
            self._constants.clear()
            self._storage_node.clear()
            self._storage_layout.clear()
        return StepGraph(self.graph, dict(self.constants), self.live_before, self.device,
                         self.first_event, self.start_storages,
                         calls=dict(self.calls), constant_values=dict(self.constant_values))


@dataclass
class StepGraph:
    """The recorded step: the graph, the values of its `get_attr` constants, the live bytes the
    placeholders do not hold when the step starts (0 unless a batch temporary outlives it), the
    tracker's events before the first placeholder, the storages live then (serial, bytes), and
    where each storage's memory goes (serial -> a `report.STACK_CATEGORIES` name)."""

    graph: fx.Graph
    constants: dict[str, TensorValue]
    live_before: int
    device: str
    first_event: int = 0
    start_storages: tuple[tuple[int, int], ...] = ()
    categories: dict[int, str] = field(default_factory=dict)
    # the first forward's stretches, first seen first (key: `replay.FlowKey`)
    calls: dict[tuple[str, int, int], Call] = field(default_factory=dict)
    # the real values of the small constants the step made in Python (an optimizer's step
    # counter, torch.tensor(0.0)), where known: what `graph_module(runnable=True)` holds
    constant_values: dict[str, torch.Tensor] = field(default_factory=dict)

    def nodes(self, *ops: str) -> list[fx.Node]:
        return [n for n in self.graph.nodes if not ops or n.op in ops]

    def graph_module(self, runnable: bool = False) -> fx.GraphModule:
        """A GraphModule over the graph, for its code (meta tensors stand for its constants), or
        `runnable`: the constants' real values, so that called with the parameters, buffers and
        batch (real tensors, in the placeholders' order) it takes the steps the replay took,
        updating the parameters in place as the optimizer did."""
        root = torch.nn.Module()
        for target, v in self.constants.items():
            value = self.constant_values.get(target) if runnable else None
            root.register_buffer(target, value.clone() if value is not None
                                 else torch.empty(v.shape, dtype=v.dtype, device="meta"))
        return fx.GraphModule(root, self.graph, class_name="TrainingStep")


_DTYPES = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16",
           torch.float64: "f64", torch.int64: "i64", torch.int32: "i32", torch.bool: "b8",
           torch.uint8: "u8", torch.int8: "i8"}


def value_text(val) -> str:
    """`f32[2, 3]`, or `(f32[2, 3], i64[2])` for several: torch's own shorthand."""
    if isinstance(val, TensorValue):
        dtype = _DTYPES.get(val.dtype, dtype_name(val.dtype))
        return f"{dtype}[{', '.join(str(d) for d in val.shape)}]"
    return "(" + ", ".join(value_text(v) for v in val) + ")"
