"""Runs of identical blocks, folded into one for the layer picture: twelve transformer blocks
drawn once as `h.0–11 · Block ×12`, with the figures of all twelve.

Identical: consecutive siblings (children of one module, in `named_modules` order) that have
children of their own and the same structure all the way down: the same module types under the
same names, called as often, returning the same shapes and dtypes, holding as many parameters.
The run is kept as its first block, renamed `first–last`; each of its layers carries the sums of
that layer over the run (parameters, FLOPs, bytes), its type marked `×n`; the model's totals are
untouched. Tensors flowing into or out of any block of the run flow into or out of the one drawn;
those from one block of the run to the next are not drawn.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from graphcalc.report import ROOT, Layer, Report

_SUMMED = ("params", "trainable_params", "frozen_params", "buffers", "flops_forward",
           "flops_backward", "macs_forward", "bias_adds_forward", "activation_bytes",
           "saved_bytes")


@dataclass(frozen=True)
class Run:
    name: str  # the folded block's name: `transformer.h.0–11`
    members: tuple[str, ...]  # the blocks it stands for, in order
    type: str


def _parent(name: str) -> str | None:
    if name == ROOT or name.startswith("["):
        return None
    return name.rsplit(".", 1)[0] if "." in name else ROOT


def _children(report: Report) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for layer in report.layers:
        p = _parent(layer.name)
        if p is not None:
            out.setdefault(p, []).append(layer.name)
    return out


def _signatures(report: Report, children: dict[str, list[str]]) -> dict[str, tuple]:
    by_name = {x.name: x for x in report.layers}
    sig: dict[str, tuple] = {}

    def of(name: str) -> tuple:
        if name not in sig:
            x = by_name[name]
            sig[name] = (x.type, x.calls, x.params, x.trainable_params, x.output_shapes,
                         x.output_dtype, tuple((c.rsplit(".", 1)[-1], of(c))
                                               for c in children.get(name, ())))
        return sig[name]

    for layer in report.layers:
        of(layer.name)
    return sig


def find_run(report: Report) -> tuple[str, ...] | None:
    """The first run of two or more identical blocks, shallowest first."""
    children = _children(report)
    sig = _signatures(report, children)
    parents = sorted(children, key=lambda n: (0 if n == ROOT else n.count(".") + 1))
    for parent in parents:
        kids = children[parent]
        i = 0
        while i < len(kids):
            j = i + 1
            while j < len(kids) and sig[kids[j]] == sig[kids[i]]:
                j += 1
            if j - i >= 2 and kids[i] in children:
                return tuple(kids[i:j])
            i = j
    return None


def _run_name(members: tuple[str, ...]) -> str:
    first, last = members[0], members[-1].rsplit(".", 1)[-1]
    return f"{first}–{last}"


def fold(report: Report, members: tuple[str, ...]) -> tuple[Report, Run]:
    """The report with `members` drawn as one block (see the module's docstring)."""
    name = _run_name(members)
    n = len(members)

    def member_of(layer: str) -> int | None:
        for k, m in enumerate(members):
            if layer == m or layer.startswith(m + "."):
                return k
        return None

    def rename(layer: str) -> str:
        k = member_of(layer)
        return layer if k is None else name + layer[len(members[k]):]

    sums: dict[str, dict] = {}
    unknown: dict[str, dict] = {}
    for x in report.layers:
        k = member_of(x.name)
        if k is None:
            continue
        key = rename(x.name)
        acc = sums.setdefault(key, dict.fromkeys(_SUMMED, 0))
        for f in _SUMMED:
            acc[f] += getattr(x, f)
        for op, c in x.unknown_ops:
            unknown.setdefault(key, {})[op] = unknown.setdefault(key, {}).get(op, 0) + c
    layers: list[Layer] = []
    for x in report.layers:
        k = member_of(x.name)
        if k is None:
            layers.append(x)
        elif k == 0:
            key = rename(x.name)
            layers.append(replace(x, name=key, type=f"{x.type} ×{n}", **sums[key],
                                  unknown_ops=tuple(sorted(unknown.get(key, {}).items()))))
    flow = tuple(replace(f, layer=rename(f.layer),
                         context=tuple((rename(p), c) for p, c in f.context))
                 for f in report.flow if member_of(f.layer) in (None, 0))
    edges: dict[tuple, tuple] = {}
    for a, b, shape in report.edges:
        ka, kb = member_of(a[0]), member_of(b[0])
        if ka is not None and kb is not None and ka != kb:
            continue  # one block of the run to another
        ra, rb = (rename(a[0]),) + tuple(a[1:]), (rename(b[0]),) + tuple(b[1:])
        edges.setdefault((ra, rb), shape)
    run_order = tuple(dict.fromkeys(rename(x) for x in report.run_order))
    m = report.memory
    folded = replace(report, layers=tuple(layers), flow=flow,
                     edges=tuple((a, b, s) for (a, b), s in edges.items()), run_order=run_order,
                     memory=replace(m, peak_layer=rename(m.peak_layer)))
    base = next(x.type for x in report.layers if x.name == members[0])
    return folded, Run(name, members, base)


def fold_repeats(report: Report) -> tuple[Report, tuple[Run, ...]]:
    """Every run folded, the outermost first (a run inside a folded block is found in it)."""
    runs = []
    while True:
        members = find_run(report)
        if members is None:
            return report, tuple(runs)
        report, run = fold(report, members)
        runs.append(run)
