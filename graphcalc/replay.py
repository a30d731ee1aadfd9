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
import math
import weakref
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn
import torch._dynamo  # noqa: F401  (fake tensors import it on their first op; pay it at import)
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.nn.utils.stateless import _reparametrize_module
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map

from . import flops
from .opaque import OpaqueLayers
from .options import Options, make_optimizer
from .tracking import LiveCounter, LiveStorages

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
    output_dtype: str | None = None
    output_bytes: int = 0
    saved: dict[int, int] = field(default_factory=dict)  # storage serial -> bytes
    unknown: Counter = field(default_factory=Counter)


@dataclass
class Mark:
    """From event `event` on, the step ran `phase` of step `step` inside `owner`."""

    event: int
    step: int
    phase: str
    owner: str


class StepRecorder(TorchDispatchMode):
    def __init__(self, round_to: int = 1):
        super().__init__()
        self.tracker = LiveStorages(round_to=round_to, on_peak=self._on_peak)
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
        self.serial_owner: dict[int, str] = {}
        self.containers: set[str] = set()  # modules with children: their own views pass tensors on
        self.edges: dict[tuple[str, str], tuple[int, ...]] = {}
        self.marks: list[Mark] = []
        self.first_run: dict[str, None] = {}  # layers in the order their forward first ran
        self.peak_where: tuple[int, str, str] | None = None
        self.error_owner: str | None = None
        self._owner = SETUP

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

    def _mark(self, owner: str) -> None:
        self._owner = owner
        m = Mark(len(self.tracker.events), self.step, self.phase, owner)
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
        owner = self.current_owner()
        if self.count_flops and self.phase in ("forward", "loss"):
            self.first_run.setdefault(owner, None)
        if owner != self._owner:
            self._mark(owner)
        try:
            out = func(*args, **kwargs)
        except Exception:
            if self.error_owner is None:
                self.error_owner = owner
            raise
        out = _real_dtypes(func, args, out)
        if self.count_flops and self.phase in ("forward", "loss", "backward"):
            self._count(func, args, kwargs, out, owner)
        tracker = self.tracker
        first_new = tracker._next
        sizes = _real_sizes(func, args, out, kwargs)
        for i, t in enumerate(tree_leaves(out)):
            if isinstance(t, torch.Tensor):
                serial = tracker.track(t, sizes.get(i) if sizes else None)
                if serial is None:
                    continue
                if serial >= first_new:
                    self.serial_phase[serial] = self.phase
                    self.serial_owner[serial] = owner
                elif self.phase == "forward" and (_writes(func) or owner in self.containers):
                    # An in-place result, or a view made in a module's own forward (a flatten
                    # between two children): the tensor now comes from this layer. A leaf's
                    # internal view of its input (conv, embedding) keeps the input's producer.
                    self.serial_owner[serial] = owner
        return out

    def _count(self, func, args, kwargs, out, owner: str) -> None:
        cost = flops.cost_of(func, args, kwargs, out)
        layer = self.layers[owner]
        if cost is None:
            name = flops.op_name(func)
            self.unknown[name] += 1
            layer.unknown[name] += 1
            return
        if self.phase == "backward":
            layer.macs_backward += cost.macs
        else:
            layer.macs_forward += cost.macs
            layer.bias_adds_forward += cost.bias_adds
            self._edges(args, owner)

    def _edges(self, args, owner: str) -> None:
        for t in tree_leaves(args):
            if isinstance(t, torch.Tensor):
                src = self.serial_owner.get(self.tracker.serial(t))
                if src is not None and src != owner and src != SETUP:
                    self.edges.setdefault((src, owner), tuple(t.shape))

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
            self.frames.append((paths[id(mod)], torch.autograd._get_sequence_nr()))

        def post(mod, args, output):
            path, _ = self.frames.pop()
            if self.phase == "forward" and self.count_flops:
                self._record_output(path, output)

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
                if serial is not None and self.serial_phase.get(serial) in ("forward", "loss"):
                    self.layers[self.frames[-1][0]].saved[serial] = self.tracker._bytes_of.get(serial, 0)
            # Detached, or an output saved by its own node would hold itself in a cycle and
            # outlive the step, which autograd's own saving avoids.
            return t.detach()

        return torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)

    def _record_output(self, path: str, output) -> None:
        layer = self.layers[path]
        layer.calls += 1
        tensors = [t for t in tree_leaves(output) if isinstance(t, torch.Tensor)]
        layer.output_bytes += sum(t.numel() * t.element_size() for t in tensors)
        if layer.output_shapes is None:
            layer.output_shapes = [tuple(t.shape) for t in tensors]
            layer.output_dtype = str(tensors[0].dtype).replace("torch.", "") if tensors else None
        # A layer that returns a view of a tensor made outside it (Flatten, Identity) is where
        # that tensor comes from next; what its own layers made stays theirs.
        for t in tensors:
            serial = self.tracker.serial(t)
            src = self.serial_owner.get(serial)
            if src is not None and src != path and not src.startswith(path + ".") and path:
                self.serial_owner[serial] = path


# op -> argument positions of its weight, bias and running statistics
_MIXED_NORMS = {"aten::native_layer_norm": (2, 3), "aten::native_batch_norm": (1, 2, 3, 4),
                "aten::_native_batch_norm_legit": (1, 2, 3, 4),
                "aten::_native_batch_norm_legit_functional": (1, 2, 3, 4),
                "aten::native_group_norm": (1, 2)}
_LOW = (torch.bfloat16, torch.float16)


def _writes(func) -> bool:
    """True for an op that writes into an argument (relu_, add_, out=), not for a view."""
    schema = getattr(func, "_schema", None)
    if schema is None:
        return True
    return any(a.alias_info is not None and a.alias_info.is_write for a in schema.arguments)


def _real_dtypes(func, args, out):
    """The real CPU kernel of native_group_norm_backward returns a bf16/fp16 input's gradient in
    the input's dtype when the weight is fp32 (autocast); the fake one returns it in fp32, twice
    the bytes, which autograd then copies down. Cast as the real kernel returns it."""
    if flops.op_name(func) != "aten::native_group_norm_backward" or len(args) < 2:
        return out
    x, grad_input = args[1], out[0]
    if (isinstance(grad_input, torch.Tensor) and isinstance(x, torch.Tensor)
            and x.device.type == "cpu" and x.dtype in _LOW and grad_input.dtype != x.dtype):
        return (grad_input.to(x.dtype), *out[1:])
    return out


def _losses_keeping_their_buffer() -> dict[str, int]:
    """Loss ops (-> position of their reduction argument) whose real CPU kernel returns the
    reduced loss as a 0-d view of the unreduced elementwise buffer, so that the scalar holds
    input-sized memory until it dies; their fake kernels return a 4-byte scalar. Probed on the
    torch running (torch 2.13: mse_loss, smooth_l1_loss, soft_margin_loss, binary_cross_entropy)
    rather than listed, since a kernel may change that between releases."""
    aten = torch.ops.aten
    x, y = torch.full((2, 3), 0.5), torch.full((2, 3), 0.25)
    probes = {"aten::mse_loss": (lambda: aten.mse_loss(x, y, 1), 2),
              "aten::smooth_l1_loss": (lambda: aten.smooth_l1_loss(x, y, 1), 2),
              "aten::soft_margin_loss": (lambda: aten.soft_margin_loss(x, y, 1), 2),
              "aten::binary_cross_entropy": (lambda: aten.binary_cross_entropy(x, y, None, 1), 3)}
    found = {}
    for name, (probe, position) in probes.items():
        try:
            with torch.no_grad():
                if probe().untyped_storage().nbytes() == x.numel() * x.element_size():
                    found[name] = position
        except Exception:  # an op this torch lacks keeps the fake's size
            pass
    return found


_BUFFERED_LOSSES = _losses_keeping_their_buffer()


def _loss_buffer_size(name: str, args, kwargs, out) -> dict[int, int] | None:
    position = _BUFFERED_LOSSES.get(name)
    if position is None or not isinstance(out, torch.Tensor) or out.dim() != 0:
        return None
    reduction = kwargs.get("reduction", args[position] if len(args) > position else 1)
    x, target = args[0], args[1]
    if reduction == 0 or x.device.type != "cpu":
        return None
    shape = torch.broadcast_shapes(x.shape, target.shape)
    return {0: math.prod(shape) * out.element_size()}


_EMBEDDING_BAGS = ("aten::_embedding_bag", "aten::_embedding_bag_forward_only")
_BAG_FAST_SUM = (torch.float32, torch.float16, torch.bfloat16)


def _offset2bag_size(args, kwargs) -> dict[int, int] | None:
    """Output 1 of the CPU embedding-bag kernel (offset2bag, int64): none on its fast path (mode
    sum, a float/half/bf16 weight, no padding_idx), else indices + 1 entries (it is made one
    longer, then resized down). The fake kernel makes `indices` entries, and also for bf16 sums."""
    names = ("weight", "indices", "offsets", "scale_grad_by_freq", "mode", "sparse",
             "per_sample_weights", "include_last_offset", "padding_idx")
    given = dict(zip(names, args), **kwargs)
    weight, indices = given["weight"], given["indices"]
    if weight.device.type != "cpu":
        return None
    mode, padding_idx = given.get("mode", 0), given.get("padding_idx", -1)
    padding_idx = -1 if padding_idx is None else padding_idx
    fast = mode == 0 and weight.dtype in _BAG_FAST_SUM and padding_idx < 0
    return {1: 0 if fast else (indices.numel() + 1) * 8}


def _real_sizes(func, args, out, kwargs=None) -> dict[int, int] | None:
    """Output sizes where a fake kernel and the real CPU kernel disagree.

    The embedding bag's offset2bag (`_offset2bag_size`). A few CPU loss kernels return their
    reduced loss as a view of the unreduced buffer (`_losses_keeping_their_buffer`). Under
    autocast a norm gets a bf16/fp16 input with fp32 weights; the real CPU kernels then return
    the saved mean and inverse std in fp32, the fake kernels in the input's dtype (half the
    bytes). Outputs 1 and 2 of native_layer_norm / native_batch_norm / native_group_norm are
    those statistics."""
    name = flops.op_name(func)
    if name in _BUFFERED_LOSSES:
        return _loss_buffer_size(name, args, kwargs or {}, out)
    if name in _EMBEDDING_BAGS:
        return _offset2bag_size(args, kwargs or {})
    positions = _MIXED_NORMS.get(name)
    if positions is None or not args:
        return None
    x = args[0]
    params = [args[i] for i in positions if i < len(args) and isinstance(args[i], torch.Tensor)]
    if not (isinstance(x, torch.Tensor) and x.device.type == "cpu" and x.dtype in _LOW
            and any(p.dtype == torch.float32 for p in params)):
        return None
    return {i: t.numel() * 4 for i, t in enumerate(out[:3]) if i in (1, 2)
            and isinstance(t, torch.Tensor) and t.dtype in _LOW}


# --- the step ------------------------------------------------------------------------------------

def call_model(model: nn.Module, inputs):
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def default_loss(output, *args, **kwargs) -> torch.Tensor:
    loss = getattr(output, "loss", None)
    if loss is None and isinstance(output, dict):
        loss = output.get("loss")
    if isinstance(loss, torch.Tensor):
        return loss
    for t in tree_leaves(output):
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            return t.mean()
    raise TypeError("the model's output holds no floating-point tensor to take a loss of")


def compute_loss(loss_fn, output, inputs) -> torch.Tensor:
    fn = loss_fn or default_loss
    if isinstance(inputs, dict):
        return fn(output, **inputs)
    if isinstance(inputs, (tuple, list)):
        return fn(output, *inputs)
    return fn(output, inputs)


def training_step(model, inputs, loss_fn, optimizer, *, amp_dtype=None, device_type="cpu",
                  on_phase: Callable[[str], None] = lambda phase: None) -> None:
    """One step as the tutorials write it; `output` and `loss` live until the step returns."""
    optimizer.zero_grad(set_to_none=True)
    autocast = (torch.autocast(device_type, dtype=amp_dtype) if amp_dtype is not None
                else contextlib.nullcontext())
    on_phase("forward")
    with autocast:
        output = call_model(model, inputs)
        on_phase("loss")
        loss = compute_loss(loss_fn, output, inputs)
    on_phase("backward")
    loss.backward()
    on_phase("optimizer")
    optimizer.step()
    on_phase("end")


def prepare_inputs(inputs, options: Options, device) -> Any:
    """The batch on `device`; floating inputs follow the model's dtype, as users of
    `model.to(dtype)` cast their batch (under autocast they stay fp32)."""
    def prepare(t):
        if not isinstance(t, torch.Tensor):
            return t
        if options.amp is None and t.is_floating_point():
            t = t.to(options.torch_dtype)
        return t.to(device)

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
    inference_peak: int
    state_bytes: int
    # gradient and optimizer-state serials -> the parameter (its name in fake_params) they are for
    param_of_serial: dict[int, str] = field(default_factory=dict)

    def categories(self) -> dict[int, str]:
        """Storage serial -> where its memory goes: parameters, gradients, optimizer_state,
        batch, activations or optimizer_temporaries (what step() makes and frees)."""
        cats = {s: "optimizer_temporaries" if phase == "optimizer" else "activations"
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
    """The device the fake tensors live on. A prediction for CUDA on a machine without it runs on
    CPU fakes (a CPU-only torch cannot even make fake CUDA tensors) and keeps what is CUDA's: the
    allocator's 512-byte blocks and the foreach optimizer kernels. What stays CPU's: the autocast
    op lists and the SDPA kernel chosen."""
    if target == "cuda" and torch.cuda.is_available():
        return "cuda"
    return "cpu"


def replay(model: nn.Module, make_inputs: Callable[[int], Any], loss_fn, options: Options, *,
           opaque: dict[str, str] | None = None) -> Replay:
    """Run `options.steps` training steps and one inference forward on fake tensors.

    `opaque` names layers (path -> why) to run around, not through (`graphcalc.opaque`)."""
    opaque_layers = (OpaqueLayers(model, opaque, options.batch, options.torch_dtype,
                                  options.amp_dtype) if opaque else contextlib.nullcontext())
    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
    round_to = 512 if options.device == "cuda" else 1
    device = fake_device(options.device)
    rec = StepRecorder(round_to=round_to)
    dtype = options.torch_dtype
    was_training = {m: m.training for m in model.modules()}
    param_paths = {}
    for path, mod in model.named_modules():
        for pname, p in mod.named_parameters(recurse=False):
            param_paths.setdefault(id(p), path)
    try:
        with fake_mode, _causal_masks_known():
            with rec:
                fakes = fake_parameters(model, dtype, device,
                                        keep_storages=options.device == "cpu")
                originals = dict(model.named_parameters(remove_duplicate=False))
                param_serials = {rec.tracker.track(t) for t in fakes.values()}
                for name, f in fakes.items():
                    if name in originals:
                        rec.param_owner.setdefault(id(f), param_paths.get(id(originals[name]), ""))
                rec.phase = "batch"
                inputs = prepare_inputs(make_inputs(options.batch), options, device)
                batch_serials = {rec.tracker.track(t) for t in tree_leaves(inputs)
                                 if isinstance(t, torch.Tensor)}
                trainable = list({id(f): f for f in fakes.values() if f.requires_grad}.values())
                optimizer = make_optimizer(options.optimizer, trainable,
                                           foreach=True if options.device == "cuda" else None)
                grad_serials: set[int] = set()
                state_serials: set[int] = set()
                name_of = {}
                for name, f in fakes.items():
                    name_of.setdefault(id(f), name)
                param_of_serial: dict[int, str] = {}
                step_events = []
                model.train()
                with _reparametrize_module(model, fakes), rec.watching(model), opaque_layers:
                    for step in range(options.steps):
                        rec.step = step
                        rec.count_flops = step == 0
                        step_events.append(len(rec.tracker.events))

                        def on_phase(phase):
                            if phase == "optimizer":
                                for f in trainable:
                                    if f.grad is not None:
                                        serial = rec.tracker.serial(f.grad)
                                        grad_serials.add(serial)
                                        param_of_serial[serial] = name_of[id(f)]
                            rec.set_phase(phase)

                        with rec.saved_tensors() if step == 0 else contextlib.nullcontext():
                            training_step(model, inputs, loss_fn, optimizer,
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
                    rec.phase = "end"
                    rec.count_flops = False
                del optimizer
            with _reparametrize_module(model, fakes), opaque_layers:
                inference_peak = _inference(model, inputs, fakes, options)
    except Exception as e:
        if not hasattr(e, "_graphcalc_owner"):
            e._graphcalc_owner = rec.error_owner or (rec.frames[-1][0] if rec.frames else "")
        raise
    finally:
        for m, t in was_training.items():
            m.training = t
        rec.tracker.close()
    return Replay(rec, param_serials, batch_serials, grad_serials - {None},
                  state_serials - {None}, step_events, fakes, inference_peak, state_bytes,
                  param_of_serial)


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


def _inference(model, inputs, fakes, options: Options) -> int:
    """Peak of a no-grad forward in eval mode: weights, batch and the live activations (of the
    attention layers' plain path: `_without_mha_fastpath`)."""
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
        with LiveCounter(tracker), torch.no_grad(), autocast, _without_mha_fastpath():
            output = call_model(model, inputs)
            del output
    finally:
        tracker.close()
    return tracker.peak
