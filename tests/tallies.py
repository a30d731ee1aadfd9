"""The independent account the graph passes are checked against (tests/test_stepgraph.py).

`TallyingRecorder` is the replay's recorder plus per-layer tallies kept as the ops go by: each
op's MACs and bias adds forward and backward (or its name, where it has no formula), what each
layer's calls returned and were handed, and the storages autograd saved while it ran. The
report reads none of this: its figures are passes over the step graph
(graphcalc.passes.graphpasses). `tallied_layers` turns the tallies into the report's rows, so
a test can compare the two accounts of the same replay row by row.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils._pytree import tree_leaves

from graphcalc import flops
from graphcalc.commands.analyze import _parameter_rows
from graphcalc.fake.replay import LOSS, Replay, StepRecorder
from graphcalc.fake.stepgraph import layer_name
from graphcalc.report import Layer
from graphcalc.units import dtype_name


@dataclass
class LayerTally:
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


class TallyingRecorder(StepRecorder):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.layers: dict[str, LayerTally] = defaultdict(LayerTally)
        self.unknown: Counter = Counter()

    def _count(self, func, args, kwargs, out, owner: str):
        cost = super()._count(func, args, kwargs, out, owner)
        layer = self.layers[owner]
        if cost is None:
            name = flops.op_name(func)
            self.unknown[name] += 1
            layer.unknown[name] += 1
        elif self.phase == "backward":
            layer.macs_backward += cost.macs
        else:
            layer.macs_forward += cost.macs
            layer.bias_adds_forward += cost.bias_adds
        return cost

    def _saved(self, path: str, serial: int, nbytes: int) -> None:
        self.layers[path].saved[serial] = nbytes
        super()._saved(path, serial, nbytes)

    def _returned(self, path: str, call: int, args, output) -> None:
        layer = self.layers[path]
        if layer.input_shapes is None:
            layer.input_shapes = [tuple(t.shape) for t in tree_leaves(args)
                                  if isinstance(t, torch.Tensor)]
        layer.calls += 1
        tensors = [t for t in tree_leaves(output) if isinstance(t, torch.Tensor)]
        layer.output_bytes += sum(t.numel() * t.element_size() for t in tensors)
        if layer.output_shapes is None:
            layer.output_shapes = [tuple(t.shape) for t in tensors]
            layer.output_dtype = dtype_name(tensors[0].dtype) if tensors else None
        super()._returned(path, call, args, output)


def tallied_layers(model: nn.Module, rp: Replay) -> tuple[Layer, ...]:
    """The report's rows from a TallyingRecorder's tallies (each module, the loss where it ran
    ops, and any owner outside the model)."""
    tallies = rp.recorder.layers
    prows = _parameter_rows(model)
    names = [path for path, _ in model.named_modules()]
    types = {path: type(mod).__name__ for path, mod in model.named_modules()}
    if LOSS in tallies:
        names.append(LOSS)
        types[LOSS] = "loss"
    out = []
    for path in names:
        t = tallies.get(path)
        params, trainable, buffers, shared = prows.get(path, (0, 0, 0, ()))
        macs_f = t.macs_forward if t else 0
        macs_b = t.macs_backward if t else 0
        out.append(Layer(
            name=layer_name(path), type=types[path],
            depth=0 if path in ("", LOSS) else path.count(".") + 1,
            output_shapes=tuple(tuple(int(d) for d in s) for s in (t.output_shapes or ())) if t else (),
            output_dtype=t.output_dtype if t else None,
            params=params, trainable_params=trainable, frozen_params=params - trainable,
            buffers=buffers, flops_forward=2 * macs_f, flops_backward=2 * macs_b,
            macs_forward=macs_f, bias_adds_forward=t.bias_adds_forward if t else 0,
            activation_bytes=t.output_bytes if t else 0,
            saved_bytes=sum(t.saved.values()) if t else 0, calls=t.calls if t else 0,
            shared=shared, unknown_ops=tuple(sorted(t.unknown.items())) if t else (),
            input_shapes=tuple(tuple(int(d) for d in s) for s in (t.input_shapes or ()))
            if t else (),
        ))
    known = set(names)
    for path, t in tallies.items():
        if path not in known and (t.macs_forward or t.macs_backward or t.unknown):
            out.append(Layer(layer_name(path), "other", 0, (), None, 0, 0, 0, 0, 2 * t.macs_forward,
                             2 * t.macs_backward, t.macs_forward, t.bias_adds_forward, 0,
                             sum(t.saved.values()), t.calls, (),
                             tuple(sorted(t.unknown.items()))))
    return tuple(out)
