"""The layer graph: layers as nodes carrying their figures, tensor flow as edges carrying shapes.

Built with networkx from the first forward's flow (`Report.flow`, `Report.edges`: the step graph's
op nodes contracted by stretch, `graphpasses.layer_flow`): a tensor made by one stretch of the
forward and read by another. A node is one
call of a layer, as torchview draws each call: a module called three times is three nodes,
`pool (call 2/3)`, never one node with edges looping back. A module whose children are in view
has a node for each run of its own ops between its children (the residual add after them, the
torch.cat of a skip), `b1 (own ops 2)`, so an edge into the add never leaves from the relu.
`depth` folds deeper layers into their ancestor's call, as `Report.at_depth` folds the rows.
"""

from __future__ import annotations

import networkx as nx

from graphcalc.report import ROOT, Report, ancestor


def _has_children(names: set[str]) -> set[str]:
    out = set()
    for n in names:
        if n.startswith("["):
            continue
        if n != ROOT:
            out.add(ROOT)
        parts = n.split(".")
        out.update(".".join(parts[:i]) for i in range(1, len(parts)))
    return out & names


def node_name(layer: str, call: int, calls: int, part_index: int) -> str:
    """`pool`, `pool (call 2/3)`, `b1 (own ops 2)`: the node's id, and its title in the SVG."""
    tags = [f"call {call}/{calls}"] if calls > 1 else []
    if part_index > 1:
        tags.append(f"own ops {part_index}")
    return f"{layer} ({', '.join(tags)})" if tags else layer


def layer_graph(report: Report, depth: int | None = None) -> nx.DiGraph:
    """Nodes carry `layer` (the Layer, folded at `depth`), `call`, `calls`, `part` (0: the whole
    call; n: its n-th run of own ops), `shapes`, `out_bytes`, `ops`, `rank` (run order) and
    `carrier` (the layer's first node, which carries its figures); edges carry `shape`. The
    graph's `inputs` (batch tensor, shape, dtype, the node ids reading it) and `outputs` (the
    node id that made it or None, shape, dtype) are the picture's input and output nodes."""
    folded = report.at_depth(depth)
    layers = {layer.name: layer for layer in folded.layers}
    names = set(layers)
    parents = _has_children(names)
    flows = {f.key: f for f in report.flow}

    def node_of(name: str) -> str | None:
        if depth is not None:
            name = ancestor(name, depth) if name.count(".") + 1 > depth else name
        while name not in names and "." in name:
            name = name.rsplit(".", 1)[0]
        return name if name in names else None

    def fold(key):
        name, call, part = key
        target = node_of(name)
        if target is None:
            return None
        if target != name:  # a deeper layer: into the call of its ancestor it ran in
            context = dict(flows[key].context) if key in flows else {}
            return (target, context.get(target, 1), 0)
        return (target, call, part if target in parents else 0)

    groups: dict[tuple, list] = {}
    for f in report.flow:
        k = fold(f.key)
        if k is not None:
            groups.setdefault(k, []).append(f)
    edges: dict[tuple, tuple[int, ...]] = {}
    for a, b, shape in report.edges:
        fa, fb = fold(a), fold(b)
        if fa is not None and fb is not None and fa != fb:
            edges.setdefault((fa, fb), shape)
    touched = {k for e in edges for k in e}
    # A module drawn as a box around its children is drawn by its own ops where tensors flow.
    keep = [k for k in groups if k[0] not in parents or k in touched]
    calls = {}
    for f in report.flow:
        calls[f.layer] = max(calls.get(f.layer, 0), f.call)
    keep.sort(key=lambda k: min(f.order for f in groups[k]))
    ids, part_seen = {}, {}
    for k in keep:
        index = part_seen[k[:2]] = part_seen.get(k[:2], 0) + 1
        ids[k] = node_name(k[0], k[1], calls.get(k[0], 1), index if k[2] else 0)
    g = nx.DiGraph()
    carried = set()
    for k in keep:
        members = groups[k]
        whole = flows.get((k[0], k[1], 0)) if k[2] == 0 else None
        last = whole or max(members, key=lambda f: f.order)
        g.add_node(ids[k], layer=layers[k[0]], call=k[1], calls=calls.get(k[0], 1), part=k[2],
                   shapes=last.shapes, out_bytes=whole.out_bytes if whole else 0,
                   ops=tuple(op for f in members if f.part for op in f.ops),
                   rank=min(f.order for f in members), carrier=k[0] not in carried)
        carried.add(k[0])
    for name, layer in layers.items():  # never called: its weights are used by another's ops
        if name not in carried and name not in parents:
            g.add_node(name, layer=layer, call=0, calls=0, part=0, shapes=layer.output_shapes,
                       out_bytes=layer.activation_bytes, ops=(), rank=len(report.flow),
                       carrier=True)
    for (a, b), shape in edges.items():
        if a in ids and b in ids:
            g.add_edge(ids[a], ids[b], shape=shape)
    # torchview's input and output nodes, their ends folded as the edges are
    g.graph["inputs"] = tuple(
        (batch, shape, dtype, tuple(dict.fromkeys(ids[k] for k in map(fold, to) if k in ids)))
        for batch, shape, dtype, to in report.flow_inputs)
    g.graph["outputs"] = tuple((ids.get(fold(k)) if k is not None else None, shape, dtype)
                               for k, shape, dtype in report.flow_outputs)
    return g


def execution_order(report: Report, depth: int | None = None) -> list[str]:
    """Layers in the order their forward first ran."""
    names = {layer.name for layer in report.at_depth(depth).layers}
    order: list[str] = []
    for name in report.run_order:
        if depth is not None and not name.startswith("[") and name.count(".") + 1 > depth:
            name = ancestor(name, depth)
        if name in names and name not in order:
            order.append(name)
    return order
