"""Replay a training step on fake tensors and record what every ATen op costs and holds.

The step is the one the tutorials write (see `training_step`): zero_grad, forward, loss, backward,
optimizer step. It runs for real through PyTorch — autograd, the optimizer, autocast — but on
`FakeTensorMode` tensors, which carry shapes, dtypes and devices and allocate nothing, so its cost
does not depend on the batch. A `TorchDispatchMode` sees every ATen op and records:

- its FLOPs (the registry in `graphcalc.flops`), attributed to the module that ran it: in forward,
  the innermost module whose forward is running; in backward, the module whose forward created the
  autograd node being run (matched by the node's sequence number);
- every storage it returns, counted live until the storage dies (`tracking.LiveStorages`): the
  memory timeline and its peak, exactly as autograd and the optimizer hold and free memory;
- the shapes each module returns and the tensors autograd saves for backward inside it.
"""

from __future__ import annotations

import bisect
import contextlib
import gc
import inspect
import weakref
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn
import torch._dynamo  # noqa: F401  (fake tensors import it on their first op; pay it at import)
from torch._subclasses.fake_tensor import (DataDependentOutputException,
                                           DynamicOutputShapeException, FakeTensor,
                                           FakeTensorMode, unset_fake_temporarily)
from torch.nn.utils.stateless import _reparametrize_module
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map

from . import cuda, flops, kernels, routing
from .errors import ModelFault, model_fault
from .opaque import OpaqueLayers
from .options import Options, make_optimizer
from .torchlogs import quietly
from .tracking import LiveCounter, LiveStorages
from .units import dtype_name

LOSS = "[loss]"
OPTIMIZER = "[optimizer]"
SETUP = "[setup]"
PHASES = ("forward", "loss", "backward", "optimizer")


@dataclass
class LayerTrace:
    """What one module (by path) did in the first step: its own ops, not its children's."""

    macs_forward: int = 0
    macs_backward: int = 0
    bias_adds_forward: int = 0
    calls: int = 0
    output_shapes: list[tuple[int, ...]] | None = None
    input_shapes: list[tuple[int, ...]] | None = None  # the tensors of the first call's args
    output_dtype: str | None = None
    output_bytes: int = 0
    saved: dict[int, int] = field(default_factory=dict)  # storage serial -> bytes
    unknown: Counter = field(default_factory=Counter)


FlowKey = tuple[str, int, int]  # (module path, call 1..n, part: 0 the whole call, 1.. own-op runs)


@dataclass
@dataclass
class Mark:
    """From event `event` on, the step ran `phase` of step `step` inside `owner`."""

    event: int
    step: int
    phase: str
    owner: str


class StepRecorder(TorchDispatchMode):
    def __init__(self, round_to: int = 1, device: str = "cpu"):
        super().__init__()
        self.device = device  # the target device (the fakes may be CPU ones standing in for it)
        self.memory_gaps: dict[str, str] = {}  # op or layer -> why its memory is not modelled
        self.tracker = LiveStorages(round_to=round_to, on_peak=self._on_peak)
        # cuBLAS workspaces (graphcalc.cuda): bytes of each, and thread -> the one it holds
        self.cublas_bytes = 0
        self.workspaces: dict[str, torch.Tensor] = {}
        # cuBLASLt's workspace (thread -> the one it holds) and cuDNN's convolution workspaces
        # (estimated: graphcalc.cuda.conv_workspace), on a CUDA target
        self.lt_workspaces: dict[str, torch.Tensor] = {}
        self.conv_workspaces = False
        self.estimated: set[int] = set()  # serials whose bytes are estimates (cuDNN's)
        self.phase = "setup"
        self.step = 0
        self.count_flops = False
        self.frames: list[tuple[str, int]] = []  # (module path, first autograd sequence nr)
        self.seq_owner: dict[int, str] = {}
        self._seq_keys: list[int] = []
        self.param_owner: dict[int, str] = {}
        self.layers: dict[str, LayerTrace] = defaultdict(LayerTrace)
        self.unknown: Counter = Counter()
        self.serial_phase: dict[int, str] = {}
        self.containers: set[str] = set()  # modules with children: own ops between them are parts
        self._calls: Counter = Counter()
        self._call_stack: list[tuple[str, int]] = []  # (path, call) of the running forwards
        self._part: dict[tuple[str, int], int] = {}  # a container call's current own-op run
        self._child_returned: set[tuple[str, int]] = set()
        self._packing = False  # inside the saved-tensor hook: its detach is no step's data flow
        self.marks: list[Mark] = []
        self.values = KnownValues()
        self.values.tracker = self.tracker
        self.saved_by: dict[int, str] = {}  # saved storage serial -> the first layer saving it
        self.first_run: dict[str, None] = {}  # layers in the order their forward first ran
        self.peak_where: tuple[int, str, str] | None = None
        self.error_owner: str | None = None
        self._owner = SETUP
        self.step_graph = None  # a stepgraph.StepGraphBuilder fed every op, when recording one

    # --- who is running -------------------------------------------------------------------------
    def set_phase(self, phase: str) -> None:
        self.phase = phase
        if phase == "loss":
            self.frames.append((LOSS, torch.autograd._get_sequence_nr()))
        elif phase == "backward":
            self._seq_keys = sorted(self.seq_owner)
        if phase in ("backward", "optimizer", "end"):
            while self.frames and self.frames[-1][0] == LOSS:
                self.frames.pop()
        self._mark(OPTIMIZER if phase == "optimizer" else self._owner)
        if self.step_graph is not None:
            self.step_graph.phase(self.step, phase, self._owner)

    def _mark(self, owner: str) -> None:
        self._owner = owner
        m = Mark(self.tracker.mark(), self.step, self.phase, owner)
        if self.marks and self.marks[-1].event == m.event:
            self.marks[-1] = m
        elif not self.marks or (self.marks[-1].phase, self.marks[-1].owner, self.marks[-1].step) != (
                m.phase, m.owner, m.step):
            self.marks.append(m)

    def _owner_of_seq(self, seq: int) -> str:
        owner = self.seq_owner.get(seq)
        if owner is not None:
            return owner
        # A node no recorded op created (a custom autograd.Function): the module of the nearest
        # earlier node.
        i = bisect.bisect_right(self._seq_keys, seq) - 1
        return self.seq_owner[self._seq_keys[i]] if i >= 0 else LOSS

    def current_owner(self) -> str:
        if self.phase == "backward":
            node = torch._C._current_autograd_node()
            if node is None:
                return LOSS  # the seed gradient, made before the engine starts
            if "AccumulateGrad" in node.name():
                return self.param_owner.get(id(node.variable), "")
            return self._owner_of_seq(node._sequence_nr())
        if self.phase in ("forward", "loss") and self.frames:
            path, start = self.frames[-1]
            node_seq = torch.autograd._get_sequence_nr() - 1  # the node this op just made, if any
            if node_seq >= start:
                self.seq_owner.setdefault(node_seq, path)
            return path
        if self.phase == "optimizer":
            return OPTIMIZER
        return SETUP

    def _on_peak(self) -> None:
        self.peak_where = (self.step, self.phase, self._owner)

    # --- the dispatch hook -----------------------------------------------------------------------
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        op_start = self.tracker.mark()
        owner = self.current_owner()
        if self.count_flops and self.phase in ("forward", "loss"):
            self.first_run.setdefault(owner, None)
        if owner != self._owner:
            self._mark(owner)
        self.values.owner = owner
        if self.cublas_bytes and self.phase in ("forward", "loss", "backward") \
                and flops.op_name(func) in cuda.CUBLAS_OPS:
            thread = cuda.cublas_thread(self.phase)
            if thread not in self.workspaces:  # taken before the op's outputs, kept for good
                ws = torch.empty(self.cublas_bytes, dtype=torch.uint8)
                self.workspaces[thread] = ws
                self.serial_phase[self.tracker.track(ws)] = "workspace"
            if thread not in self.lt_workspaces and cuda.uses_cublaslt(func, args, kwargs):
                # after the cuBLAS one: cuBLASLt's handle is the thread's cuBLAS handle
                ws = torch.empty(cuda.CUBLASLT_WORKSPACE_BYTES, dtype=torch.uint8)
                self.lt_workspaces[thread] = ws
                self.serial_phase[self.tracker.track(ws)] = "workspace"
        try:
            out = _run(func, args, kwargs, self.phase, self.values)
        except Exception:
            if self.error_owner is None:
                self.error_owner = owner
            raise
        flow = None
        if self.count_flops and self.phase in ("forward", "loss") and not self._packing \
                and self.step_graph is not None:
            flow = self._flow_of(owner)
        cost, counted = None, False
        if self.count_flops and self.phase in ("forward", "loss", "backward"):
            cost, counted = self._count(func, args, kwargs, out, owner), True
        out, sizes = kernels.real_outputs(func, args, out, kwargs)
        if self.device == "cuda" and self.phase in ("setup", "optimizer") \
                and flops.op_name(func) == "aten::lift_fresh":
            # torch.optim's `torch.tensor(0.0)` step counters (and the constants it adds to
            # them) are CPU tensors on a CUDA run unless fused or capturable: not GPU memory.
            sizes = {0: 0}
        if self.device == "cuda" and flops.op_name(func) == \
                "aten::_scaled_dot_product_efficient_attention":
            sizes = {2: 0, 3: 0}  # its philox seed and offset: host scalars (attention.cu)
        gap = kernels.unmodelled(func, args, self.device)
        if gap is not None:
            self.memory_gaps.setdefault(flops.op_name(func), gap)
        tracker = self.tracker
        first_new = tracker._next
        outs, serials = [], []  # the output tensors and their storages' serials, for the graph
        before = None
        for i, t in enumerate(tree_leaves(out)):
            if isinstance(t, torch.Tensor):
                if self.phase == "batch" and not _is_fake(t):
                    if before is None:
                        before = _storages_from_before(tracker, args, kwargs)
                    if _storage_key(t) in before:
                        # example_inputs taking a view of a real tensor that was there before
                        # (the caller's input_data, a module-level table it slices): the batch
                        # is what it returns, not the tensor it was cut from; as a real step,
                        # whose batch is made before it starts. (In the step itself a view of
                        # such a tensor is counted, as the real measurement counts it.)
                        outs.append(t)
                        serials.append(None)
                        continue
                serial = tracker.track(t, sizes.get(i) if sizes else None)
                outs.append(t)
                serials.append(serial)
                if serial is None:
                    continue
                if serial >= first_new:
                    self.serial_phase[serial] = self.phase
        if self.conv_workspaces and self.phase in ("forward", "loss", "backward"):
            scratch = cuda.conv_workspace(func, args, out)
            if scratch:  # taken after the op's outputs and freed before it returns
                serial = tracker.transient(scratch)
                self.serial_phase[serial] = "workspace"
                self.estimated.add(serial)
        if self.step_graph is not None and not self._packing:
            self.step_graph.record(func, args, kwargs, out, module=owner, phase=self.phase,
                                   step=self.step, cost=cost, counted=counted,
                                   op_start=op_start, writes=_writes(func),
                                   outs=outs, serials=serials, call=flow)
        return out

    def _count(self, func, args, kwargs, out, owner: str):
        cost = flops.cost_of(func, args, kwargs, out)
        layer = self.layers[owner]
        if cost is None:
            name = flops.op_name(func)
            self.unknown[name] += 1
            layer.unknown[name] += 1
            return None
        if self.phase == "backward":
            layer.macs_backward += cost.macs
        else:
            layer.macs_forward += cost.macs
            layer.bias_adds_forward += cost.bias_adds
        return cost

    # --- the data flow of the first forward ------------------------------------------------------
    def _flow_of(self, owner: str) -> FlowKey:
        """The stretch an op of `owner` belongs to: its call, and for a container's own op the
        run of own ops it is in (a new run starts once a child has returned)."""
        if self._call_stack and self._call_stack[-1][0] == owner:
            path, call = self._call_stack[-1]
        else:  # the loss, or an op outside any watched call
            path, call = owner, 1
        part = 0
        if path in self.containers:
            here = (path, call)
            part = self._part.get(here, 0)
            if part == 0 or here in self._child_returned:
                part += 1
                self._part[here] = part
                self._child_returned.discard(here)
        key = (path, call, part)
        if key not in self.step_graph.calls:  # the graph keeps the stretches seen so far
            context = tuple(self._call_stack) if path != LOSS else ((LOSS, 1),)
            self.step_graph.stretch(key, context)
        return key

    # --- module hooks ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def watching(self, model: nn.Module):
        paths = {}
        for path, mod in model.named_modules():
            paths.setdefault(id(mod), path)
            if next(mod.children(), None) is not None:
                self.containers.add(path)
        handles = []

        def pre(mod, args):
            path = paths[id(mod)]
            if self.device == "cuda" and isinstance(mod, nn.RNNBase):
                # On a GPU nn.RNN/LSTM/GRU run cuDNN's kernel (_cudnn_rnn), whose reserve space
                # no fake kernel sizes; CPU fakes standing in for CUDA run other kernels.
                self.memory_gaps.setdefault(path, kernels.CUDNN_RNN)
            self.frames.append((path, torch.autograd._get_sequence_nr()))
            call = 0
            if self.phase == "forward" and self.count_flops:
                self._calls[path] += 1
                call = self._calls[path]
            self._call_stack.append((path, call))

        def post(mod, args, output):
            path, _ = self.frames.pop()
            _, call = self._call_stack.pop()
            if self.phase == "forward" and self.count_flops:
                layer = self.layers[path]
                if layer.input_shapes is None:  # torchinfo's input-size column
                    layer.input_shapes = [tuple(t.shape) for t in tree_leaves(args)
                                          if isinstance(t, torch.Tensor)]
                self._record_output(path, call, output)
                if self._call_stack:
                    self._child_returned.add(self._call_stack[-1])

        for mod in model.modules():
            handles.append(mod.register_forward_pre_hook(pre))
            handles.append(mod.register_forward_hook(post))

        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def saved_tensors(self):
        """Attribute the tensors autograd saves for backward to the layer running (step 0 only:
        the hook costs a detach per saved tensor, and later steps save the same)."""

        def pack(t):
            if self.frames and self.phase in ("forward", "loss"):
                serial = self.tracker.serial(t)
                if (serial is not None and serial not in self.saved_by
                        and self.serial_phase.get(serial) in ("forward", "loss")):
                    # Each saved storage counts once, at the first layer that saves it (a ReLU's
                    # output that the next MaxPool saves again is the ReLU's), so rows sum.
                    path = self.frames[-1][0]
                    self.saved_by[serial] = path
                    self.layers[path].saved[serial] = self.tracker._bytes_of.get(serial, 0)
                    if self.step_graph is not None:
                        self.step_graph.saved(path, serial, self.layers[path].saved[serial])
            # Detached, or an output saved by its own node would hold itself in a cycle and
            # outlive the step, which autograd's own saving avoids.
            self._packing = True
            try:
                return t.detach()
            finally:
                self._packing = False

        return _saved_tensors_hooks_beside_checkpoints(pack, lambda t: t)

    def _record_output(self, path: str, call: int, output) -> None:
        layer = self.layers[path]
        layer.calls += 1
        tensors = [t for t in tree_leaves(output) if isinstance(t, torch.Tensor)]
        layer.output_bytes += sum(t.numel() * t.element_size() for t in tensors)
        if layer.output_shapes is None:
            layer.output_shapes = [tuple(t.shape) for t in tensors]
            layer.output_dtype = dtype_name(tensors[0].dtype) if tensors else None
        if self.step_graph is not None:  # the call as a stretch of the graph's first forward
            self.step_graph.returned(path, call, tuple(self._call_stack) + ((path, call),),
                                     tensors)


@contextlib.contextmanager
def _saved_tensors_hooks_beside_checkpoints(pack, unpack):
    """saved_tensors_hooks(pack, unpack), set aside while torch.utils.checkpoint saves a
    checkpoint's inputs: a tensor saved under hooks unpacks as a new object, so `query is key`
    would no longer hold when the checkpoint re-runs nn.MultiheadAttention, which takes another
    path then (and the recompute fails "different metadata", where the real step runs). The
    inputs saved there are the caller's tensors, never new memory, so nothing is missed."""
    import torch.utils.checkpoint as ckpt

    graph = torch.autograd.graph
    # where the inputs are saved: _CheckpointFrame.save_inputs (torch 2.13), or
    # _NoopSaveInputs.apply (torch 2.11 and before)
    frame = getattr(ckpt, "_CheckpointFrame", None)
    if frame is not None and hasattr(frame, "save_inputs"):
        owner, name = frame, "save_inputs"
    elif getattr(ckpt, "_NoopSaveInputs", None) is not None:
        owner, name = ckpt._NoopSaveInputs, "apply"
    else:
        owner = name = None
    depth = [0]  # saved_tensors_hooks entered above ours (a checkpoint's own)
    base_enter, base_exit = graph.saved_tensors_hooks.__enter__, graph.saved_tensors_hooks.__exit__

    def enter(self):
        depth[0] += 1
        return base_enter(self)

    def exit_(self, *exc):
        depth[0] -= 1
        return base_exit(self, *exc)

    with graph.saved_tensors_hooks(pack, unpack):
        if owner is None:  # another torch: as before
            yield
            return
        base_save = owner.__dict__[name]
        call = base_save.__get__(None, owner) if isinstance(base_save, classmethod) else base_save

        def save(*args, **kwargs):
            if depth[0]:  # inside another checkpoint's hooks: not ours on top
                return call(*args, **kwargs)
            torch._C._autograd._pop_saved_tensors_default_hooks()
            try:
                return call(*args, **kwargs)
            finally:
                torch._C._autograd._push_saved_tensors_default_hooks(pack, unpack)

        setattr(owner, name, save)
        graph.saved_tensors_hooks.__enter__, graph.saved_tensors_hooks.__exit__ = enter, exit_
        try:
            yield
        finally:
            setattr(owner, name, base_save)
            graph.saved_tensors_hooks.__enter__ = base_enter
            graph.saved_tensors_hooks.__exit__ = base_exit


# The largest tensor (elements) computed for real from the batch: token ids or a padding mask
# (B x S), never an attention map (B x S x S) or activations at a training batch.
CONCRETE_NUMEL = 1 << 24


def _is_fake(t) -> bool:
    return isinstance(t, FakeTensor)


def _storage_key(t: torch.Tensor) -> int | None:
    try:
        return t.untyped_storage()._cdata
    except (RuntimeError, NotImplementedError, TypeError):
        return None


def _storages_from_before(tracker, args, kwargs) -> set:
    """The storages of an op's real arguments that the replay never saw allocated: they existed
    before it began."""
    return {_storage_key(t) for t in tree_leaves((args, kwargs))
            if isinstance(t, torch.Tensor) and not _is_fake(t) and tracker.serial(t) is None} \
        - {None}


class KnownValues:
    """What the replay knows of tensor values (`_concrete`): which real tensors went stale, and
    where the step read a value of the example inputs (op -> the layers that read it)."""

    def __init__(self):
        self.stale = StaleStorages()  # storages of real tensors written with fake values
        self.reads: dict[str, dict[str, None]] = {}
        self.owner = ""
        self.routing: str | None = None  # the routing assumed for MoE routers (None: fake)
        self.routers: dict[str, tuple[int, int]] = {}  # layer -> (experts, k)
        self.tracker = None  # LiveStorages told of real tensors that go on as fake ones

    def route(self, experts: int, k: int) -> None:
        self.routers.setdefault(self.owner, (experts, k))

    def read(self, op: str, phase: str) -> None:
        if phase in ("forward", "loss", "backward"):  # not the optimizer's own step counter
            self.reads.setdefault(op, {})[self.owner] = None


# Matrix products whose real kernels (CPU and CUDA) refuse operands of different dtypes ("mat1
# and mat2 must have the same dtype", "expected m1 and m2 to have the same dtype") where their
# fake kernels do not check: an int64 batch into nn.Linear, a bf16 activation times an fp32
# buffer. A step the real run cannot take is refused, not analysed.
SAME_DTYPE_OPS = frozenset({
    "aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addbmm", "aten::mv",
    "aten::addmv", "aten::dot", "aten::vdot", "aten::addr", "aten::_addmm_activation"})


def _same_dtype(func, args) -> None:
    name = flops.op_name(func)
    if name not in SAME_DTYPE_OPS:
        return
    dtypes = [t.dtype for t in args if isinstance(t, torch.Tensor)]
    if len(set(dtypes)) > 1:
        raise model_fault(RuntimeError(
            f"{name.replace('aten::', '')}: expected the operands to have the same dtype, but "
            f"got {', '.join(dtype_name(d) for d in dtypes)} (the real kernel refuses them)"))


def _indices_in_range(func, args) -> None:
    """An embedding looked up with known indices (positions from `arange`, the batch's ids) past
    its table fails for real ("index out of range in self"): a `--seq-len` past a learned
    position table's size, ids past the vocabulary. The fake kernel does not look."""
    if flops.op_name(func) != "aten::embedding" or len(args) < 2:
        return
    weight, indices = args[0], args[1]
    if _is_fake(indices) or not isinstance(indices, torch.Tensor) or indices.numel() == 0:
        return
    with unset_fake_temporarily():
        # positions only (each row 0, 1, 2, ... or from an offset): a learned position table
        # looked up past its end; other lookups (T5's relative buckets) are the model's values
        rows = indices.reshape(-1, indices.shape[-1]) if indices.dim() else indices.reshape(1, 1)
        if rows.shape[-1] < 2 or not bool((rows[:, 1:] - rows[:, :-1] == 1).all()):
            return
        high, low = int(indices.max()), int(indices.min())
    rows = int(weight.shape[0])
    if high >= rows or low < 0:
        raise model_fault(IndexError(f"index out of range in self: an index "
                                     f"{high if high >= rows else low} into an embedding of "
                                     f"{rows} rows"))


TOP_DRAW = 1 - 2 ** -24  # the largest float32 below 1: torch.rand's range is [0, 1)


def _is_scalar_draw(func, out) -> bool:
    return (flops.op_name(func) == "aten::rand" and isinstance(out, torch.Tensor)
            and out.dim() == 0 and out.is_floating_point())


def _run(func, args, kwargs, phase: str, known: "KnownValues"):
    """The op on fake tensors, or for real where `_concrete` says so."""
    _same_dtype(func, args)
    _indices_in_range(func, args)
    strict = _DTYPE_STRICT_FAKES.get(flops.op_name(func))
    if strict is not None and strict[1](args):
        # Not tried first: a failing fake kernel logs its traceback, and a log handler that keeps
        # the record (pytest's) keeps every tensor of the step alive with its frames.
        return strict[0](func, args, kwargs)
    try:
        out = func(*args, **kwargs)
    except (DataDependentOutputException, DynamicOutputShapeException):
        # .item(), .all() or nonzero() of a real tensor: its value is known, read it.
        stale = known.stale
        name = flops.op_name(func)
        if _all_real(args, kwargs, stale):
            known.read(name, phase)
            with unset_fake_temporarily():
                return func(*args, **kwargs)
        shaped = _SHAPED_BY_VALUES.get(name)
        if shaped is None or not _known(_value_args(func, args, kwargs), stale):
            raise
        known.read(name, phase)
        return shaped(*args, **kwargs)

    if phase in ("forward", "loss") and _is_scalar_draw(func, out):
        # One random number drawn in the step, to branch on (LayerDrop: `torch.rand([]) <
        # layerdrop` skips a layer): taken at the top of its range, so that no layer is skipped
        # and the figures are the step that runs every layer, the most memory and FLOPs.
        known.read(flops.op_name(func), phase)
        with unset_fake_temporarily():
            return torch.full((), TOP_DRAW, dtype=out.dtype)
    if phase in ("forward", "loss") and known.routing and routing.is_routing(func, args, kwargs):
        # A router's choice of experts: the routing assumed (graphcalc.routing), known for real.
        values, indices = out
        if indices.numel() <= CONCRETE_NUMEL:
            known.route(int(args[0].shape[-1]), int(indices.shape[-1]))
            with unset_fake_temporarily():
                indices = routing.assigned(tuple(indices.shape), int(args[0].shape[-1]),
                                           known.routing)
            return values, indices
    if _concrete(func, args, kwargs, out, phase, known.stale):
        with unset_fake_temporarily():
            out = func(*args, **kwargs)
    else:
        if _writes(func):
            # A real tensor written with fake values (`mask[:, 0] = x`): from now on its values
            # are unknown, so nothing computed from it runs for real any more.
            for t in _written(func, args, kwargs):
                if not _is_fake(t):
                    known.stale.add(t)
        if known.tracker is not None:
            # FakeTensorMode ran the op on fake conversions of its real arguments: a view or an
            # in-place result of a real tensor is its memory, not a new allocation.
            for real, fake in _aliased(func, args, kwargs, out):
                known.tracker.alias(fake, real)
    return out


_ALIASING: dict = {}  # op -> ((argument index, name, alias sets), (return index, alias sets))


def _aliasing(func):
    """Which arguments and returns of `func`'s schema alias one another, read once per op (the
    replay asks on every op; most alias nothing)."""
    found = _ALIASING.get(func)
    if found is None:
        schema = func._schema
        found = (tuple((i, a.name, frozenset(a.alias_info.before_set))
                       for i, a in enumerate(schema.arguments) if a.alias_info is not None),
                 tuple((i, frozenset(r.alias_info.before_set))
                       for i, r in enumerate(schema.returns) if r.alias_info is not None))
        _ALIASING[func] = found
    return found


def _aliased(func, args, kwargs, out):
    """(real argument, fake result) pairs where the schema says the result aliases it."""
    arguments, returns = _aliasing(func)
    if not returns:
        return
    sets = {}
    for i, name, alias_sets in arguments:
        t = args[i] if i < len(args) else kwargs.get(name)
        if isinstance(t, torch.Tensor) and not _is_fake(t):
            for s in alias_sets:
                sets[s] = t
    if not sets:
        return
    outs = out if isinstance(out, (tuple, list)) else (out,)
    for i, alias_sets in returns:
        o = outs[i] if i < len(outs) else None
        if _is_fake(o):
            for s in alias_sets:
                if s in sets:
                    yield sets[s], o
                    break


def _grouped_mm_fp32(func, args, kwargs):
    """aten::_grouped_mm on fp32 CPU tensors. Its fake kernel checks for bf16, as the CUDA kernel
    needs; the CPU kernel computes in any float dtype (what transformers' MoE layers run on a CPU
    in fp32). The shape comes from the meta kernel on bf16 stand-ins, the dtype is the inputs'."""
    a, b = args[0], args[1]
    low = [torch.empty_strided(t.shape, t.stride(), dtype=torch.bfloat16, device="meta")
           if isinstance(t, torch.Tensor) and t.is_floating_point() else
           t.to("meta") if isinstance(t, torch.Tensor) else t for t in args]
    with unset_fake_temporarily():
        shape = func(*low, **{k: v for k, v in kwargs.items() if k != "out_dtype"}).shape
    return a.new_empty(shape, dtype=kwargs.get("out_dtype") or a.dtype)


def _float_cpu(args) -> bool:
    tensors = [t for t in args[:2] if isinstance(t, torch.Tensor)]
    return all(t.device.type == "cpu" and t.dtype in (torch.float32, torch.float16)
               for t in tensors)


# Ops whose fake kernel refuses inputs the real CPU kernel takes: (shape function, applies when).
_DTYPE_STRICT_FAKES = {"aten::_grouped_mm": (_grouped_mm_fp32, _float_cpu)}


def _pack_padded(input, lengths, batch_first):
    """aten::_pack_padded_sequence with real lengths: data holds sum(lengths) rows of the fake
    input's features; batch_sizes[t] is the number of sequences longer than t (int64, CPU), as
    ATen's PackedSequence.cpp computes them."""
    with unset_fake_temporarily():
        steps = torch.arange(int(lengths.max()))
        batch_sizes = (lengths.unsqueeze(0) > steps.unsqueeze(1)).sum(1)
        rows = int(lengths.sum())
    data = input.new_empty((rows, *input.shape[2:]))
    return data, batch_sizes


def _ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=0, zero_infinity=False):
    """aten::_ctc_loss with known target lengths: the per-sample loss (B,) and log_alpha
    (B, T, 2 * max(target_lengths) + 1), which the CPU kernel keeps for backward (ATen's
    LossCTC.cpp allocates it so)."""
    with unset_fake_temporarily():
        longest = int(max(target_lengths)) if len(target_lengths) else 0
    steps, batch = log_probs.shape[0], log_probs.shape[1]
    return (log_probs.new_empty((batch,)),
            log_probs.new_empty((batch, steps, 2 * longest + 1)))


def _ctc_loss_backward(grad, log_probs, *args, **kwargs):
    """aten::_ctc_loss_backward: the gradient of log_probs, its shape."""
    return torch.empty_like(log_probs)


def _index_known(input, indices):
    """aten::index of a fake tensor by known indices (a real boolean mask, `x[mask]` and the
    backward of `x[mask] = 0`): the rows the mask selects, as the real kernel returns them."""
    with unset_fake_temporarily():
        longs = []
        for ix in indices:
            if ix is not None and ix.dtype == torch.bool:
                longs.extend(i.to("meta") for i in ix.nonzero(as_tuple=True))
            else:
                longs.append(None if ix is None else ix.to("meta"))
        shape = torch.ops.aten.index.Tensor(
            torch.empty_strided(input.shape, input.stride(), dtype=input.dtype, device="meta"),
            longs).shape
    return input.new_empty(shape)


# Ops whose output shape is set by the values of small real arguments (positions): the shapes
# come from those values, the data stays fake.
# (pad_packed_sequence is CompositeImplicit: its own ops, which read real batch_sizes, replay.)
_SHAPED_BY_VALUES = {"aten::_pack_padded_sequence": _pack_padded,
                     "aten::_ctc_loss": _ctc_loss,
                     "aten::_ctc_loss_backward": _ctc_loss_backward,
                     "aten::index": _index_known}
_VALUE_ARGS = {"aten::_pack_padded_sequence": (1,), "aten::_ctc_loss": (3,),
               "aten::_ctc_loss_backward": (4,), "aten::index": (1,)}


def _value_args(func, args, kwargs) -> tuple:
    return tuple(args[i] for i in _VALUE_ARGS.get(flops.op_name(func), ()) if i < len(args))


def _written(func, args, kwargs):
    schema = func._schema
    for i, a in enumerate(schema.arguments):
        if a.alias_info is not None and a.alias_info.is_write:
            t = args[i] if i < len(args) else kwargs.get(a.name)
            if isinstance(t, torch.Tensor):
                yield t


class StaleStorages:
    """The storages of real tensors written with fake values, for as long as they live. Kept by
    weak reference to the storage's Python object (preserved as long as the storage lives):
    keyed by address alone, a new real tensor (step 2's packed batch sizes) that the allocator
    placed where a stale one died was taken for stale, its values for unknown, and the replay
    failed or went around the layer, as the processes' allocation patterns fell."""

    def __init__(self):
        self._refs: dict[int, weakref.ref] = {}

    def add(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        self._refs[storage._cdata] = weakref.ref(storage)

    def __contains__(self, t: torch.Tensor) -> bool:
        storage = t.untyped_storage()
        ref = self._refs.get(storage._cdata)
        return ref is not None and ref() is storage

    def __len__(self) -> int:
        return sum(ref() is not None for ref in self._refs.values())


def _known(tree, stale: StaleStorages) -> bool:
    """No tensor in `tree` is fake or stale: their values are known (vacuously for none)."""
    return not any(_is_fake(t) or t in stale
                   for t in tree_leaves(tree) if isinstance(t, torch.Tensor))


def _all_real(args, kwargs, stale: StaleStorages) -> bool:
    """Some tensor among the arguments, and every one of them real and not stale."""
    has_tensor = any(isinstance(t, torch.Tensor) for t in tree_leaves((args, kwargs)))
    return has_tensor and _known((args, kwargs), stale)


def _concrete(func, args, kwargs, out, phase: str, stale: StaleStorages) -> bool:
    """Whether an op runs for real rather than on fake tensors: the batch's tensors (ids, masks,
    lengths, labels, a float attention mask), tensors made in the step from sizes alone
    (`torch.ones(batch, seq)`, positions), and what is computed from those alone, up to
    CONCRETE_NUMEL elements each (a larger batch tensor, an image batch at a training batch
    size, stays fake: its values are data, which models do not branch on).

    Models read those values: transformers skips building the attention mask when the padding
    mask is all ones (and always builds it for a fake mask), a packed sequence takes its size from
    the lengths, nn.TransformerEncoder tests whether a float mask is causal. Knowing them, the
    replay takes the branch the real step takes. The values are the example inputs': what
    `example_inputs(batch)` makes is what the prediction is for. Weights and everything computed
    from them stay fake, so nothing the size of an activation is allocated."""
    if phase not in ("batch", "forward", "loss"):
        return False  # the optimizer's step counters stay fake constants, as torch.optim expects
    if phase != "batch" and torch.Tag.nondeterministic_seeded in getattr(func, "tags", ()):
        # A draw in the step (layerdrop's torch.rand([])) would make the figures random: it
        # stays fake, and a branch on it is a value read as before.
        return False
    outs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
    if not outs or any(t.numel() > CONCRETE_NUMEL for t in outs):
        return False
    if any(isinstance(t, torch.Tensor) for t in tree_leaves((args, kwargs))):
        return _all_real(args, kwargs, stale)
    return True


# op -> argument positions of its weight, bias and running statistics
_MIXED_NORMS = {"aten::native_layer_norm": (2, 3), "aten::native_batch_norm": (1, 2, 3, 4),
                "aten::_native_batch_norm_legit": (1, 2, 3, 4),
                "aten::_native_batch_norm_legit_functional": (1, 2, 3, 4),
                "aten::native_group_norm": (1, 2)}
_LOW = (torch.bfloat16, torch.float16)


_WRITES: dict[Any, bool] = {}


def _writes(func) -> bool:
    """True for an op that writes into an argument (relu_, add_, out=), not for a view (read
    from its schema once per op)."""
    writes = _WRITES.get(func)
    if writes is None:
        schema = getattr(func, "_schema", None)
        writes = schema is None or any(a.alias_info is not None and a.alias_info.is_write
                                       for a in schema.arguments)
        _WRITES[func] = writes
    return writes


# --- the step ------------------------------------------------------------------------------------

def call_model(model: nn.Module, inputs):
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


LOSS_GIVEN = "loss()"  # the model file's loss(output, *inputs) (or summary's loss=)
LOSS_OWN = "output.loss"  # the model computes its own (Hugging Face with labels)
LOSS_MEAN = "output.mean()"  # neither: the mean of the first floating-point output


def default_loss(output, *args, **kwargs) -> torch.Tensor:
    return _default_loss(output)[0]


def _default_loss(output) -> tuple[torch.Tensor, str]:
    loss = getattr(output, "loss", None)
    if loss is None and isinstance(output, dict):
        loss = output.get("loss")
    if isinstance(loss, torch.Tensor):
        return loss, LOSS_OWN
    for t in tree_leaves(output):
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            return t.mean(), LOSS_MEAN
    raise model_fault(TypeError("the model's output holds no floating-point tensor to take a "
                                "loss of"))


class LossCallError(TypeError, ModelFault):
    """The model file's loss() cannot take the batch as the step passes it."""


def compute_loss(loss_fn, output, inputs, kind: list | None = None) -> torch.Tensor:
    """The step's loss: `loss_fn(output, *inputs)` (keywords for a dict batch), else the
    output's own `loss`, else its mean; `kind` (a list) is told which it was."""
    if loss_fn is None:
        loss, how = _default_loss(output)
        if kind is not None:
            kind.append(how)
        return loss
    if kind is not None:
        kind.append(LOSS_GIVEN)
    args, kwargs = ((output,), dict(inputs)) if isinstance(inputs, dict) else \
        ((output, *inputs), {}) if isinstance(inputs, (tuple, list)) else ((output, inputs), {})
    try:
        inspect.signature(loss_fn).bind(*args, **kwargs)
    except TypeError as e:
        passed = ("output, " + ", ".join(f"{k}=" for k in kwargs)) if kwargs else \
            f"output and {len(args) - 1} input(s)"
        raise LossCallError(f"loss() cannot take what the step passes it ({passed}): {e}") \
            from None
    except ValueError:  # a builtin without a signature: call it and see
        pass
    return loss_fn(*args, **kwargs)


def training_step(model, inputs, loss_fn, optimizer, *, amp_dtype=None, device_type="cpu",
                  on_phase: Callable[[str], None] = lambda phase: None,
                  loss_kind: list | None = None) -> None:
    """One step as the tutorials write it; `output` and `loss` live until the step returns."""
    optimizer.zero_grad(set_to_none=True)
    autocast = (torch.autocast(device_type, dtype=amp_dtype) if amp_dtype is not None
                else contextlib.nullcontext())
    on_phase("forward")
    with autocast:
        output = call_model(model, inputs)
        on_phase("loss")
        loss = compute_loss(loss_fn, output, inputs, loss_kind)
    on_phase("backward")
    loss.backward()
    on_phase("optimizer")
    optimizer.step()
    on_phase("end")


def example_batch(make_inputs: Callable[[int], Any], batch: int):
    """`make_inputs(batch)` drawn from a fixed seed, leaving the caller's random state alone: the
    prediction and a real measurement see the same values (random lengths, a random mask)."""
    from .loader import seeded

    with seeded(0):
        return make_inputs(batch)


def prepare_inputs(inputs, options: Options, device) -> Any:
    """The batch on `device`; floating inputs follow the model's dtype, as users of
    `model.to(dtype)` cast their batch (under autocast they stay fp32)."""
    seen = set()

    def prepare(t):
        if not isinstance(t, torch.Tensor):
            return t
        if options.amp is None and t.is_floating_point():
            t = t.to(options.torch_dtype)
        # one CPU tensor twice in the batch ({"input_ids": ids, "labels": ids}): each .to('cuda')
        # makes its own copy on the GPU
        again = id(t) in seen
        seen.add(id(t))
        return t.to(device, copy=again and options.device == "cuda")

    return tree_map(prepare, inputs)


@dataclass
class Replay:
    recorder: StepRecorder
    param_serials: set[int]
    batch_serials: set[int]
    grad_serials: set[int]
    state_serials: set[int]
    step_events: list[int]  # event index where each step starts
    fake_params: dict[str, torch.Tensor]
    inference_peak: int | None  # None: the forward fails under no_grad (inference_error says why)
    state_bytes: int
    # gradient and optimizer-state serials -> the parameter (its name in fake_params) they are for
    param_of_serial: dict[int, str] = field(default_factory=dict)
    # the step as a torch.fx.Graph of ATen ops (graphcalc.stepgraph), when asked for
    step_graph: Any = None
    inference_error: str = ""
    loss_kind: str = ""  # LOSS_GIVEN, LOSS_OWN or LOSS_MEAN: what the step took its loss from

    def categories(self) -> dict[int, str]:
        """Storage serial -> where its memory goes: parameters, gradients, optimizer_state,
        batch, activations or optimizer_temporaries (what step() makes and frees)."""
        names = {"optimizer": "optimizer_temporaries", "workspace": "workspace"}
        cats = {s: names.get(phase, "activations")
                for s, phase in self.recorder.serial_phase.items()}
        for serials, name in ((self.grad_serials, "gradients"),
                              (self.state_serials, "optimizer_state"),
                              (self.batch_serials, "batch"), (self.param_serials, "parameters")):
            cats.update(dict.fromkeys(serials, name))
        return cats


def fake_parameters(model: nn.Module, dtype: torch.dtype, device: str, *,
                    keep_storages: bool = True) -> dict[str, torch.Tensor]:
    """One fake tensor per distinct parameter and buffer, under every name it has (ties kept).

    With `keep_storages` (the model stays where it was built: a CPU step in the model's dtype), a
    tensor that `model.to(...)` leaves as it is keeps its storage: a view of a larger storage
    (`torch.hann_window(n)` is `n + 1` values narrowed to `n`; a buffer sliced from a bigger table)
    holds all of it, and two views of one storage hold it once, as the real tensors do. A tensor
    that changes dtype or device is copied, compactly, as `.to()` copies it."""
    made: dict[int, torch.Tensor] = {}
    bases: dict[int, torch.Tensor] = {}  # real storage -> its fake
    named: dict[str, torch.Tensor] = {}

    def new_fake(t: torch.Tensor, target: torch.dtype) -> torch.Tensor:
        if not keep_storages or target != t.dtype:
            return torch.empty(t.shape, dtype=target, device=device)
        storage = t.untyped_storage()
        base = bases.get(storage._cdata)
        if base is None:
            base = torch.empty(storage.nbytes() // t.element_size(), dtype=target, device=device)
            bases[storage._cdata] = base
        return base.as_strided(t.shape, t.stride(), t.storage_offset()).detach()

    def fake_of(t: torch.Tensor, is_param: bool) -> torch.Tensor:
        f = made.get(id(t))
        if f is None:
            f = new_fake(t, dtype if t.is_floating_point() else t.dtype)
            if is_param and t.requires_grad:
                f.requires_grad_(True)
            made[id(t)] = f
        return f

    for name, p in model.named_parameters(remove_duplicate=False):
        named[name] = fake_of(p, True)
    for name, b in model.named_buffers(remove_duplicate=False):
        if b is not None:
            named[name] = fake_of(b, False)
    return named


def fake_device(target: str) -> str:
    """The device the fake tensors live on: the CPU, for a CUDA target too, on a machine with CUDA
    or without (a CPU-only torch cannot make fake CUDA tensors, and both machines must print the
    same figures). What is CUDA's is replayed on them (graphcalc.cuda): the allocator's 512-byte
    blocks, the foreach optimizer kernels, CUDA's attention kernel choice and autocast lists, the
    cuBLAS workspaces."""
    return "cpu"


@contextlib.contextmanager
def _as_on_cuda(options: Options, rec: "StepRecorder | None" = None):
    """What a CUDA step runs that the CPU's kernels do not (graphcalc.cuda), while the replay
    runs; the attention kernels chosen go to `rec.sdpa_backends`."""
    if options.device != "cuda":
        yield
        return
    target = options.cuda_target
    sdpa = cuda.SdpaAsOnCuda(target)
    autocast = cuda.cuda_autocast(options.amp_dtype) if options.amp else contextlib.nullcontext()
    if rec is not None:
        rec.cublas_bytes = target.cublas_workspace_bytes
        rec.conv_workspaces = True
    try:
        with autocast, sdpa, cuda.cuda_dropout():
            yield
    finally:
        if rec is not None:
            rec.sdpa_backends = dict(sdpa.chosen)


@contextlib.contextmanager
def _heap_frozen():
    """What lives before the replay (torch, the model) is set aside from the collector while it
    runs (`gc.freeze`): a full collection, which the step graph's many nodes bring about, then
    scans only what the replay made (a ResNet-50 step: 0.05 s instead of 0.2-0.4 s). The replay's
    own objects, its fake tensors among them, are collected as before; what was set aside lived
    before it, and what of it turns into garbage meanwhile waits for a collection after it.
    Left alone where the process froze its own heap already."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@quietly
def replay(model: nn.Module, make_inputs: Callable[[int], Any], loss_fn, options: Options, *,
           opaque: dict[str, str] | None = None, graph: bool = False) -> Replay:
    """See `_replay`; the heap from before it set aside from the collector (`_heap_frozen`)."""
    with _heap_frozen():
        return _replay(model, make_inputs, loss_fn, options, opaque=opaque, graph=graph)


def _replay(model: nn.Module, make_inputs: Callable[[int], Any], loss_fn, options: Options, *,
            opaque: dict[str, str] | None = None, graph: bool = False) -> Replay:
    """Run `options.steps` training steps and one inference forward on fake tensors.

    `opaque` names layers (path -> why) to run around, not through (`graphcalc.opaque`).
    `graph`: also record the step as a torch.fx.Graph (`Replay.step_graph`, graphcalc.stepgraph),
    in the same pass."""
    opaque_layers = (OpaqueLayers(model, opaque, options.batch, options.torch_dtype,
                                  options.amp_dtype) if opaque else contextlib.nullcontext())
    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
    round_to = 512 if options.device == "cuda" else 1
    device = fake_device(options.device)
    rec = StepRecorder(round_to=round_to, device=options.device)
    rec.sdpa_backends = {}
    rec.values.routing = options.routing
    dtype = options.torch_dtype
    was_training = {m: m.training for m in model.modules()}
    param_paths = {}
    for path, mod in model.named_modules():
        for pname, p in mod.named_parameters(recurse=False):
            param_paths.setdefault(id(p), path)
    try:
        with fake_mode, _causal_masks_known(), _as_on_cuda(options, rec):
            with rec:
                fakes = fake_parameters(model, dtype, device,
                                        keep_storages=options.device == "cpu")
                originals = dict(model.named_parameters(remove_duplicate=False))
                param_serials = {rec.tracker.track(t) for t in fakes.values()}
                for name, f in fakes.items():
                    if name in originals:
                        rec.param_owner.setdefault(id(f), param_paths.get(id(originals[name]), ""))
                rec.phase = "batch"
                inputs = prepare_inputs(example_batch(make_inputs, options.batch), options,
                                        device)
                batch_serials = {rec.tracker.track(t) for t in tree_leaves(inputs)
                                 if isinstance(t, torch.Tensor)}
                if graph:
                    from .stepgraph import StepGraphBuilder

                    builder = StepGraphBuilder(rec.tracker, options.device)
                    builder.placeholders(fakes, inputs)
                    rec.step_graph = builder
                trainable = list({id(f): f for f in fakes.values() if f.requires_grad}.values())
                # Adagrad makes its state here: its step counters stay fake constants (_concrete)
                rec.phase = "setup"
                optimizer = make_optimizer(options.optimizer, trainable,
                                           foreach=True if options.device == "cuda" else None,
                                           fused=options.fused)
                grad_serials: set[int] = set()
                state_serials: set[int] = set()
                name_of = {}
                for name, f in fakes.items():
                    name_of.setdefault(id(f), name)
                param_of_serial: dict[int, str] = {}
                step_events = []
                loss_kind: list[str] = []
                model.train()
                with _reparametrize_module(model, fakes), rec.watching(model), opaque_layers:
                    for step in range(options.steps):
                        rec.step = step
                        rec.count_flops = step == 0
                        step_events.append(len(rec.tracker.events))
                        if rec.step_graph is not None:  # zero_grad's frees: the step's "end"
                            rec.step_graph.phase(step, "end", SETUP)

                        def on_phase(phase):
                            if phase == "optimizer":
                                for f in trainable:
                                    if f.grad is not None:
                                        serial = rec.tracker.serial(f.grad)
                                        grad_serials.add(serial)
                                        param_of_serial[serial] = name_of[id(f)]
                            rec.set_phase(phase)

                        with rec.saved_tensors() if step == 0 else contextlib.nullcontext():
                            training_step(model, inputs, loss_fn, optimizer, loss_kind=loss_kind,
                                          amp_dtype=options.amp_dtype, device_type=device,
                                          on_phase=on_phase)
                        step_state: set[int | None] = set()
                        for p, state in optimizer.state.items():
                            for t in state.values():
                                if isinstance(t, torch.Tensor):
                                    serial = rec.tracker.serial(t)
                                    step_state.add(serial)
                                    param_of_serial[serial] = name_of[id(p)]
                        state_serials |= step_state
                        state_bytes = sum(rec.tracker._bytes_of.get(s, 0) for s in step_state)
                    step_events.append(len(rec.tracker.events))
                    # the graph ends with the steps (what the optimizer's deletion frees is not
                    # the step's)
                    step_graph = rec.step_graph
                    if step_graph is not None:
                        rec.step_graph = None
                        step_graph = step_graph.finish()
                    rec.phase = "end"
                    rec.count_flops = False
                del optimizer
            with _reparametrize_module(model, fakes), opaque_layers:
                inference_peak, inference_error = _inference(model, inputs, fakes, options)
    except Exception as e:
        if not hasattr(e, "_graphcalc_owner"):
            e._graphcalc_owner = rec.error_owner or (rec.frames[-1][0] if rec.frames else "")
        raise
    finally:
        for m, t in was_training.items():
            m.training = t
        rec.tracker.close()
    rp = Replay(rec, param_serials, batch_serials, grad_serials - {None},
                state_serials - {None}, step_events, fakes, inference_peak, state_bytes,
                param_of_serial, step_graph, inference_error,
                loss_kind[0] if loss_kind else "")
    if step_graph is not None:
        step_graph.categories = rp.categories()
    return rp


class _FakeCounter(LiveCounter):
    """LiveCounter for the fake inference forward: ops on the batch's known values run for real,
    as in the training step (`_run`)."""

    def __init__(self, tracker: LiveStorages):
        super().__init__(tracker)
        self.values = KnownValues()
        self.values.tracker = tracker

    def run(self, func, args, kwargs):
        return _run(func, args, kwargs, "forward", self.values)


@contextlib.contextmanager
def _causal_masks_known():
    """nn.TransformerEncoder and nn.TransformerDecoder ask whether their mask is causal by
    comparing its values with a causal mask (`transformer._detect_is_causal_mask`), which fake
    tensors cannot answer: the whole encoder or decoder went opaque. The masks torch makes
    (`nn.Transformer.generate_square_subsequent_mask`) are remembered as they are made, so the
    answer is the real one: causal exactly when the size asked is theirs (one edited in place
    afterwards would be misread). Any other mask goes to torch's own check."""
    tmod = torch.nn.modules.transformer
    generate = getattr(tmod, "_generate_square_subsequent_mask", None)
    detect = getattr(tmod, "_detect_is_causal_mask", None)
    if generate is None or detect is None:
        yield
        return
    made: dict[int, weakref.ref] = {}

    def generate_remembered(sz, *args, **kwargs):
        mask = generate(sz, *args, **kwargs)
        made[id(mask)] = weakref.ref(mask)
        return mask

    def detect_known(mask, is_causal=None, size=None):
        ref = made.get(id(mask)) if is_causal is None and mask is not None else None
        if ref is None or ref() is not mask:
            return detect(mask, is_causal, size)
        sz = size if size is not None else mask.size(-2)
        return tuple(mask.shape) == (sz, sz)

    tmod._generate_square_subsequent_mask = generate_remembered
    tmod._detect_is_causal_mask = detect_known
    try:
        yield
    finally:
        tmod._generate_square_subsequent_mask = generate
        tmod._detect_is_causal_mask = detect


@contextlib.contextmanager
def _without_mha_fastpath():
    """nn.MultiheadAttention and nn.TransformerEncoder(Layer) take a fast path in eval mode under
    no_grad: fused kernels and, with a padding mask, nested tensors, which fake tensors cannot
    run (aten::_nested_tensor_from_mask has no fake kernel). Off, they run their plain path."""
    mha = getattr(torch.backends, "mha", None)
    if mha is None or not hasattr(mha, "set_fastpath_enabled"):
        yield
        return
    was = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(was)


def _inference(model, inputs, fakes, options: Options) -> tuple[int | None, str]:
    """Peak of a no-grad forward in eval mode: weights, batch and the live activations (of the
    attention layers' plain path: `_without_mha_fastpath`). A model whose forward needs grad
    (`retain_grad`, `torch.autograd.grad` inside it) fails there as it would for real: the
    training step is what was asked, so the inference peak is (None, why), not an error."""
    tracker = LiveStorages(round_to=512 if options.device == "cuda" else 1, keep_events=False)
    for t in {id(f): f for f in fakes.values()}.values():
        tracker.track(t)
    for t in tree_leaves(inputs):
        if isinstance(t, torch.Tensor):
            tracker.track(t)
    model.eval()
    autocast = (torch.autocast(fake_device(options.device), dtype=options.amp_dtype) if options.amp
                else contextlib.nullcontext())
    try:
        counter = _FakeCounter(tracker)
        counter.values.routing = options.routing
        with counter, torch.no_grad(), autocast, _without_mha_fastpath():
            output = call_model(model, inputs)
            del output
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return None, f"{type(e).__name__}: {first}"
    finally:
        tracker.close()
    return tracker.peak, ""
