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
    # the tensors passed to the first forward call (positional arguments), as torchinfo shows
    input_shapes: tuple[tuple[int, ...], ...] = ()

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
    # forward FLOPs that activation checkpointing re-runs in backward: part of flops_backward, as
    # FlopCounterMode counts them on the real step
    flops_recompute: int = 0

    @property
    def flops(self) -> int:
        return self.flops_forward + self.flops_backward


@dataclass(frozen=True)
class Breakdown:
    parameters: int  # parameters and buffers
    gradients: int
    optimizer_state: int  # the optimizer's state tensors live at the peak
    batch: int
    activations: int  # forward activations, saved tensors, backward temporaries, the output
    workspace: int = 0  # cuBLAS/cuDNN workspaces of a CUDA step (graphcalc.gpu.cuda)
    # what optimizer.step() makes and frees, live at the peak (0 unless the peak is in step())
    optimizer_temporaries: int = 0

    @property
    def total(self) -> int:
        return (self.parameters + self.gradients + self.optimizer_state + self.batch
                + self.activations + self.workspace + self.optimizer_temporaries)

    @classmethod
    def of(cls, live: dict) -> "Breakdown":
        """From live bytes by STACK_CATEGORIES name (a Counter: a missing one is 0)."""
        return cls(parameters=live["parameters"], gradients=live["gradients"],
                   optimizer_state=live["optimizer_state"], batch=live["batch"],
                   activations=live["activations"], workspace=live["workspace"],
                   optimizer_temporaries=live["optimizer_temporaries"])


@dataclass(frozen=True)
class TimelinePoint:
    step: int  # 1 for the first step, as Memory.peak_step
    phase: str
    layer: str
    peak_bytes: int


# Where the memory goes on the timeline, in stacking order (bottom first): graphcalc.passes.timeline.
STACK_CATEGORIES = ("parameters", "gradients", "optimizer_state", "optimizer_temporaries",
                    "batch", "activations", "workspace")


@dataclass(frozen=True)
class StackPoint:
    """The live bytes by category after `event` events of the replay (the tracker's own count:
    the six figures sum to its live bytes there), in `phase` of `step`, inside `layer`."""

    event: int
    step: int  # 1 for the first step
    phase: str  # forward, loss, backward, optimizer; "end" for zero_grad and the step's end
    layer: str
    parameters: int
    gradients: int
    optimizer_state: int
    optimizer_temporaries: int
    batch: int
    activations: int
    workspace: int = 0  # cuBLAS workspaces of a CUDA step

    @property
    def total(self) -> int:
        return sum(getattr(self, c) for c in STACK_CATEGORIES)


@dataclass(frozen=True)
class PhaseSpan:
    """Events [start, end) of the replay ran `phase` of `step`."""

    step: int
    phase: str
    start: int
    end: int


@dataclass(frozen=True)
class Memory:
    device: str
    peak_bytes: int
    inference_peak_bytes: int | None  # None: the forward fails under no_grad (inference_error)
    breakdown: Breakdown
    first_step_peak_bytes: int
    steady_step_peak_bytes: int
    peak_step: int
    peak_phase: str
    peak_layer: str
    optimizer_state_bytes: int  # the optimizer's state tensors once created (steady state)
    optimizer_temporary_bytes: int  # temporaries of optimizer.step() live at the peak
    timeline: tuple[TimelinePoint, ...] = ()
    # The stacked timeline across the replayed steps (graphcalc.passes.timeline): every point of a small
    # step, the lowest and highest of each stretch of a big one, and always the peak's event.
    timeline_stack: tuple[StackPoint, ...] = ()
    timeline_phases: tuple[PhaseSpan, ...] = ()
    # a CUDA step: the attention kernels chosen as CUDA would (graphcalc.gpu.cuda), and the GPU
    attention_kernels: tuple[str, ...] = ()
    cuda_target: str = ""
    # how much more is held after the last step than after the one before (0 in a steady
    # state): a model that keeps something from every step grows without bound
    step_growth_bytes: int = 0
    # why there is no inference peak: the model's forward fails under no_grad in eval mode
    inference_error: str = ""


@dataclass(frozen=True)
class GpuFit:
    """The step on a GPU: what the caching allocator reserves (graphcalc.gpu.allocator, simulated
    over the replay's allocations and frees), the CUDA context beside it, and whether the sum
    fits the card (graphcalc.gpu.gpus). Without a card (`--device cuda` alone) there is no verdict."""

    gpu: str | None  # "H100 SXM 80GB"; None for --memory alone or --device cuda alone
    gpu_key: str | None  # "h100-sxm", as --gpu takes it
    compute_capability: str | None  # "sm90"
    note: str | None  # how an ambiguous name was read
    capacity_bytes: int | None  # the memory the driver gives a process (or --memory)
    capacity_source: str | None
    # torch.cuda.max_memory_allocated as the allocator counts it: each block handed out, with
    # the remainder it did not split off (an 11 MiB tensor in a 12 MiB segment is 12 MiB)
    peak_allocated_bytes: int
    peak_reserved_bytes: int  # torch.cuda.max_memory_reserved: the segments held at the peak
    segments_at_peak: int
    reserved_peak_step: int  # where reserved first reaches its peak, as Memory.peak_step
    reserved_peak_phase: str
    reserved_peak_layer: str
    expandable_segments: bool
    # Informational: the workspace torch's cuBLAS handle takes through the caching allocator on
    # this card. The replay allocates it as a tensor of the step where a real run does, so it
    # is already inside the allocated and reserved figures: not added again.
    cublas_workspace_bytes: int | None
    cuda_context_bytes: int  # assumed for the device total (graphcalc.gpu.gpus.CUDA_CONTEXT_BYTES)
    cuda_context_range: tuple[int, int]  # what it is seen to be, by GPU, driver and kernels
    device_total_bytes: int  # peak reserved + CUDA context: what nvidia-smi would show
    headroom_bytes: int | None  # capacity - device total (negative: does not fit)
    fits: bool | None  # None without a capacity
    short_by_bytes: int | None  # when it does not fit: the most the allocator was short by
    released_cache: bool  # it fits only because the allocator returned cached segments
    # False under --world-size/--shard: the per-rank figures are adjusted from one rank's
    # replay, not a stream of allocations, so the device total is peak allocated + context
    reserved_simulated: bool = True
    caveats: tuple[str, ...] = ()  # what the card cannot do of the step asked for (bf16 on sm75)
    # cuDNN's convolution workspaces are estimated (graphcalc.gpu.cuda.conv_workspace): the largest
    # one; and what the verdict keeps free beyond the device total (graphcalc.gpu.gpu_fit: 2% of the
    # allocated peak, or a third of an estimated workspace live at the peak)
    estimated_bytes: int = 0
    estimate_margin_bytes: int = 0

    @property
    def required_bytes(self) -> int:
        """What the step needs of the card: the device total when it fits (within the capacity
        when the allocator had to return its cache), else the capacity plus the shortfall."""
        if self.fits is False and self.short_by_bytes is not None and self.reserved_simulated:
            return self.capacity_bytes + self.short_by_bytes
        return self.device_total_bytes

    def to_dict(self) -> dict:
        d = asdict(self)
        d["cuda_context_range"] = list(self.cuda_context_range)
        d["caveats"] = list(self.caveats)
        return d


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
    # the picture's input and output nodes (torchview's): (batch tensor, shape, dtype, FlowNode
    # keys that read it) and (the FlowNode key that made it or None, shape, dtype)
    flow_inputs: tuple = field(default=(), repr=False)
    flow_outputs: tuple = field(default=(), repr=False)
    # (op, layers) where the step read values of the example inputs (a padding mask, lengths):
    # the figures are for those values (graphcalc.fake.values._concrete)
    value_reads: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # FLOPs by ATen op (op, calls, forward, backward), the costliest first (fvcore's by-operator)
    op_flops: tuple[tuple[str, int, int, int], ...] = ()
    # mixture-of-experts routers (layer, experts, k) and the routing assumed at them
    routers: tuple[tuple[str, int, int], ...] = ()
    routing: str = "balanced"
    routing_peaks: tuple[tuple[str, int], ...] = ()  # (routing, peak bytes) of each routing
    # per-rank figures under --world-size/--shard (graphcalc.ranks.distributed.Distributed), else None
    distributed: Any = None
    gpu: GpuFit | None = None  # --device cuda: reserved memory, and with a GPU the verdict
    # activation checkpointing: the module paths run under torch.utils.checkpoint, and the FLOPs
    # each re-runs in backward ("(checkpoint in the model)" for the model's own checkpoint calls)
    checkpointed: tuple[str, ...] = ()
    recompute: tuple[tuple[str, int], ...] = ()
    # what the step's loss was: "loss()" (the model file's), "output.loss" (the model's own) or
    # "output.mean()" (neither was there: the figures are for a step on the output's mean)
    loss: str = ""
    # a CPU step's memory budget (analyze --device cpu --memory SIZE): the verdict is the peak
    # against it (a GPU's budget is `gpu`'s)
    cpu_budget_bytes: int | None = None
    schema_version: int = SCHEMA_VERSION

    @property
    def complete(self) -> bool:
        """False when some op had no FLOP formula or some layer was opaque (it reads tensor
        values): the FLOP totals are then a lower bound; or when a kernel that ran allocates
        memory the replay does not model (`memory_gaps`): the peak is then a lower bound."""
        return (not self.unknown_ops and not self.opaque and not self.memory_gaps
                and not self.memory.step_growth_bytes)

    @property
    def incomplete_reasons(self) -> tuple[str, ...]:
        """Why the figures are incomplete, a short clause each (empty when complete)."""
        ops = (f"no FLOP formula for {', '.join(op for op, _ in self.unknown_ops)}",) \
            if self.unknown_ops else ()
        grows = (f"the memory held after each step grows by {self.memory.step_growth_bytes:,} B "
                 "a step (the model keeps something from every step: the peak has no bound)",) \
            if self.memory.step_growth_bytes else ()
        return (ops + tuple(f"layer '{path}' {why}" for path, why in self.opaque)
                + tuple(f"peak memory of {where}: {why}" for where, why in self.memory_gaps)
                + grows)

    @property
    def needed_bytes(self) -> int:
        """What the device must hold for the step: on a GPU (--gpu, --memory, --device cuda) the
        device total (the allocator's reserved peak + the CUDA context), else the peak."""
        if self.gpu is not None:
            return self.gpu.required_bytes
        return self.memory.peak_bytes

    @property
    def cpu_budget(self) -> dict | None:
        """The CPU verdict (--device cpu --memory): the peak against the budget."""
        if self.cpu_budget_bytes is None:
            return None
        peak, budget = self.memory.peak_bytes, self.cpu_budget_bytes
        return {"budget_bytes": budget, "peak_bytes": peak, "fits": peak <= budget,
                "headroom_bytes": budget - peak, "complete": self.complete}

    def to_dict(self) -> dict:
        mem = asdict(self.memory)
        mem["timeline"] = [asdict(p) for p in self.memory.timeline]
        mem["timeline_stack"] = [asdict(p) for p in self.memory.timeline_stack]
        mem["timeline_phases"] = [asdict(p) for p in self.memory.timeline_phases]
        mem["attention_kernels"] = list(self.memory.attention_kernels)
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
            "loss": self.loss,
            "flops_by_op": [{"op": op, "calls": n, "forward": f, "backward": b}
                            for op, n, f, b in self.op_flops],
        } | ({"checkpointing": {"modules": list(self.checkpointed),
                                "recompute_flops": dict(self.recompute)}}
             if self.checkpointed or self.recompute else {}) \
          | ({"distributed": self.distributed.to_dict()} if self.distributed is not None else {}) \
          | ({"gpu": self.gpu.to_dict()} if self.gpu is not None else {}) \
          | ({"cpu_budget": self.cpu_budget} if self.cpu_budget_bytes is not None else {})

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
# by graphcalc.output.formatting (`register_renderer`), which graphcalc's __init__ imports: the report
# stays plain data and never imports its renderers.
RENDERERS: dict[str, Callable[[Report], str]] = {}


def register_renderer(kind: str, render: Callable[[Report], str]) -> None:
    RENDERERS[kind] = render


def _renderer(kind: str) -> Callable[[Report], str]:
    try:
        return RENDERERS[kind]
    except KeyError:
        raise RuntimeError(f"no {kind} renderer for Report: import graphcalc.output.formatting") from None


def _layer_dict(layer: Layer) -> dict:
    d = asdict(layer)
    d["output_shapes"] = [list(s) for s in layer.output_shapes]
    d["input_shapes"] = [list(s) for s in layer.input_shapes]
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
