"""Layers that read tensor values: analysed around, not through.

Fake tensors carry shapes, not values. A layer that calls `.item()` or `.tolist()`, branches on a
tensor (`if x.sum() > 0:`) or loops over tensor values cannot be replayed on them. Rather than
give up on the whole model, the analysis makes that one layer opaque and replays the rest:

- Its output shapes come from running a real copy of the layer alone, on small random inputs
  (batch 1, 2 and 3; the batch dimension of each output must grow linearly with the batch, or the
  layer's shapes depend on values and it is refused). Nothing is allocated at the analysed batch.
- In the replay the layer becomes one autograd node that returns empty tensors of those shapes and,
  in backward, zero gradients for its inputs and parameters: the memory the rest of the step holds
  for its output and its gradients is counted; what the layer itself computes and keeps is not.
- The report names the layer and the reason, and marks the figures incomplete (as it does for an op
  without a FLOP formula); `--strict` turns that into exit 1.
"""

from __future__ import annotations

import contextlib
import copy
import linecache
import traceback
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn
from torch._subclasses.fake_tensor import DataDependentOutputException, DynamicOutputShapeException
from torch.fx.experimental.symbolic_shapes import GuardOnDataDependentSymNode
from torch.utils._python_dispatch import _disable_current_modes
from torch.utils._pytree import tree_flatten, tree_unflatten

from graphcalc.errors import TraceError

DATA_DEPENDENT = (DataDependentOutputException, GuardOnDataDependentSymNode,
                  DynamicOutputShapeException)
SEED = 0  # probes are deterministic and leave the caller's random state alone
_TORCH_DIR = str(Path(torch.__file__).resolve().parent)
_HERE = str(Path(__file__).resolve().parents[1])  # graphcalc, every stage of it


def is_data_dependent(e: BaseException) -> bool:
    while e is not None:
        if isinstance(e, DATA_DEPENDENT):
            return True
        e = e.__cause__ or e.__context__
    return False


def reason_of(e: BaseException) -> str:
    """'reads tensor values at FILE:LINE `code`', from the innermost frame of the model's code."""
    where = None
    for frame in traceback.extract_tb(e.__traceback__):
        name = str(Path(frame.filename).resolve())
        if not name.startswith((_TORCH_DIR, _HERE)) and "<" not in frame.filename:
            where = frame
    if where is None:
        return "reads tensor values (.item(), .tolist() or a branch on a tensor)"
    code = (where.line or linecache.getline(where.filename, where.lineno)).strip()
    return f"reads tensor values at {Path(where.filename).name}:{where.lineno} `{code}`"


class _Out(NamedTuple):
    """A tensor the opaque layer returns: its shape at the analysed batch, and its dtype."""

    shape: tuple[int, ...]
    dtype: torch.dtype


def _real_copy(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A real CPU copy of `module` alone: its own weights if it has them, else fresh ones."""
    real = copy.deepcopy(module)
    tensors = list(real.parameters()) + list(real.buffers())
    if any(t.is_meta for t in tensors):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SEED)
            real = _materialise(real)
    return real.to(dtype=dtype) if dtype.is_floating_point else real


def _materialise(real: nn.Module) -> nn.Module:
    """Meta weights have no values: give them fresh ones, as the layer's own init would."""
    real = real.to_empty(device="cpu")
    with torch.no_grad():
        for p in real.parameters():
            p.normal_(0, 0.02)
        for b in real.buffers():
            b.zero_()
        for m in real.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
    return real


def _probe_leaf(t, batch: int, size: int, gen: torch.Generator):
    if not isinstance(t, torch.Tensor):
        return t
    shape = list(t.shape)
    # The batch is the first dimension of the analysed batch's size, not always dimension 0:
    # sequence-first inputs (S, B, E) carry it in dimension 1.
    if batch in shape:
        shape[shape.index(batch)] = size
    if t.is_floating_point():
        return torch.randn(shape, dtype=t.dtype, generator=gen)
    if t.dtype == torch.bool:
        return torch.ones(shape, dtype=torch.bool)
    return torch.zeros(shape, dtype=t.dtype)


class _Opaque(torch.autograd.Function):
    """One node for the whole layer: empty outputs, zero input gradients."""

    @staticmethod
    def forward(ctx, specs, device, *tensors):
        ctx.inputs = [(t.shape, t.dtype) for t in tensors]
        ctx.device = device
        outs = tuple(torch.empty(o.shape, dtype=o.dtype, device=device) for o in specs)
        ctx.mark_non_differentiable(*[o for o in outs if not o.is_floating_point()])
        return outs

    @staticmethod
    def backward(ctx, *grads):
        return (None, None, *[torch.zeros(shape, dtype=dtype, device=ctx.device)
                              for shape, dtype in ctx.inputs])


class OpaqueLayers:
    """Replace the forward of each named layer, for the time of a replay."""

    def __init__(self, model: nn.Module, layers: dict[str, str], batch: int,
                 dtype: torch.dtype, amp_dtype: torch.dtype | None):
        self.model, self.layers, self.batch = model, layers, batch
        self.amp_dtype = amp_dtype
        modules = dict(model.named_modules())
        self.real = {path: _real_copy(modules[path], dtype) for path in layers}

    def _outputs(self, path: str, module: nn.Module, leaves: list, spec):
        """The layer's output leaves at the analysed batch (an `_Out` for each tensor), from real
        runs of its copy at batch 1, 2 and 3 (or at the batch itself when it is that small)."""
        real = self.real[path]
        real.train(module.training)
        sizes = (self.batch,) if self.batch <= 3 else (1, 2, 3)
        runs = []
        with _disable_current_modes(), torch.no_grad(), torch.random.fork_rng(devices=[]):
            gen = torch.Generator().manual_seed(SEED)
            torch.manual_seed(SEED)
            amp = (torch.autocast("cpu", dtype=self.amp_dtype) if self.amp_dtype
                   else contextlib.nullcontext())
            for size in sizes:
                a, k = tree_unflatten([_probe_leaf(t, self.batch, size, gen) for t in leaves], spec)
                with amp:
                    runs.append(tree_flatten(real(*a, **k)))
        out_leaves, out_spec = runs[0]
        outs = []
        for i, leaf in enumerate(out_leaves):
            if not isinstance(leaf, torch.Tensor):
                outs.append(leaf)
                continue
            shapes = [run[0][i].shape for run in runs]
            if len(shapes) == 1:
                outs.append(_Out(tuple(shapes[0]), leaf.dtype))
                continue
            shape = []
            for s1, s2, s3 in zip(*shapes):
                if s3 - s2 != s2 - s1:
                    raise TraceError(f"layer '{path}' {self.layers[path]}, and its output shape "
                                     "depends on those values: it cannot be analysed statically")
                shape.append(s1 + (s2 - s1) * (self.batch - 1))
            outs.append(_Out(tuple(shape), leaf.dtype))
        return outs, out_spec

    def _forward(self, path: str, module: nn.Module):
        def forward(*args, **kwargs):
            leaves, spec = tree_flatten((args, kwargs))
            outs, out_spec = self._outputs(path, module, leaves, spec)
            tensors = [t for t in leaves if isinstance(t, torch.Tensor)]
            device = tensors[0].device if tensors else torch.device("cpu")
            grads_for = [t for t in tensors if t.is_floating_point() and t.requires_grad]
            grads_for += [p for p in module.parameters() if p.requires_grad]
            made = iter(_Opaque.apply([o for o in outs if isinstance(o, _Out)], device, *grads_for))
            return tree_unflatten([next(made) if isinstance(o, _Out) else o for o in outs],
                                  out_spec)

        return forward

    def __enter__(self):
        modules = dict(self.model.named_modules())
        for path in self.layers:
            modules[path].forward = self._forward(path, modules[path])
        return self

    def __exit__(self, *exc):
        modules = dict(self.model.named_modules())
        for path in self.layers:
            modules[path].__dict__.pop("forward", None)
        return False
