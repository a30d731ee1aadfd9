"""The layer graph: layers as nodes carrying their figures, tensor flow as edges carrying shapes.

Built with networkx from what the replay saw flow between modules in forward (a tensor made by
one module's op and read by another's). `depth` folds deeper modules into their ancestor, as
`Report.at_depth` folds the rows, so a picture at any depth has the same figures as the table.
"""

from __future__ import annotations

import networkx as nx

from .report import Report, ancestor


def layer_graph(report: Report, depth: int | None = None) -> nx.DiGraph:
    folded = report.at_depth(depth)
    g = nx.DiGraph()
    for layer in folded.layers:
        g.add_node(layer.name, layer=layer)
    names = set(g.nodes)

    def node_of(name: str) -> str | None:
        if depth is not None:
            name = ancestor(name, depth) if name.count(".") + 1 > depth else name
        while name not in names and "." in name:
            name = name.rsplit(".", 1)[0]
        return name if name in names else None

    for src, dst, shape in report.edges:
        a, b = node_of(src), node_of(dst)
        if a is not None and b is not None and a != b:
            g.add_edge(a, b, shape=shape)
    return g


def execution_order(report: Report, depth: int | None = None) -> list[str]:
    """Layers in the order their forward first ran.

    A parent's own ops (a residual add written in its forward) belong to the parent's node, so the
    graph can hold a cycle through the parent; the order of first execution is the honest one."""
    names = {layer.name for layer in report.at_depth(depth).layers}
    order: list[str] = []
    for name in report.run_order:
        if depth is not None and not name.startswith("[") and name.count(".") + 1 > depth:
            name = ancestor(name, depth)
        if name in names and name not in order:
            order.append(name)
    return order
