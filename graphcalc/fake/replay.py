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
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.nn.utils.stateless import _reparametrize_module
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from graphcalc import flops
from graphcalc.gpu import cuda
from graphcalc.fake import kernels
from graphcalc.dynamo import dynamo_deferred
from graphcalc.fake.opaque import OpaqueLayers
from graphcalc.options import Options, make_optimizer
from graphcalc.torchlogs import quietly
from graphcalc.fake.tracking import LiveCounter, LiveStorages
from graphcalc.fake.patches import (_as_on_cuda, _causal_masks_known, _heap_frozen,
                                    _saved_tensors_hooks_beside_checkpoints,
                                    _without_mha_fastpath)
from graphcalc.fake.step import (LOSS_GIVEN, LOSS_MEAN, LOSS_OWN, LossCallError,  # noqa: F401
                                 call_model, compute_loss, example_batch, prepare_inputs,
                                 training_step)
from graphcalc.fake.values import (KnownValues, _is_fake, _run, _storage_key,
                                   _storages_from_before, _writes)

LOSS = "[loss]"
OPTIMIZER = "[optimizer]"
SETUP = "[setup]"
PHASES = ("forward", "loss", "backward", "optimizer")


FlowKey = tuple[str, int, int]  # (module path, call 1..n, part: 0 the whole call, 1.. own-op runs)


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
        # cuBLAS workspaces (graphcalc.gpu.cuda): bytes of each, and thread -> the one it holds
        self.cublas_bytes = 0
        self.workspaces: dict[str, torch.Tensor] = {}
        # cuBLASLt's workspace (thread -> the one it holds) and cuDNN's convolution workspaces
        # (estimated: graphcalc.gpu.cuda.conv_workspace), on a CUDA target
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
        """The op's cost (None: no formula), for its graph node. (The tests' recorder also
        tallies it per layer as the ops go by: the graph passes' independent check.)"""
        return flops.cost_of(func, args, kwargs, out)

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
                self._returned(path, call, args, output)
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
                    self._saved(path, serial, self.tracker._bytes_of.get(serial, 0))
            # Detached, or an output saved by its own node would hold itself in a cycle and
            # outlive the step, which autograd's own saving avoids.
            self._packing = True
            try:
                return t.detach()
            finally:
                self._packing = False

        return _saved_tensors_hooks_beside_checkpoints(pack, lambda t: t)

    def _saved(self, path: str, serial: int, nbytes: int) -> None:
        """Autograd saved storage `serial` for the first time, while layer `path` ran."""
        if self.step_graph is not None:
            self.step_graph.saved(path, serial, nbytes)

    def _returned(self, path: str, call: int, args, output) -> None:
        """Call `call` of layer `path` (first step's forward) was handed `args`, returned
        `output`: a stretch of the graph's first forward, with the shapes of both."""
        if self.step_graph is not None:
            tensors = [t for t in tree_leaves(output) if isinstance(t, torch.Tensor)]
            inputs = tuple(tuple(t.shape) for t in tree_leaves(args)
                           if isinstance(t, torch.Tensor))  # torchinfo's input-size column
            self.step_graph.returned(path, call, tuple(self._call_stack) + ((path, call),),
                                     tensors, inputs)


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
    # the step as a torch.fx.Graph of ATen ops (graphcalc.fake.stepgraph), when asked for
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
    same figures). What is CUDA's is replayed on them (graphcalc.gpu.cuda): the allocator's 512-byte
    blocks, the foreach optimizer kernels, CUDA's attention kernel choice and autocast lists, the
    cuBLAS workspaces."""
    return "cpu"


@quietly
def replay(model: nn.Module, make_inputs: Callable[[int], Any], loss_fn, options: Options, *,
           opaque: dict[str, str] | None = None, graph: bool = False,
           recorder: type[StepRecorder] | None = None) -> Replay:
    """See `_replay`; the heap from before it set aside from the collector (`_heap_frozen`), and
    torch._dynamo loaded only if something in the step asks for more of it than fake tensors
    and optimizers do (`graphcalc.dynamo`)."""
    with _heap_frozen(), dynamo_deferred():
        return _replay(model, make_inputs, loss_fn, options, opaque=opaque, graph=graph,
                       recorder=recorder or StepRecorder)


def _replay(model: nn.Module, make_inputs: Callable[[int], Any], loss_fn, options: Options, *,
            opaque: dict[str, str] | None = None, graph: bool = False,
            recorder: type[StepRecorder] = StepRecorder) -> Replay:
    """Run `options.steps` training steps and one inference forward on fake tensors.

    `opaque` names layers (path -> why) to run around, not through (`graphcalc.fake.opaque`).
    `graph`: also record the step as a torch.fx.Graph (`Replay.step_graph`, graphcalc.fake.stepgraph),
    in the same pass. `recorder`: the dispatch mode that records (the tests hand a subclass that
    also tallies each layer's figures as the ops go by, to check the graph passes against)."""
    opaque_layers = (OpaqueLayers(model, opaque, options.batch, options.torch_dtype,
                                  options.amp_dtype) if opaque else contextlib.nullcontext())
    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
    round_to = 512 if options.device == "cuda" else 1
    device = fake_device(options.device)
    rec = recorder(round_to=round_to, device=options.device)
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
                    from graphcalc.fake.stepgraph import StepGraphBuilder

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
