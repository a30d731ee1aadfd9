"""The report: plain frozen data, no formatting. Renderers and the CLI only read it.

`to_dict()` is the JSON contract (`SCHEMA_VERSION`); every byte and FLOP figure is an int.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable

SCHEMA_VERSION = 1
ROOT = "(root)"


@dataclass(frozen=True)
class Layer:
    name: str  # module path; "(root)" for the model itself, "[loss]" for the loss function
    type: str
    depth: int
    output_shapes: tuple[tuple[int, ...], ...]
    output_dtype: str | None
    params: int  # own parameters, each distinct parameter counted once, at its first owner
    trainable_params: int
    frozen_params: int
    buffers: int  # own buffer elements
    flops_forward: int
    flops_backward: int
    macs_forward: int
    bias_adds_forward: int
    activation_bytes: int  # bytes of the tensors the layer returns, over all its calls
    # bytes autograd keeps for backward that this layer is the first to save: a storage saved by
    # several layers (a ReLU's output, saved again by the pooling after it) counts at the first
    # one, so the rows sum to Totals.saved_bytes
    saved_bytes: int
    calls: int  # forward calls in the step; shapes are the first call's, bytes and FLOPs all calls'
    shared: tuple[str, ...] = ()  # "weight = transformer.wte.weight": parameters owned elsewhere
    unknown_ops: tuple[tuple[str, int], ...] = ()

    @property
    def flops(self) -> int:
        return self.flops_forward + self.flops_backward


@dataclass(frozen=True)
class Totals:
    params: int
    trainable_params: int
    frozen_params: int
    buffers: int
    flops_forward: int
    flops_backward: int
    macs_forward: int
    mult_adds_with_bias: int  # torchinfo's "mult-adds": MACs plus one add per bias and output
    saved_bytes: int

    @property
    def flops(self) -> int:
        return self.flops_forward + self.flops_backward


@dataclass(frozen=True)
class Breakdown:
    parameters: int  # parameters and buffers
    gradients: int
    optimizer_state: int  # state tensors, plus the optimizer's temporaries when the peak is in step()
    batch: int
    activations: int  # forward activations, saved tensors, backward temporaries, the output
    workspace: int = 0  # cuBLAS workspaces of a CUDA step (graphcalc.cuda), held for good

    @property
    def total(self) -> int:
        return (self.parameters + self.gradients + self.optimizer_state + self.batch
                + self.activations + self.workspace)


@dataclass(frozen=True)
class TimelinePoint:
    step: int  # 1 for the first step, as Memory.peak_step
    phase: str
    layer: str
    peak_bytes: int


@dataclass(frozen=True)
class Memory:
    device: str
    peak_bytes: int
    inference_peak_bytes: int
    breakdown: Breakdown
    first_step_peak_bytes: int
    steady_step_peak_bytes: int
    peak_step: int
    peak_phase: str
    peak_layer: str
    optimizer_state_bytes: int  # the optimizer's state tensors once created (steady state)
    optimizer_temporary_bytes: int  # temporaries of optimizer.step() live at the peak
    timeline: tuple[TimelinePoint, ...] = ()
    # a CUDA step: the attention kernels chosen as CUDA would (graphcalc.cuda), and the GPU
    attention_kernels: tuple[str, ...] = ()
    cuda_target: str = ""


@dataclass(frozen=True)
class FlowNode:
    """A stretch of the first forward a picture draws as a node, keyed (layer, call, part): one
    call of a layer (part 0), or one run of a module's own ops between its children (part 1, 2,
    ...). A module called three times has calls 1..3; a residual block's relu between its
    children and its add after them are parts 1 and 2."""

    layer: str
    call: int
    part: int
    context: tuple[tuple[str, int], ...]  # the (layer, call) it ran inside, outermost first
    order: int  # position of its first op in the forward
    shapes: tuple[tuple[int, ...], ...]  # what the call returned, or what the part made last
    out_bytes: int  # bytes the call returned (0 for a part)
    ops: tuple[str, ...]  # the ATen ops it ran itself, first run first

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.layer, self.call, self.part)


TRACER = "fake-tensor step replay (ATen dispatch)"
TRACER_OPAQUE = "fake-tensor step replay (ATen dispatch), with opaque layers"


@dataclass(frozen=True)
class Report:
    model: str
    config: dict
    totals: Totals
    memory: Memory
    layers: tuple[Layer, ...]
    unknown_ops: tuple[tuple[str, int], ...]
    tracer: str = TRACER
    opaque: tuple[tuple[str, str], ...] = ()  # (layer, why) analysed around, not through
    # (op or layer, why): a real kernel known to allocate what the replay does not count
    memory_gaps: tuple[tuple[str, str], ...] = ()
    # tensors of the first forward from one FlowNode (by key) to another, with the shape of one
    edges: tuple[tuple[tuple, tuple, tuple[int, ...]], ...] = field(default=(), repr=False)
    flow: tuple[FlowNode, ...] = field(default=(), repr=False)  # in run order
    run_order: tuple[str, ...] = field(default=(), repr=False)  # layers, first forward run first
    # (op, layers) where the step read values of the example inputs (a padding mask, lengths):
    # the figures are for those values (graphcalc.replay._concrete)
    value_reads: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # mixture-of-experts routers (layer, experts, k) and the routing assumed at them
    routers: tuple[tuple[str, int, int], ...] = ()
    routing: str = "balanced"
    routing_peaks: tuple[tuple[str, int], ...] = ()  # (routing, peak bytes) of each routing
    # per-rank figures under --world-size/--shard (graphcalc.distributed.Distributed), else None
    distributed: Any = None
    schema_version: int = SCHEMA_VERSION

    @property
    def complete(self) -> bool:
        """False when some op had no FLOP formula or some layer was opaque (it reads tensor
        values): the FLOP totals are then a lower bound; or when a kernel that ran allocates
        memory the replay does not model (`memory_gaps`): the peak is then a lower bound."""
        return not self.unknown_ops and not self.opaque and not self.memory_gaps

    @property
    def incomplete_reasons(self) -> tuple[str, ...]:
        """Why the figures are incomplete, a short clause each (empty when complete)."""
        ops = (f"no FLOP formula for {', '.join(op for op, _ in self.unknown_ops)}",) \
            if self.unknown_ops else ()
        return (ops + tuple(f"layer '{path}' {why}" for path, why in self.opaque)
                + tuple(f"peak memory of {where}: {why}" for where, why in self.memory_gaps))

    def to_dict(self) -> dict:
        mem = asdict(self.memory)
        mem["timeline"] = [asdict(p) for p in self.memory.timeline]
        return {
            "schema_version": self.schema_version,
            "model": self.model,
            "tracer": self.tracer,
            "config": dict(self.config),
            "totals": asdict(self.totals),
            "memory": mem,
            "layers": [_layer_dict(layer) for layer in self.layers],
            "unknown_ops": [{"op": op, "count": n} for op, n in self.unknown_ops],
            "opaque_layers": [{"layer": path, "reason": why} for path, why in self.opaque],
            "memory_gaps": [{"where": where, "reason": why} for where, why in self.memory_gaps],
            "input_values_read": [{"op": op, "layers": list(where)}
                                  for op, where in self.value_reads],
            "routing": {"assumed": self.routing,
                        "routers": [{"layer": path, "experts": e, "top_k": k}
                                    for path, e, k in self.routers],
                        "peak_bytes": dict(self.routing_peaks)} if self.routers else None,
            "complete": self.complete,
        } | ({"distributed": self.distributed.to_dict()} if self.distributed is not None else {})

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def to_pandas(self):
        """The layers as a pandas DataFrame (pandas is optional, never a hard dependency)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("to_pandas() needs pandas: pip install pandas") from None
        return pd.DataFrame([_layer_dict(layer) for layer in self.layers])

    def __str__(self) -> str:
        return _renderer("text")(self)

    def __rich__(self):
        from rich.text import Text

        return Text(str(self))

    def _repr_html_(self) -> str:
        return _renderer("html")(self)

    def at_depth(self, depth: int | None) -> "Report":
        """The same report with every layer deeper than `depth` folded into its ancestor."""
        if depth is None:
            return self
        return replace(self, layers=group_layers(self.layers, depth))


# How a report reads as text (`str(report)`: the terminal table) and in a notebook (HTML), set
# by graphcalc.formatting (`register_renderer`), which graphcalc's __init__ imports: the report
# stays plain data and never imports its renderers.
RENDERERS: dict[str, Callable[[Report], str]] = {}


def register_renderer(kind: str, render: Callable[[Report], str]) -> None:
    RENDERERS[kind] = render


def _renderer(kind: str) -> Callable[[Report], str]:
    try:
        return RENDERERS[kind]
    except KeyError:
        raise RuntimeError(f"no {kind} renderer for Report: import graphcalc.formatting") from None


def _layer_dict(layer: Layer) -> dict:
    d = asdict(layer)
    d["output_shapes"] = [list(s) for s in layer.output_shapes]
    d["shared"] = list(layer.shared)
    d["unknown_ops"] = [{"op": op, "count": n} for op, n in layer.unknown_ops]
    return d


def ancestor(name: str, depth: int) -> str:
    if name.startswith("[") or name == ROOT:
        return name
    parts = name.split(".")
    return ".".join(parts[:depth]) if depth > 0 else ROOT


_SUMMED = ("params", "trainable_params", "frozen_params", "buffers", "flops_forward",
           "flops_backward", "macs_forward", "bias_adds_forward", "saved_bytes")


def group_layers(layers: tuple[Layer, ...], depth: int) -> tuple[Layer, ...]:
    by_name = {layer.name: layer for layer in layers}
    sums: dict[str, dict] = {}
    order: list[str] = []
    for layer in layers:
        key = ancestor(layer.name, depth) if layer.depth > depth else layer.name
        if key not in sums:
            sums[key] = {f: 0 for f in _SUMMED}
            sums[key]["unknown"] = {}
            order.append(key)
        acc = sums[key]
        for f in _SUMMED:
            acc[f] += getattr(layer, f)
        for op, n in layer.unknown_ops:
            acc["unknown"][op] = acc["unknown"].get(op, 0) + n
    out = []
    for key in order:
        base = by_name[key]
        acc = sums[key]
        unknown = tuple(sorted(acc.pop("unknown").items()))
        out.append(replace(base, unknown_ops=unknown, **acc))
    return tuple(out)
