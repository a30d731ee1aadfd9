"""The op-level picture: the ATen ops of the first training step (forward, loss and backward) of
a small model or of one layer, from the step graph (graphcalc.fake.stepgraph), as DOT/SVG/PNG/PDF.

Each op is a box with its name, output value (`f32[2, 3]`) and FLOPs; the forward and the
backward are two clusters; what the ops read from outside the selection (parameters, the batch,
another layer's tensor) is a grey ellipse. Drawn by the same engines as the layer graph
(`graphcalc.output.engines.render_source`: `dot`, else the embedded WebAssembly Graphviz).
"""

from __future__ import annotations

from collections import Counter

from graphcalc.errors import RenderError
from graphcalc.output.engines import FORMATS, render_source
from graphcalc.output.render import FONT
from graphcalc.fake.stepgraph import StepGraph, value_text
from graphcalc.units import format_count

MAX_OPS = 400  # op nodes past which a picture is unreadable: one layer at a time
PHASES = ("forward", "loss", "backward")
_FILL = {"forward": "#deebf7", "loss": "#fee6ce", "backward": "#e5f5e0"}


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _label(lines: list[str]) -> str:
    """A DOT label of several centred lines."""
    return '"' + "\\n".join(line.replace("\\", "\\\\").replace('"', '\\"')
                             for line in lines) + '"'


def _in_layer(module: str, layer: str | None) -> bool:
    return layer is None or module == layer or module.startswith(layer + ".")


def select(sg: StepGraph, layer: str | None = None, max_ops: int = MAX_OPS) -> list:
    """The op nodes drawn: step 1's forward, loss and backward, of `layer` and its children."""
    nodes = [n for n in sg.graph.nodes if n.op == "call_function" and n.meta.get("step") == 1
             and n.meta.get("phase") in PHASES and _in_layer(n.meta["module"], layer)]
    if not nodes:
        layers = sorted({n.meta["module"] for n in sg.graph.nodes
                         if n.op == "call_function" and n.meta.get("phase") == "forward"})
        raise RenderError(f"no op of layer '{layer}' ran in the step: choose one of "
                          f"{', '.join(layers[:12])}{', ...' if len(layers) > 12 else ''}")
    if len(nodes) > max_ops:
        counts: Counter = Counter()  # ops under each layer, its children's included
        for n in nodes:
            parts = n.meta["module"].split(".")
            if not n.meta["module"].startswith("("):
                counts.update(".".join(parts[:d]) for d in range(1, len(parts) + 1))
        fits = [name for name, c in counts.most_common() if c <= max_ops][:3]
        biggest = ", ".join(fits) or "a smaller layer"
        raise RenderError(f"{len(nodes)} ops are too many to draw (at most {max_ops}): draw one "
                          f"layer with --layer, e.g. {biggest}")
    return nodes


def to_dot(sg: StepGraph, layer: str | None = None, max_ops: int = MAX_OPS) -> str:
    nodes = select(sg, layer, max_ops)
    chosen = set(nodes)
    lines = ["digraph ops {", f'  graph [rankdir=TB, fontname={_q(FONT)}, fontsize=12, '
             f'label={_q(f"ATen ops of the first training step" + (f" of {layer}" if layer else ""))}'
             ', labelloc=t];',
             f"  node [fontname={_q(FONT)}, fontsize=10, shape=box, style=\"rounded,filled\"];",
             f"  edge [fontname={_q(FONT)}, fontsize=9, color=\"#555555\"];"]
    outside: dict[str, list[str]] = {}
    edges = []
    for n in nodes:
        for src in n.all_input_nodes:
            if src in chosen:
                edges.append((src.name, n.name))
                continue
            if src.name not in outside:
                what = src.meta.get("input") if src.op == "placeholder" else (
                    f"{src.meta.get('module', '?')}: {src.name}")
                outside[src.name] = [what or src.name, value_text(src.meta["val"])]
            edges.append((src.name, n.name))
    for phase in ("forward", "backward"):
        members = [n for n in nodes if (n.meta["phase"] == "backward") == (phase == "backward")]
        if not members:
            continue
        lines.append(f"  subgraph cluster_{phase} {{")
        lines.append(f"    label={_q(phase + ' (and loss)' if phase == 'forward' else phase)}; "
                     "style=dashed; color=\"#888888\";")
        for n in members:
            op = getattr(n.target, "__name__", str(n.target)).split(".")[0]
            label = [op, value_text(n.meta["val"])]
            if n.meta.get("flops"):
                label.append(f"{format_count(n.meta['flops'])} FLOPs")
            if layer is None or n.meta["module"] != layer:
                label.append(n.meta["module"])
            lines.append(f"    {_q(n.name)} [label={_label(label)}, "
                         f"fillcolor={_q(_FILL[n.meta['phase']])}];")
        lines.append("  }")
    for name, label in outside.items():
        lines.append(f"  {_q(name)} [label={_label(label)}, shape=ellipse, style=filled, "
                     "fillcolor=\"#eeeeee\", color=\"#999999\"];")
    for a, b in dict.fromkeys(edges):
        lines.append(f"  {_q(a)} -> {_q(b)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(sg: StepGraph, fmt: str = "svg", *, layer: str | None = None,
           engine: str | None = None, max_ops: int = MAX_OPS) -> bytes:
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise RenderError(f"unknown picture format '{fmt}': use one of {', '.join(FORMATS)}")
    return render_source(to_dot(sg, layer, max_ops), fmt, engine)
