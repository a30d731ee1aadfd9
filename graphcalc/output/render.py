"""Pictures of a report: the layer graph with its figures on it, as DOT, SVG, PNG or PDF.

    report -> view (which layers are nodes, which are clusters, at which depth)
           -> DOT source (built here, no dependency) -> engine (svg, png, pdf bytes)

Nodes carry a layer's name, type, output shape, parameters, FLOPs and bytes, with exactly the
strings of the table (`units.format_count`, `units.format_bytes`); edges carry the shape of the
tensor that flows. A module whose children are in view is a dashed cluster labelled with the sums
of its layers; `depth` folds deeper layers into their ancestor, as `Report.at_depth` folds the
rows. Nodes are coloured by their share of the step's FLOPs, parameters or saved activation
bytes; the layer where the training peak falls has a thick blue border.

The engines that turn DOT into a picture are graphcalc.output.engines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from graphcalc.errors import RenderError
from graphcalc.output.engines import FORMATS, render_source
from graphcalc.output.formatting import breakdown_parts, inference_text
from graphcalc.passes.graph import layer_graph
from graphcalc.report import ROOT, Layer, Report
from graphcalc.units import format_bytes, format_count

COLOR_BY = ("flops", "memory", "params")
NODE_BUDGET = 60  # nodes past which the depth is chosen automatically
OPTIMIZER = "[optimizer]"

# One name Graphviz has metrics for: with a list ("Helvetica,Arial,sans-serif") the embedded engine
# measures text in Times, narrower than what a browser draws, and the header and labels overflow.
# Its SVG says "Helvetica,sans-Serif", which browsers draw in Arial or Liberation Sans, same widths.
FONT = "Helvetica"
PEAK_COLOR = "#2166ac"  # blue: it stands out on the yellow-to-red fills
PEAK_WIDTH = 4
# Shares of the total, lower edges; ColorBrewer YlOrRd, 5 classes.
BINS = ((0.25, "#bd0026", "white"), (0.10, "#f03b20", "white"), (0.04, "#fd8d3c", "black"),
        (0.01, "#fecc5c", "black"), (0.0, "#ffffb2", "black"))
ZERO_COLOR = "#ffffff"

_METRIC_TEXT = {"flops": "FLOPs (forward + backward)", "params": "parameters",
                "memory": "saved activation bytes (kept for backward)"}


def metric(layer: Layer, color_by: str) -> int:
    if color_by == "flops":
        return layer.flops
    if color_by == "params":
        return layer.params
    return layer.saved_bytes


def _format_metric(value: int, color_by: str) -> str:
    return format_bytes(value) if color_by == "memory" else format_count(value)


def max_depth(report: Report) -> int:
    return max((layer.depth for layer in report.layers), default=0)


def node_count(report: Report, depth: int | None) -> int:
    """Nodes the picture draws at `depth`: a module called 40 times in a loop draws 40."""
    return len(layer_graph(report, depth))


def auto_depth(report: Report, max_nodes: int = NODE_BUDGET) -> int | None:
    """The deepest depth whose nodes fit in `max_nodes`; None when every node fits."""
    if node_count(report, None) <= max_nodes:
        return None
    best = 0
    for d in range(max_depth(report)):
        if node_count(report, d) <= max_nodes:
            best = d
    return best


def _parent(name: str) -> str | None:
    if name == ROOT or name.startswith("["):
        return None
    return name.rsplit(".", 1)[0] if "." in name else ROOT


@dataclass(frozen=True)
class View:
    """What the picture shows: the layers at a depth, which are nodes, which are clusters."""
    report: Report  # folded at `depth`
    depth: int | None
    auto: bool  # depth chosen by the node budget
    max_nodes: int
    children: dict  # cluster name -> names of its children in view, run order
    clusters: tuple[str, ...]  # layers with children in view
    nodes: tuple[str, ...]  # node ids: one per call of a layer, one per run of a module's own ops
    edges: tuple[tuple[str, str, tuple[int, ...]], ...]
    peak: str | None  # the layer (or cluster) where the training peak falls
    folded: dict  # layer name -> how many layers it stands for (folded nodes only)
    rank: dict  # node -> position of its first op in the forward
    members: dict  # layer name -> its node ids, run order
    info: dict  # node id -> the layer graph's attributes (layer, call, calls, part, shapes, ...)
    layer: dict  # name -> Layer, folded at `depth`
    full_depth: int  # the deepest layer's depth, before folding
    top: tuple[str, ...]  # layers with no ancestor in view: the picture's outermost items
    runs: dict = field(default_factory=dict)  # folded run name -> repeats.Run (identical blocks)
    # torchview's input and output nodes: (batch tensor, shape, dtype, node ids reading it) and
    # (the node id that made it or None, shape, dtype)
    inputs: tuple = ()
    outputs: tuple = ()


def view(report: Report, depth: int | None = None, max_nodes: int = NODE_BUDGET,
         fold_repeats: bool | None = None) -> View:
    """Which layers the picture shows and how: `depth` None and more than `max_nodes` nodes
    picks the deepest depth that fits; a layer with children in view is a cluster. Runs of
    identical blocks are drawn once (graphcalc.passes.repeats) with `fold_repeats`, or when it is None
    and the picture at `depth` (None: all layers) would have more than `max_nodes` nodes."""
    runs: dict = {}
    if fold_repeats or (fold_repeats is None and node_count(report, depth) > max_nodes):
        from graphcalc.passes.repeats import fold_repeats as fold

        report, found = fold(report)
        runs = {r.name: r for r in found}
    auto = False
    if depth is None:
        depth = auto_depth(report, max_nodes)
        auto = depth is not None
    if depth is not None and depth >= max_depth(report):
        depth = None
    folded_report = report.at_depth(depth)
    names = [layer.name for layer in folded_report.layers]
    in_view = set(names)
    # Run order: a module ranks where its first layer ran, so clusters keep the flow's order.
    rank: dict[str, int] = {}
    for i, n in enumerate(report.run_order):
        while n is not None:
            rank.setdefault(n, i)
            n = _parent(n)
    position = {n: i for i, n in enumerate(names)}
    names.sort(key=lambda n: (rank.get(n, len(rank)), position[n]))

    def parent_in_view(name: str) -> str | None:
        p = _parent(name)
        while p is not None and p not in in_view:
            p = _parent(p)
        return p

    children: dict[str, list[str]] = {}
    for n in names:
        p = parent_in_view(n)
        if p is not None:
            children.setdefault(p, []).append(n)
    g = layer_graph(report, depth)
    info = dict(g.nodes(data=True))
    members: dict[str, list[str]] = {}
    for node in sorted(info, key=lambda n: info[n]["rank"]):
        members.setdefault(info[node]["layer"].name, []).append(node)
    edges = tuple((a, b, g.edges[a, b]["shape"]) for a, b in g.edges)
    clusters = tuple(n for n in names if n in children)
    nodes = tuple(node for n in names for node in members.get(n, ()))
    node_rank = {node: info[node]["rank"] for node in nodes}
    folded = {}
    if depth is not None:
        for layer in folded_report.layers:
            if layer.depth == depth and layer.name not in children:
                inside = sum(1 for x in report.layers if x.name.startswith(layer.name + "."))
                if inside:
                    folded[layer.name] = inside + 1
        if depth == 0 and ROOT in in_view:
            folded[ROOT] = sum(1 for x in report.layers if not x.name.startswith("["))
    nodes += (OPTIMIZER,)
    peak = report.memory.peak_layer
    if peak == OPTIMIZER:
        spot = OPTIMIZER
    else:
        spot = peak if peak in in_view else None
        p = peak
        while spot is None and p:
            p = _parent(p)
            spot = p if p in in_view else None
    top = tuple(n for n in names if parent_in_view(n) is None)
    layers = {x.name: x for x in folded_report.layers}
    return View(folded_report, depth, auto, max_nodes, children, clusters, nodes, edges, spot,
                folded, node_rank, members, info, layers, max_depth(report), top, runs,
                g.graph.get("inputs", ()), g.graph.get("outputs", ()))


def run_line(v: View, name: str) -> list[str]:
    """`figures: Σ 12 identical blocks, h.0 to h.11` under a folded run's title."""
    run = v.runs.get(name)
    if run is None:
        return []
    return [f"figures: Σ {len(run.members)} identical blocks, {run.members[0]} to "
            f"{run.members[-1]}"]


def shape_text(shape) -> str:
    return "×".join(str(d) for d in shape)


def _out_line(shapes, out_bytes: int) -> list[str]:
    """`out 4×6×3×3 +1 · 864 B`: the first tensor's shape, how many more, their bytes."""
    if shapes:
        extra = len(shapes) - 1
        out = f"out {shape_text(shapes[0])}" + (f" +{extra}" if extra else "")
        return [out + (f" · {format_bytes(out_bytes)}" if out_bytes else "")]
    return [f"out {format_bytes(out_bytes)}"] if out_bytes else []


def _figure_lines(layer: Layer, out: bool = True) -> list[str]:
    """The node's figures, each the table's string; zero figures are left out. `out` False
    leaves out what the layer returns (a module's own-ops node shows what its ops made)."""
    lines = _out_line(layer.output_shapes, layer.activation_bytes) if out else []
    parts = []
    if layer.params:
        parts.append(f"params {format_count(layer.params)}")
    if layer.shared:
        parts.append("shared")
    if layer.flops_forward:
        parts.append(f"FLOPs fwd {format_count(layer.flops_forward)}")
    if layer.flops_backward:
        parts.append(f"bwd {format_count(layer.flops_backward)}")
    if parts:
        lines.append(" · ".join(parts))
    if layer.saved_bytes:
        lines.append(f"saved {format_bytes(layer.saved_bytes)}")
    return lines


def _bin(share: float, value: int) -> tuple[str, str]:
    if value <= 0:
        return ZERO_COLOR, "black"
    for edge, fill, font in BINS:
        if share >= edge:
            return fill, font
    return BINS[-1][1], BINS[-1][2]


def legend_bins() -> list[tuple[str, str, str]]:
    """(text, fill, font colour) of each colour, lowest share first: '< 1%', '1%–4%', ..."""
    out = []
    ordered = BINS[::-1]
    for i, (edge, fill, font) in enumerate(ordered):
        upper = ordered[i + 1][0] if i + 1 < len(ordered) else None
        text = (f"≥ {edge:.0%}" if upper is None else
                f"< {upper:.0%}" if edge == 0 else f"{edge:.0%}–{upper:.0%}")
        out.append((text, fill, font))
    return out


def _q(text: str) -> str:
    """A DOT string: quotes and backslashes escaped, so no Graphviz escape (\\N) fires."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _centered(lines: list[str]) -> str:
    # Plain labels, no HTML: the WebAssembly Graphviz has no HTML-like labels.
    return "\\n".join(_q(line)[1:-1] for line in lines)


def _left(lines: list[str]) -> str:
    return "".join(_q(line)[1:-1] + "\\l" for line in lines)


def _attrs(attrs: dict) -> str:
    return ", ".join(f"{k}={v}" if k == "label" else f"{k}={_q(str(v))}" for k, v in attrs.items())


def _sum_lines(parts: list[tuple[str, int]], per_line: int = 3) -> list[str]:
    """`  = a + b + c`, `  + d + e`: the parts of the peak, three to a line."""
    terms = [f"{name} {format_bytes(value)}" for name, value in parts]
    return [("  = " if i == 0 else "  + ") + " + ".join(terms[i:i + per_line])
            for i in range(0, len(terms), per_line)]


def peak_text(report: Report) -> str:
    m = report.memory
    return f"▲ training peak {format_bytes(m.peak_bytes)} (step {m.peak_step} {m.peak_phase})"


OWN_OPS_FILL = "#d9d9d9"  # a module's later runs of own ops: grey, not a share of anything


def _ops_text(ops) -> str:
    return ", ".join(ops[:3]) + (", …" if len(ops) > 3 else "")


def _layer_lines(v: View, node: str) -> list[str]:
    """The title and figures of a layer's node: the first node carries the layer's figures (over
    all its calls); another call shows what that call returned."""
    info = v.info[node]
    layer, calls = info["layer"], info["calls"]
    own = layer.name in v.children
    tags = [f"call {info['call']}/{calls}"] if calls > 1 else []
    if own:
        tags.append("own ops")
    lines = [f"{layer.name} · {layer.type}" + (f" ({', '.join(tags)})" if tags else "")]
    if not info["carrier"]:
        return lines + _out_line(info["shapes"], info["out_bytes"])
    if calls <= 1 and not own:
        lines += _figure_lines(layer)
    else:
        lines += _out_line(info["shapes"], 0 if own else info["out_bytes"])
        figures = _figure_lines(layer, out=False)
        lines += figures
        if figures and calls > 1:
            lines.append(f"figures: Σ {calls} calls")
    if layer.name in v.folded:
        lines.append(f"folded: {v.folded[layer.name]} layers")
    return lines + ([] if own else run_line(v, layer.name))


def _node(v: View, name: str, color_by: str, total: int) -> str:
    report = v.report
    info = v.info.get(name)
    layer = info["layer"] if info else None
    if name == OPTIMIZER:
        m = report.memory
        lines = [f"optimizer.step() · {report.config['optimizer']}"]
        if m.optimizer_state_bytes:
            lines.append(f"state {format_bytes(m.optimizer_state_bytes)}")
        if m.optimizer_temporary_bytes:
            lines.append(f"temporaries at the peak {format_bytes(m.optimizer_temporary_bytes)}")
        attrs = {"fillcolor": "#eeeeee", "style": "rounded,filled,dashed"}
    elif layer.name in v.children and not info["carrier"]:
        # A later run of a module's own ops (the residual add, a torch.cat): its ops and what
        # they made; the figures are on the module's first own-ops node.
        lines = [_ops_text(info["ops"])] + [f"→ {shape_text(info['shapes'][0])}"
                                             ] * bool(info["shapes"])
        attrs = {"fillcolor": OWN_OPS_FILL, "fontsize": 8, "margin": "0.06,0.02",
                 "height": 0.2, "color": "#777777"}
    else:
        lines = _layer_lines(v, name)
        value = metric(layer, color_by)
        fill, font = _bin(value / total if total else 0.0, value)
        attrs = {"fillcolor": fill, "fontcolor": font}
        if layer.name in v.folded:
            attrs["peripheries"] = 2
    is_peak = name == OPTIMIZER if v.peak == OPTIMIZER else (
        layer is not None and layer.name == v.peak and info["carrier"])
    if is_peak:
        lines.append(peak_text(report))
        attrs.update(color=PEAK_COLOR, penwidth=PEAK_WIDTH)
    attrs["label"] = '"' + _centered(lines) + '"'
    return f"{_q(name)} [{_attrs(attrs)}];"


def cluster_lines(report: Report, layer: Layer) -> list[str]:
    """A module's label: its name and type, then the sums over it and all its layers."""
    # The module folded at its own depth carries the sums of itself and all its layers.
    folded = next(f for f in report.at_depth(layer.depth).layers if f.name == layer.name)
    params, fwd, bwd, saved = (folded.params, folded.flops_forward, folded.flops_backward,
                               folded.saved_bytes)
    lines = [f"{layer.name} · {layer.type}"]
    size = [f"params {format_count(params)}"] if params else []
    if saved:
        size.append(f"saved {format_bytes(saved)}")
    flops = [f"FLOPs fwd {format_count(fwd)}"] if fwd else []
    if bwd:
        flops.append(f"bwd {format_count(bwd)}")
    lines += ["Σ " + " · ".join(part) for part in (size, flops) if part]
    return lines


def _cluster(v: View, name: str, color_by: str, total: int, indent: str) -> list[str]:
    layer = v.layer[name]
    lines = cluster_lines(v.report, layer)
    own = v.members.get(name, [])
    if layer.calls > 1:
        lines[0] += f" ({layer.calls} calls)"
    if not own and layer.output_shapes:
        lines.append(f"out {shape_text(layer.output_shapes[0])}")
    lines += run_line(v, name)
    attrs = {"style": "rounded,dashed", "color": "#999999", "label": '""'}
    if name == v.peak and not own:
        lines.append(peak_text(v.report))
        attrs.update(color=PEAK_COLOR, penwidth=PEAK_WIDTH)
    # The label is a plain node (a box with an invisible border: the SVG keeps the extent that
    # Graphviz routes around), which lands in the box's top rank beside its first nodes:
    # Graphviz routes edges across a cluster's own label, never across a node. (Tied to the
    # first node by an edge, it drags each box sideways: three times the width for ResNet-18.)
    label = label_node(name)
    out = [f"{indent}subgraph {_q('cluster_' + name)} {{",
           f"{indent}  graph [{_attrs(attrs)}];",
           f"{indent}  {_q(label)} [shape=box, style=\"\", color=transparent, fontsize=10, "
           f"margin=\"0.04,0.02\", label=\"{_left(lines)}\"];"]
    out += [indent + "  " + _node(v, node, color_by, total) for node in own]
    for child in v.children[name]:
        if child in v.children:
            out += _cluster(v, child, color_by, total, indent + "  ")
        else:
            out += [indent + "  " + _node(v, node, color_by, total)
                    for node in v.members.get(child, ())]
    out.append(indent + "}")
    return out


def label_node(cluster: str) -> str:
    """The id of the plain node that holds a module box's label."""
    return f"label:{cluster}"


def header_lines(v: View) -> list[str]:
    """The totals and the peak-memory breakdown, as the table's summary prints them."""
    r = v.report
    t, m, cfg = r.totals, r.memory, r.config
    b = m.breakdown
    amp = f" · autocast {cfg['amp']}" if cfg.get("amp") else ""
    full = v.full_depth
    if v.depth is None:
        depth_text = f"all layers shown (depth {full})"
    elif v.auto:
        depth_text = (f"depth {v.depth} of {full}, chosen automatically to stay within "
                      f"{v.max_nodes} nodes (--depth N for more)")
    else:
        depth_text = f"depth {v.depth} of {full}: deeper layers folded into their ancestors"
    lines = [
        f"{r.model}: batch {cfg['batch']} · {cfg['dtype']}{amp} · {cfg['optimizer']} · memory "
        f"for {m.device}",
        f"params {format_count(t.params)} (trainable {format_count(t.trainable_params)}) · FLOPs "
        f"fwd {format_count(t.flops_forward)} · bwd {format_count(t.flops_backward)} · step "
        f"{format_count(t.flops)}",
        f"peak training memory {format_bytes(m.peak_bytes)}, at step {m.peak_step} "
        f"{m.peak_phase}, {m.peak_layer or '--'} (inference peak "
        f"{inference_text(m)})",
        *_sum_lines(breakdown_parts(b)),
        depth_text,
    ]
    if v.runs:
        lines.append("identical blocks drawn once, their figures summed (×n): "
                     + ", ".join(f"{run.name} ({len(run.members)} × {run.type})"
                                 for run in v.runs.values())
                     + " (--no-fold-repeats draws each)")
    d = getattr(r, "distributed", None)
    if d is not None:
        lines.append(f"per rank of {d.world_size} ({d.shard}): batch {d.per_rank_batch} of "
                     f"{d.global_batch}")
    if not r.complete:
        lines.append("INCOMPLETE: some ops have no FLOP formula or a layer was analysed around; "
                     "FLOP figures are a lower bound")
    return lines


LEGEND = "cluster_legend"


def legend_title(color_by: str, total: int) -> list[str]:
    return ["colour: share of", _METRIC_TEXT[color_by], f"{_format_metric(total, color_by)} in all"]


# Keys per row. The legend shares the graph's ranks, and a tall rank beside a key opens a gap below
# it: two rows of five keep it to one gap and about 600 px wide.
LEGEND_ROW = 5


def _legend(color_by: str, total: int) -> list[str]:
    """The keys in two rows beside the top of the graph: the colours, lowest share first, then
    the borders, the module box and a module's own-ops node."""
    keys = [("legend:none", {"label": '"none"', "fillcolor": ZERO_COLOR})]
    for text, fill, font in legend_bins():
        keys.append((f"legend:{text}", {"label": _q(text), "fillcolor": fill, "fontcolor": font}))
    keys.append(("legend:peak", {"label": _q("▲ training peak"), "fillcolor": ZERO_COLOR,
                                 "color": PEAK_COLOR, "penwidth": PEAK_WIDTH}))
    keys.append(("legend:folded", {"label": _q("folded layers (sums)"), "fillcolor": ZERO_COLOR,
                                   "peripheries": 2}))
    keys.append(("legend:module", {"label": _q("module: Σ its layers"), "fillcolor": ZERO_COLOR,
                                   "style": "rounded,dashed", "color": "#999999"}))
    keys.append(("legend:own ops", {"label": _q("a module's own ops (add, cat)"),
                                    "fillcolor": OWN_OPS_FILL, "color": "#777777"}))
    lines = [f"  subgraph {LEGEND} {{",
             f"    graph [label=\"{_left(legend_title(color_by, total))}\", labeljust=l, "
             f"fontsize=10, style=rounded, color=\"#bbbbbb\"];",
             "    node [fontsize=9, margin=\"0.08,0.02\", height=0.22, width=1.1];"]
    lines += [f"    {_q(name)} [{_attrs(attrs)}];" for name, attrs in keys]
    rows = [keys[i:i + LEGEND_ROW] for i in range(0, len(keys), LEGEND_ROW)]
    for row in rows:
        lines.append("    {rank=same; " + " ".join(_q(name) for name, _ in row) + "}")
        # edges within a rank keep the keys in reading order
        lines += [f"    {_q(a)} -> {_q(b)} [style=invis];" for (a, _), (b, _) in zip(row, row[1:])]
    lines.append("    " + " -> ".join(_q(row[0][0]) for row in rows) + " [style=invis];")
    lines.append("  }")
    return lines


def to_dot(report: Report, *, depth: int | None = None, color_by: str = "flops",
           max_nodes: int = NODE_BUDGET, fold_repeats: bool | None = None) -> str:
    """The DOT source of the picture (no Graphviz needed to build it)."""
    if color_by not in COLOR_BY:
        raise RenderError(f"unknown colouring '{color_by}': use one of {', '.join(COLOR_BY)}")
    if depth is not None and depth < 0:
        raise RenderError(f"depth must be 0 or more, got {depth}")
    if max_nodes < 1:
        raise RenderError(f"the node budget must be 1 or more, got {max_nodes}")
    v = view(report, depth, max_nodes, fold_repeats)
    total = sum(metric(x, color_by) for x in v.report.layers)
    lines = [
        "digraph graphcalc {",
        f"  graph [rankdir=TB, labelloc=t, labeljust=l, fontname={_q(FONT)}, fontsize=12, "
        f"nodesep=0.25, ranksep=0.3, label=\"{_left(header_lines(v))}\"];",
        f"  node [shape=box, style=\"rounded,filled\", fontname={_q(FONT)}, fontsize=10, "
        f"margin=\"0.25,0.06\", color=\"#444444\"];",
        f"  edge [fontname={_q(FONT)}, fontsize=8, color=\"#555555\", fontcolor=\"#333333\", "
        f"arrowsize=0.6];",
    ]
    lines += _legend(color_by, total)
    ins, outs, io_edges, via_output = _io_nodes(v)
    lines += ins
    for name in v.top:
        if name in v.children:
            lines += _cluster(v, name, color_by, total, "  ")
        else:
            lines += ["  " + _node(v, node, color_by, total) for node in v.members.get(name, ())]
    lines.append("  " + _node(v, OPTIMIZER, color_by, total))
    lines += outs
    lines += io_edges
    for a, b, shape in v.edges:
        if (a, b) in via_output:  # the model's output into the loss: drawn through its node
            continue
        # Every node is one stretch of the forward, so tensors flow forward in run order; an
        # edge that would not (a module called from outside its parent) does not rank the layout.
        back = v.rank.get(a, 0) > v.rank.get(b, 0)
        lines.append(f"  {_q(a)} -> {_q(b)} [label={_q(shape_text(shape))}"
                     + (", constraint=false" if back else "") + "];")
    if "[loss]" in v.layer:
        lines.append(f"  {_q('[loss]')} -> {_q(OPTIMIZER)} [label=\"backward, gradients\", "
                     f"style=dashed];")
    lines.append("}")
    return "\n".join(lines) + "\n"


IO_ATTRS = {"shape": "box", "style": "filled", "fillcolor": "#fff3c4", "color": "#8a7a3a",
            "fontsize": 9, "margin": "0.12,0.04"}


def _io_node(node: str, title: str, shape, dtype: str) -> str:
    label = '"' + _centered([title, f"{shape_text(shape)} {dtype}"]) + '"'
    return f"  {_q(node)} [{_attrs(IO_ATTRS | {'label': label})}];"


def _io_nodes(v: View):
    """torchview's input and output nodes: one per batch tensor the forward (or the loss) reads,
    with an edge to each node that reads it, and one per tensor the model returns, from the node
    that made it (and on to the loss where the loss reads it: that edge then passes through
    it). Returns (input node lines, output node lines, their edges, the (made, loss) edges
    drawn through an output node)."""
    many = len(v.inputs) > 1
    ins, outs, edges = [], [], []
    for i, (batch, shape, dtype, to) in enumerate(v.inputs, 1):
        if not to:
            continue
        node = f"[input {i}]"
        title = f"input {i}" if many else "input"
        ins.append(_io_node(node, title, shape, dtype))
        edges += [f"  {_q(node)} -> {_q(dst)} [label={_q(shape_text(shape))}];" for dst in to]
    loss = v.members.get("[loss]", ())
    drawn = {(a, b) for a, b, _ in v.edges}
    via = set()
    several = len(v.outputs) > 1
    for i, (src, shape, dtype) in enumerate(v.outputs, 1):
        node = f"[output {i}]"
        title = f"output {i}" if several else "output"
        outs.append(_io_node(node, title, shape, dtype))
        if src is not None:
            edges.append(f"  {_q(src)} -> {_q(node)} [label={_q(shape_text(shape))}];")
            for dst in loss:
                if (src, dst) in drawn:
                    via.add((src, dst))
                    edges.append(f"  {_q(node)} -> {_q(dst)};")
    return ins, outs, edges, via


def render(report: Report, fmt: str = "svg", *, depth: int | None = None,
           color_by: str = "flops", max_nodes: int = NODE_BUDGET,
           engine: str | None = None, fold_repeats: bool | None = None) -> bytes:
    """The picture of a report as bytes of `fmt`: svg (default), png, pdf or dot. Runs of
    identical blocks are drawn once with `fold_repeats` (None: past `max_nodes` nodes)."""
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise RenderError(f"unknown picture format '{fmt}': use one of {', '.join(FORMATS)}")
    source = to_dot(report, depth=depth, color_by=color_by, max_nodes=max_nodes,
                    fold_repeats=fold_repeats)
    return render_source(source, fmt, engine)


def format_for(path: Path | None, fmt: str | None) -> str:
    """The format asked for, else the one the file's suffix names, else svg."""
    if fmt:
        chosen = fmt.lower()
    elif path is not None and Path(path).suffix:
        chosen = Path(path).suffix[1:].lower()
        if chosen == "gv":
            chosen = "dot"
    else:
        chosen = "svg"
    if chosen not in FORMATS:
        raise RenderError(f"unknown picture format '{chosen}': use one of {', '.join(FORMATS)} "
                          "(--format or the file's suffix)")
    return chosen


def write_picture(report: Report, path: Path, fmt: str | None = None, **options) -> str:
    """Render to `path`; the format from `fmt` or the suffix. Returns the format written."""
    fmt = format_for(path, fmt)
    data = render(report, fmt, **options)
    from graphcalc.outputs import write_atomic

    write_atomic(path, data)
    return fmt
