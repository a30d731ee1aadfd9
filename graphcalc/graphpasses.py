"""Passes over the step graph (`graphcalc.stepgraph.StepGraph`), each small and single-purpose as
torch.fx's own are: each reads `node.meta` and returns plain data; a node missing what a pass
needs raises `GraphError` naming the node (`node.format_node()`) and its layer.

- `layer_flops`: FLOPs forward and backward, bias adds and unknown ops per layer, from the first
  step's nodes (what the report's rows count);
- `flop_totals`: their sums (the report's totals);
- `memory_walk`: live bytes after each node, in node order, and the peak (the report's peak);
- `layer_graph`: the op graph contracted by module (networkx): a node per layer, an edge where a
  tensor one layer made is read by another.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch.fx as fx

from .errors import GraphcalcError
from .stepgraph import StepGraph

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


@dataclass(frozen=True)
class MemoryWalk:
    levels: tuple[int, ...]  # live bytes once each node's outputs exist (before what dies after)
    peak_bytes: int
    peak_node: str | None  # the node at the peak
    step_peaks: tuple[int, ...]  # the peak within each step's nodes


def memory_walk(sg: StepGraph) -> MemoryWalk:
    """Live bytes in node order: each node adds `allocates`, then `frees` die after it."""
    level = sg.live_before
    peak, peak_node = level, None
    levels = []
    step_peaks: dict[int, int] = {}
    for node in sg.graph.nodes:
        if node.op == "output":
            continue
        level += _meta(node, "allocates")
        levels.append(level)
        if level > peak:
            peak, peak_node = level, node.name
        step = node.meta.get("step", 0)
        if step:
            step_peaks[step] = max(step_peaks.get(step, 0), level)
        level -= _meta(node, "frees")
    return MemoryWalk(tuple(levels), peak, peak_node,
                      tuple(step_peaks[s] for s in sorted(step_peaks)))


def layer_graph(sg: StepGraph, step: int = 1, phases: tuple[str, ...] = FORWARD_PHASES):
    """The op graph of `phases` of step `step` contracted by module (a networkx DiGraph): nodes
    are layers with `flops` and `ops` (how many op nodes), edges carry `tensors` (how many op
    edges), an edge wherever a node of one layer reads what a node of another made. Inputs
    (placeholders, constants) are the node "[input]"."""
    import networkx as nx

    g = nx.DiGraph()

    def keep(node):
        return node.op == "call_function" and node.meta.get("step") == step \
            and node.meta.get("phase") in phases

    for node in sg.graph.nodes:
        if not keep(node):
            continue
        layer = _meta(node, "module")
        if layer not in g:
            g.add_node(layer, flops=0, ops=0)
        g.nodes[layer]["ops"] += 1
        g.nodes[layer]["flops"] += _meta(node, "flops") or 0
        for src in node.all_input_nodes:
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


# --- the report's figures from the graph ----------------------------------------------------------

def graph_flops(layers, sg: StepGraph):
    """The report's layer rows with their FLOPs, MACs, bias adds and unknown ops from
    `layer_flops`; and the unknown ops of the step (op, calls)."""
    from dataclasses import replace

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


def graph_memory(memory, sg: StepGraph):
    """The report's Memory with its peak and each step's peak from `memory_walk`."""
    from dataclasses import replace

    walk = memory_walk(sg)
    return replace(memory, peak_bytes=walk.peak_bytes,
                   first_step_peak_bytes=walk.step_peaks[0] if walk.step_peaks else 0,
                   steady_step_peak_bytes=walk.step_peaks[-1] if walk.step_peaks else 0)
