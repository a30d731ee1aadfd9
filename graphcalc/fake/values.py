"""What the replay knows of tensor values, and the ops it runs for real or shapes itself.

The batch's small tensors (ids, masks, lengths, labels) and what is computed from them alone run
for real (`_concrete`), so that the replay takes the branch the real step takes; a value read
into Python is recorded (`KnownValues.reads`); ops whose output shape depends on values the
replay knows (a packed sequence's lengths, CTC's targets, a known boolean mask) are shaped from
them; real kernels' checks that fake kernels skip (operand dtypes, an index past a position
table) are made here.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch._subclasses.fake_tensor import (DataDependentOutputException,
                                           DynamicOutputShapeException, FakeTensor,
                                           unset_fake_temporarily)
from torch.utils._pytree import tree_leaves

from graphcalc import flops, routing
from graphcalc.errors import model_fault
from graphcalc.units import dtype_name

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
