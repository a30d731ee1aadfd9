"""Passes over the step graph (`graphcalc.fake.stepgraph.StepGraph`), each small and single-purpose as
torch.fx's own are: each reads `node.meta` and returns plain data; a node missing what a pass
needs raises `GraphError` naming the node (`node.format_node()`) and its layer.

- `layer_flops`: FLOPs forward and backward, bias adds and unknown ops per layer, from the first
  step's nodes (what the report's rows count);
- `flop_totals`: their sums (the report's totals);
- `memory_events`: every event of the step in order, from the nodes' `allocated` and `freed`
  (the tracker's own events, one for one), with the (step, phase, layer) it happened in;
- `memory_walk`: live bytes after each node, in node order, and the peak;
- `step_memory`: the walk by category: the peak and where it falls, the breakdown at the peak,
  each step's peak, the timeline of stretches and the stacked timeline (the report's Memory);
- `layer_graph`: the op graph contracted by module (networkx): a node per layer, an edge where a
  tensor one layer made is read by another;
- `layer_outputs`: calls, what they returned and what autograd saved, per layer;
- `layer_flow`: the picture's layer graph (networkx): the first forward contracted by stretch
  (a layer's call, or a run of a container's own ops), with the tensors layers pass through.
"""

from __future__ import annotations

import operator
from collections import Counter
from dataclasses import dataclass, field, replace

import torch.fx as fx
from torch.utils._pytree import tree_leaves

from graphcalc.errors import GraphcalcError
from graphcalc.fake.stepgraph import StepGraph, TensorValue, layer_name

FORWARD_PHASES = ("forward", "loss")


class GraphError(GraphcalcError):
    """A node of the step graph lacks what a pass reads."""


def _meta(node: fx.Node, key: str):
    try:
        return node.meta[key]
    except KeyError:
        raise GraphError(f"node {node.format_node()} (layer "
                         f"'{node.meta.get('module', '?')}') has no meta['{key}']") from None


@dataclass
class LayerFlops:
    flops_forward: int = 0
    flops_backward: int = 0
    bias_adds_forward: int = 0
    unknown: Counter = field(default_factory=Counter)  # op -> calls without a FLOP formula


def layer_flops(sg: StepGraph, step: int = 1) -> dict[str, LayerFlops]:
    """Per layer (the report's names), the FLOPs of step `step`'s forward, loss and backward."""
    out: dict[str, LayerFlops] = {}
    for node in sg.graph.nodes:
        if node.op != "call_function" or node.meta.get("step") != step:
            continue
        phase = _meta(node, "phase")
        if phase not in FORWARD_PHASES and phase != "backward":
            continue
        layer = out.setdefault(_meta(node, "module"), LayerFlops())
        flops = _meta(node, "flops")
        if flops is None:
            layer.unknown[str(node.target._overloadpacket._qualified_op_name)] += 1
        elif phase == "backward":
            layer.flops_backward += flops
        else:
            layer.flops_forward += flops
            layer.bias_adds_forward += _meta(node, "bias_adds")
    return out


def op_flops(sg: StepGraph, step: int = 1) -> tuple[tuple[str, int, int, int], ...]:
    """Per ATen op, as fvcore's by-operator table and FlopCounterMode's "Global" counts: (op,
    calls, FLOPs in forward and loss, FLOPs in backward) of step `step`, the costliest first;
    ops without a formula are left out (they are the report's unknown_ops)."""
    rows: dict[str, list[int]] = {}
    for node in sg.graph.nodes:
        if node.op != "call_function" or node.meta.get("step") != step:
            continue
        phase = _meta(node, "phase")
        flops = node.meta.get("flops")
        packet = getattr(node.target, "_overloadpacket", None)
        if not flops or packet is None or (phase not in FORWARD_PHASES and phase != "backward"):
            continue
        name = str(packet._qualified_op_name)
        row = rows.setdefault(name, [0, 0, 0])
        row[0] += 1
        row[1 if phase != "backward" else 2] += flops
    return tuple(sorted(((op, *row) for op, row in rows.items() if row[1] or row[2]),
                        key=lambda r: (-(r[2] + r[3]), r[0])))


@dataclass(frozen=True)
class FlopTotals:
    flops_forward: int
    flops_backward: int
    mult_adds_with_bias: int  # MACs forward plus a bias add per output (torchinfo's mult-adds)
    unknown: tuple[tuple[str, int], ...]


def flop_totals(per_layer: dict[str, LayerFlops]) -> FlopTotals:
    unknown: Counter = Counter()
    for row in per_layer.values():
        unknown.update(row.unknown)
    forward = sum(r.flops_forward for r in per_layer.values())
    return FlopTotals(forward, sum(r.flops_backward for r in per_layer.values()),
                      forward // 2 + sum(r.bias_adds_forward for r in per_layer.values()),
                      tuple(sorted(unknown.items())))


SETUP_LABEL = (1, "setup", "[setup]")
STEP_PHASES = ("forward", "loss", "backward", "optimizer", "end")


def _label(step: int, phase: str, module: str) -> tuple[int, str, str]:
    return (step, phase, module) if phase in STEP_PHASES else SETUP_LABEL


def memory_events(sg: StepGraph):
    """(x, node, label, serial, delta) for each event after the first placeholder, in order: `x`
    the tracker's events applied once it is (its index + 1), `label` the (step, phase, layer) it
    happened in: the node's, or a phase the step moved to after the node (`phase_marks`)."""
    x = sg.first_event
    for node in sg.graph.nodes:
        if node.op == "output":
            continue
        m = node.meta
        allocated, freed = _meta(node, "allocated"), _meta(node, "freed")
        if not allocated and not freed:
            continue
        label = _label(_meta(node, "step"), _meta(node, "phase"), _meta(node, "module"))
        for serial, delta in allocated:
            x += 1
            yield x, node, label, serial, delta
        marks = m.get("phase_marks", ())
        k = 0
        for i, (serial, delta) in enumerate(freed):
            while k < len(marks) and marks[k][0] <= i:
                label = _label(*marks[k][1:])
                k += 1
            x += 1
            yield x, node, label, serial, delta


def start_level(sg: StepGraph) -> int:
    return sum(b for _, b in sg.start_storages)


@dataclass(frozen=True)
class MemoryWalk:
    levels: tuple[int, ...]  # live bytes once each node's outputs exist (before what dies after)
    peak_bytes: int
    peak_node: str | None  # the node at the peak
    step_peaks: tuple[int, ...]  # the peak within each step's events


def memory_walk(sg: StepGraph) -> MemoryWalk:
    """Live bytes in node order: each node adds `allocates`, then `frees` die after it; the
    peak and each step's, event by event (`memory_events`)."""
    level = sg.live_before
    levels = []
    for node in sg.graph.nodes:
        if node.op == "output":
            continue
        level += _meta(node, "allocates")
        levels.append(level)
        level -= _meta(node, "frees")
    level = start_level(sg)
    peak, peak_node = level, None
    step_peaks: dict[int, int] = {}
    for _, node, (step, phase, _), _, delta in memory_events(sg):
        level += delta
        if level > peak:
            peak, peak_node = level, node.name
        if phase in STEP_PHASES:
            step_peaks[step] = max(step_peaks.get(step, 0), level)
    return MemoryWalk(tuple(levels), peak, peak_node,
                      tuple(step_peaks[s] for s in sorted(step_peaks)))


@dataclass(frozen=True)
class StepMemory:
    """The walk by category (`step_memory`)."""

    peak_bytes: int
    peak_where: tuple[int, str, str]  # (step, phase, layer) of the event at the peak
    at_peak: dict  # category -> live bytes at the peak
    step_peaks: tuple[int, ...]
    timeline: tuple  # report.TimelinePoint: the highest point of each (step, phase, layer) run
    stack: tuple  # report.StackPoint
    phases: tuple  # report.PhaseSpan
    step_ends: tuple[int, ...] = ()  # live bytes after each step's last event


def step_memory(sg: StepGraph) -> StepMemory:
    """Live bytes by category (`sg.categories`) from the storages live as the graph begins,
    event by event (`memory_events`): the peak (the first event reaching it), where it falls and
    what is live there; each step's peak; the highest point of each run of events in one (step,
    phase, layer), the phases' spans and the stacked timeline (graphcalc.passes.timeline's points) over
    the steps' events."""
    from graphcalc.report import PhaseSpan, TimelinePoint
    from graphcalc.passes.timeline import MAX_POINTS, chosen_events, stack

    cats = sg.categories
    by_cat: Counter = Counter()
    for serial, b in sg.start_storages:
        by_cat[cats.get(serial, "activations")] += b
    start_counts = Counter(by_cat)
    level = sum(by_cat.values())
    peak, peak_x, at_peak, peak_where = level, sg.first_event, dict(by_cat), SETUP_LABEL
    levels = [level]  # levels[x - sg.first_event]: live bytes after x events
    labels = [SETUP_LABEL]
    changes = []
    for x, _, label, serial, delta in memory_events(sg):
        cat = cats.get(serial, "activations")
        by_cat[cat] += delta
        level += delta
        levels.append(level)
        labels.append(label)
        changes.append((x, cat, delta))
        if level > peak:
            peak, peak_x, peak_where = level, x, label
            at_peak = dict(by_cat)
    base = sg.first_event
    # the steps' events: from the first in a step phase to the last
    in_steps = [i for i, lb in enumerate(labels) if i and lb[1] in STEP_PHASES]
    if not in_steps:
        return StepMemory(peak, peak_where, at_peak, (), (), (), ())
    first, last = in_steps[0], in_steps[-1]
    step_peaks: dict[int, int] = {}
    step_ends: dict[int, int] = {}
    timeline, spans = [], []
    run_label, run_peak = None, 0
    for i in range(first, last + 1):
        lb = labels[i]
        step_peaks[lb[0]] = max(step_peaks.get(lb[0], 0), levels[i])
        step_ends[lb[0]] = levels[i]
        if lb != run_label:
            if run_label is not None and run_label[1] != "end":
                timeline.append(TimelinePoint(*run_label, run_peak))
            run_label, run_peak = lb, levels[i]
        else:
            run_peak = max(run_peak, levels[i])
        if spans and (spans[-1].step, spans[-1].phase) == lb[:2]:
            spans[-1] = PhaseSpan(lb[0], lb[1], spans[-1].start, base + i)
        else:
            spans.append(PhaseSpan(lb[0], lb[1], base + i - 1, base + i))
    if run_label is not None and run_label[1] != "end":
        timeline.append(TimelinePoint(*run_label, run_peak))
    # The stack: x from the steps' start (the event before their first) to their last event.
    x0, x1 = base + first - 1, base + last
    offset = base - 1  # chosen_events reads the level at x as levels[x - 1]: shift by one
    keep = [x + offset for x in chosen_events(levels, x0 - offset, x1 - offset,
                                              peak_x - offset, MAX_POINTS)]

    def where(x: int) -> tuple[int, str, str]:
        return labels[x - base] if x > base else SETUP_LABEL

    start_changes = [(base, cat, b) for cat, b in start_counts.items()]
    points = stack(start_changes + changes, keep, where)
    return StepMemory(peak, peak_where, at_peak,
                      tuple(step_peaks[s] for s in sorted(step_peaks)), tuple(timeline),
                      points, tuple(spans), tuple(step_ends[s] for s in sorted(step_ends)))


def layer_graph(sg: StepGraph, step: int = 1, phases: tuple[str, ...] = FORWARD_PHASES):
    """The op graph of `phases` of step `step` contracted by module (a networkx DiGraph): nodes
    are layers with `flops` and `ops` (how many op nodes), edges carry `tensors` (how many op
    edges), an edge wherever a node of one layer reads what a node of another made. Inputs
    (placeholders, constants) are the node "[input]"."""
    import networkx as nx

    g = nx.DiGraph()

    def keep(node):
        return node.op == "call_function" and node.meta.get("step") == step \
            and node.meta.get("phase") in phases and not node.meta.get("view_of")

    for node in sg.graph.nodes:
        if not keep(node):
            continue
        layer = _meta(node, "module")
        if layer not in g:
            g.add_node(layer, flops=0, ops=0)
        g.nodes[layer]["ops"] += 1
        g.nodes[layer]["flops"] += _meta(node, "flops") or 0
        for src in node.all_input_nodes:
            while src.meta.get("view_of"):
                src = src.args[0]
            if keep(src):
                a = _meta(src, "module")
            elif src.op in ("placeholder", "get_attr"):
                a = "[input]"
                if a not in g:
                    g.add_node(a, flops=0, ops=0)
            else:
                continue
            if a != layer:
                if not g.has_edge(a, layer):
                    g.add_edge(a, layer, tensors=0)
                g.edges[a, layer]["tensors"] += 1
    return g


def _value(node: fx.Node) -> tuple[fx.Node, int | None]:
    """The (op node, part) a node stands for: a getitem node is part `i` of its op."""
    if node.op == "call_function" and node.target is operator.getitem:
        op, place = node.args[0], node.args[1]
        positions = op.meta.get("positions")  # a getitem reads a place; parts count tensors
        return op, positions.index(place) if positions is not None else place
    return node, None


MAX_PICTURE_OUTPUTS = 8  # a model returning a long tuple: its first tensors drawn


def layer_flow(sg: StepGraph):
    """The picture's layer graph: the first forward's op nodes contracted by stretch (meta
    `call`: a layer's call, or a run of a container's own ops between its children), as a
    networkx DiGraph. Nodes are the stretches' keys (layer, call, part) in the order they were
    first seen, with `order`, `context`, `shapes` (what a call returned, what a part made last),
    `out_bytes` and `ops` (the ATen ops they ran, first run first); an edge, with the `shape` of
    the first tensor on it and its `order` (first found first), wherever an op of one stretch
    reads a tensor another made. The graph's `inputs` are the batch tensors the stretches read
    (placeholder name, shape, dtype, the stretches reading it) and its `outputs` what the model's
    first call returned (the stretch that made it, shape, dtype). A layer
    that returns a tensor it did not make (meta `returns`) passes it on: the tensor flows into
    it and comes from it next, though it ran no op."""
    import networkx as nx

    from graphcalc.flops import op_name

    def name(key):
        return (layer_name(key[0]), key[1], key[2])

    g = nx.DiGraph()
    for key, c in sg.calls.items():
        g.add_node(name(key), context=tuple((layer_name(p), n) for p, n in c.context),
                   order=len(g), shapes=c.shapes, out_bytes=c.out_bytes, ops=[])
    made_by: dict[tuple[fx.Node, int | None], tuple] = {}  # (op node, part) -> its stretch

    edges = 0  # g.number_of_edges() sums every node's degree: quadratic in the layers

    def edge(src, dst, shape):
        nonlocal edges
        if src is not None and src != dst and not g.has_edge(src, dst):
            g.add_edge(src, dst, shape=shape, order=edges)
            edges += 1

    # torchview's input and output nodes: the batch tensors the forward (and the loss) read,
    # and what the model returned, with the stretches that read or made them
    inputs: dict[str, dict] = {}
    outputs: list[tuple] = []

    def described(arg: fx.Node, part=None):
        val = _meta(arg, "val")
        if part is not None and not isinstance(val, TensorValue):
            val = val[part]
        return (tuple(val.shape), str(val.dtype).removeprefix("torch.")) \
            if isinstance(val, TensorValue) else None

    for node in sg.graph.nodes:
        key = node.meta.get("call")
        if key is not None:
            here = name(key)
            if here not in g:
                raise GraphError(f"node {node.format_node()} (layer '{here[0]}') is in a stretch "
                                 f"the graph's calls do not list")
            for arg in tree_leaves(node.args):
                if isinstance(arg, fx.Node):
                    while arg.meta.get("view_of"):  # a view the step took: its source flows
                        arg = arg.args[0]
                    edge(made_by.get(_value(arg)), here, tuple(_meta(arg, "val").shape))
                    batch = arg.meta.get("input", "") if arg.op == "placeholder" else ""
                    if batch.startswith("batch_") and described(arg) is not None:
                        entry = inputs.setdefault(batch, {"value": described(arg), "to": []})
                        if here not in entry["to"]:
                            entry["to"].append(here)
            val = _meta(node, "val")
            single = isinstance(val, TensorValue)
            for part in [(node, None)] if single else [(node, i) for i in range(len(val))]:
                made_by[part] = here
            op = op_name(node.target)
            data = g.nodes[here]
            if not op.startswith("prim::") and op.removeprefix("aten::") not in data["ops"]:
                data["ops"].append(op.removeprefix("aten::"))
            if key[2] and (single or val):  # a part: what it made last is what it passes on
                data["shapes"] = (val.shape,) if single else tuple(v.shape for v in val)
        for key, sources in node.meta.get("returns", ()):
            if not key[0]:
                if key[1] == 1:  # the model's output, as its first call returned it
                    for src_node, part, shape in sources:
                        value = described(src_node, part)
                        if value is not None and len(outputs) < MAX_PICTURE_OUTPUTS:
                            outputs.append((made_by.get((src_node, part)), *value))
                continue
            here = name(key)
            for src_node, part, shape in sources:
                src = made_by.get((src_node, part))
                if src is not None and src[0] != here[0] and not src[0].startswith(here[0] + "."):
                    edge(src, here, shape)
                    made_by[(src_node, part)] = here
    g.graph["inputs"] = tuple((batch, *e["value"], tuple(e["to"]))
                              for batch, e in sorted(inputs.items(),
                                                     key=lambda kv: int(kv[0][6:])))
    g.graph["outputs"] = tuple(outputs)
    return g


@dataclass
class LayerOutputs:
    calls: int = 0  # forward calls of the first step that returned
    shapes: tuple[tuple[int, ...], ...] = ()  # what the first call returned
    inputs: tuple[tuple[int, ...], ...] = ()  # the shapes of the tensors it was handed
    dtype: str | None = None  # of its first tensor
    out_bytes: int = 0  # what every call returned, summed
    saved_bytes: int = 0  # storages saved for backward while it ran, each at its first save


def layer_outputs(sg: StepGraph) -> dict[str, LayerOutputs]:
    """Per layer: its calls, what they returned (`StepGraph.calls`) and what autograd saved
    for backward while it ran (meta `saves`)."""

    out: dict[str, LayerOutputs] = {}
    first: dict[str, int] = {}
    for (path, call, part), c in sg.calls.items():
        if part or not c.returned:
            continue
        name = layer_name(path)
        row = out.setdefault(name, LayerOutputs())
        if call < first.get(name, call + 1):
            first[name] = call
            row.shapes, row.dtype, row.inputs = c.shapes, c.dtype, c.inputs
        row.calls += 1
        row.out_bytes += c.out_bytes
    for node in sg.graph.nodes:
        for path, _, nbytes in node.meta.get("saves", ()):
            out.setdefault(layer_name(path), LayerOutputs()).saved_bytes += nbytes
    return out


# --- the report's figures from the graph ----------------------------------------------------------

def graph_outputs(layers, sg: StepGraph):
    """The report's layer rows with their calls, input and output shapes, dtype and bytes and
    their saved bytes from `layer_outputs`; and the step's saved bytes (every row's, with those of layers
    the report has no row for, were there any)."""
    per_layer = layer_outputs(sg)
    out = []
    for layer in layers:
        row = per_layer.get(layer.name, LayerOutputs())
        out.append(replace(layer, calls=row.calls, output_shapes=row.shapes,
                           output_dtype=row.dtype, activation_bytes=row.out_bytes,
                           saved_bytes=row.saved_bytes, input_shapes=row.inputs))
    return tuple(out), sum(row.saved_bytes for row in per_layer.values())


def graph_flops(layers, sg: StepGraph):
    """The report's layer rows with their FLOPs, MACs, bias adds and unknown ops from
    `layer_flops`; and the unknown ops of the step (op, calls)."""
    per_layer = layer_flops(sg)
    out = []
    for layer in layers:
        row = per_layer.get(layer.name, LayerFlops())
        out.append(replace(layer, flops_forward=row.flops_forward,
                           flops_backward=row.flops_backward,
                           macs_forward=row.flops_forward // 2,
                           bias_adds_forward=row.bias_adds_forward,
                           unknown_ops=tuple(sorted(row.unknown.items()))))
    missing = set(per_layer) - {layer.name for layer in layers}
    if missing:
        raise GraphError(f"the step graph has ops of layers the report has no row for: "
                         f"{', '.join(sorted(missing))}")
    return tuple(out), flop_totals(per_layer).unknown


def graph_memory(sg: StepGraph, *, device: str, inference_peak_bytes: int,
                 optimizer_state_bytes: int, attention_kernels: tuple[str, ...] = (),
                 cuda_target: str = ""):
    """The report's Memory from `step_memory`: the peak, where it falls and its breakdown, each
    step's peak and the timelines, all read from the graph. The inference peak (another
    forward, not this step) and the optimizer's state once made are handed in."""
    from graphcalc.report import Breakdown, Memory

    sm = step_memory(sg)
    c = Counter(sm.at_peak)
    step, phase, layer = sm.peak_where
    return Memory(
        device=device, peak_bytes=sm.peak_bytes, inference_peak_bytes=inference_peak_bytes,
        breakdown=Breakdown.of(c),
        first_step_peak_bytes=sm.step_peaks[0] if sm.step_peaks else 0,
        steady_step_peak_bytes=sm.step_peaks[-1] if sm.step_peaks else 0,
        peak_step=step, peak_phase=phase, peak_layer=layer,
        optimizer_state_bytes=optimizer_state_bytes,
        optimizer_temporary_bytes=c["optimizer_temporaries"],
        timeline=sm.timeline, timeline_stack=sm.stack, timeline_phases=sm.phases,
        attention_kernels=attention_kernels, cuda_target=cuda_target,
        step_growth_bytes=max(0, sm.step_ends[-1] - sm.step_ends[-2])
        if len(sm.step_ends) > 1 else 0)
