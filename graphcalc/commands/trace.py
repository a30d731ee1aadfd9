"""`graphcalc trace`: the training step as the torch.fx graph the replay records
(graphcalc.fake.stepgraph), written as readable code or as JSON nodes with their meta.

The code is what `GraphModule.print_readable()` prints, with a comment line wherever the step,
phase or layer changes (`# step 1 · forward · fc`) and each node's value, FLOPs and bytes at the
end of its line. It documents the step, and it runs: `build()` makes the module with the
constants the step made in Python (an optimizer's step counters), and called with the
parameters, buffers and batch as real tensors, in the order of its arguments, it takes the
replayed steps, forward, loss, backward and optimizer, updating the parameters in place as the
optimizer did (tests/test_stepgraph.py checks it against the eager steps, bit for bit).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from graphcalc.sources import loader
from graphcalc.errors import GraphcalcError
from graphcalc.passes.graphpasses import memory_walk
from graphcalc.options import Options
from graphcalc.fake.replay import replay
from graphcalc.fake.stepgraph import StepGraph, TensorValue, layer_name, value_text
from graphcalc.units import dtype_name, format_bytes, format_count

FORMATS = ("code", "json")


def trace_module(model: nn.Module, make_inputs: Callable[[int], Any], options: Options, *,
                 loss_fn=None) -> StepGraph:
    """The step graph of `model` (one replay on fake tensors, as `analyze_module` runs it)."""
    from graphcalc.commands.analyze import _explain

    try:
        return replay(model, make_inputs, loss_fn, options, graph=True).step_graph
    except GraphcalcError:
        raise
    except Exception as e:  # the model's own code failed under fake tensors
        raise _explain(e, model) from e


def trace_file(spec: str, options: Options, *, inputs: list[str] | None = None) -> StepGraph:
    """`graphcalc trace FILE[:NAME]`: load the file, build the model on meta, record the step."""
    from graphcalc.commands.analyze import resolve_inputs

    source = loader.load(spec)
    make_inputs = resolve_inputs(source, inputs)
    try:
        model = loader.build_model(source, device="meta")
        return trace_module(model, make_inputs, options, loss_fn=source.loss)
    except GraphcalcError as first:
        # As analyze_file: a model computing real values at build time is built for real.
        try:
            model = loader.build_model(source, device=None)
        except GraphcalcError:
            raise first from None
        return trace_module(model, make_inputs, options, loss_fn=source.loss)


def _note(node) -> str:
    m = node.meta
    parts = [value_text(m["val"])] if m.get("val") is not None else []
    if m.get("flops"):
        parts.append(f"{format_count(m['flops'])} FLOPs")
    elif m.get("flops", 0) is None:
        parts.append("FLOPs unknown")
    if m.get("allocates"):
        parts.append(f"+{format_bytes(m['allocates'])}")
    if m.get("frees"):
        parts.append(f"-{format_bytes(m['frees'])} after")
    return "  # " + " · ".join(parts) if parts else ""


def to_code(sg: StepGraph, title: str = "") -> str:
    """The readable code of the step (see the module's docstring)."""
    src = sg.graph_module().print_readable(print_output=False)
    lines = [ln for ln in src.splitlines() if "No stacktrace found" not in ln]
    out: list[str] = []
    walk = memory_walk(sg)
    head = [f"# The training step of {title or 'the model'} as recorded by graphcalc on fake "
            "tensors (ATen ops).",
            f"# {len(sg.nodes('call_function'))} op nodes; training peak "
            f"{format_bytes(walk.peak_bytes)} ({walk.peak_bytes:,} B) at node "
            f"{walk.peak_node}.",
            "# It runs: build() makes the module; call it with the parameters, buffers and batch "
            "(real",
            "# tensors, in its arguments' order) and it takes the replayed steps, updating the "
            "parameters",
            "# in place as the optimizer did.", "",
            "import torch", "from math import inf, nan  # noqa: F401", "from torch import device "
            " # noqa: F401", "", ""]
    nodes = iter(n for n in sg.graph.nodes if n.op not in ("placeholder", "output"))
    node = next(nodes, None)
    where = None
    for line in lines:
        stripped = line.lstrip()
        if node is not None and stripped.startswith(f"{node.name} = "):
            indent = line[: len(line) - len(stripped)]
            here = (node.meta.get("step"), node.meta.get("phase"), node.meta.get("module"))
            if here != where:
                out.append(f"{indent}# step {here[0]} · {here[1]} · {here[2]}")
                where = here
            out.append(line + _note(node))
            node = next(nodes, None)
        else:
            out.append(line)
    return "\n".join(head + out).rstrip("\n") + "\n" + _constants_code(sg)


def _constants_code(sg: StepGraph) -> str:
    """`CONSTANTS` (the real values the step made in Python, where known; a meta tensor where
    not) and `build()`."""
    lines = ["", "", "CONSTANTS = {"]
    for target, v in sg.constants.items():
        value = sg.constant_values.get(target)
        if value is not None:
            lines.append(f"    {target!r}: torch.tensor({value.tolist()!r}, dtype={value.dtype}),")
        else:
            lines.append(f"    {target!r}: torch.empty({list(v.shape)}, dtype={v.dtype}, "
                         "device='meta'),  # its values were not known")
    lines += ["}", "", "", "def build() -> TrainingStep:",
              "    step = TrainingStep()",
              "    for name, value in CONSTANTS.items():",
              "        step.register_buffer(name, value.clone())",
              "    return step", ""]
    return "\n".join(lines)


def _arg_json(a):
    if isinstance(a, torch.fx.Node):
        return {"node": a.name}
    if isinstance(a, (list, tuple)):
        return [_arg_json(x) for x in a]
    if isinstance(a, dict):
        return {k: _arg_json(v) for k, v in a.items()}
    if a is None or isinstance(a, (bool, int, float, str)):
        return a
    return repr(a)


def _val_json(val):
    if isinstance(val, TensorValue):
        return {"shape": list(val.shape), "dtype": dtype_name(val.dtype),
                "device": val.device, "stride": list(val.stride)}
    return [_val_json(v) for v in val]


def to_dict(sg: StepGraph, title: str = "", config: dict | None = None) -> dict:
    """The nodes in order with their meta (every byte and FLOP an int, as the report's JSON)."""
    walk = memory_walk(sg)
    nodes = []
    for n in sg.graph.nodes:
        if n.op == "output":
            continue
        m = n.meta
        target = n.target if isinstance(n.target, str) else (
            str(n.target) if not callable(n.target) or not hasattr(n.target, "__name__")
            else f"{getattr(n.target, '__module__', '')}.{n.target.__name__}".lstrip("."))
        if isinstance(n.target, torch._ops.OpOverload):
            target = str(n.target)  # aten.addmm.default
        nodes.append({"name": n.name, "op": n.op, "target": target,
                      "args": _arg_json(n.args), "kwargs": _arg_json(n.kwargs),
                      "val": _val_json(m["val"]), "module": m["module"], "phase": m["phase"],
                      "step": m["step"], "flops": m["flops"], "bias_adds": m["bias_adds"],
                      "allocates": m["allocates"], "frees": m["frees"],
                      "allocated": [list(e) for e in m.get("allocated", ())],
                      "freed": [list(e) for e in m.get("freed", ())]}
                     | ({"phase_marks": [list(k) for k in m["phase_marks"]]}
                        if m.get("phase_marks") else {})
                     | ({"input": m["input"]} if "input" in m else {})
                     | ({"call": [layer_name(m["call"][0]), *m["call"][1:]]} if "call" in m else {})
                     | ({"saves": [[layer_name(p), serial, b] for p, serial, b in m["saves"]]}
                        if m.get("saves") else {})
                     | ({"returns": [{"call": [layer_name(k[0]), k[1], k[2]],
                                      "tensors": [{"node": src.name, "part": part,
                                                   "shape": list(shape)}
                                                  for src, part, shape in made]}
                                     for k, made in m["returns"]]} if m.get("returns") else {}))
    return {"model": title, "config": dict(config or {}), "device": sg.device,
            "live_bytes_before": sg.live_before, "peak_bytes": walk.peak_bytes,
            "peak_node": walk.peak_node, "nodes": nodes}


def to_json(sg: StepGraph, title: str = "", config: dict | None = None) -> str:
    """`to_dict` as JSON text, one node a line."""
    import json

    d = to_dict(sg, title, config)
    nodes = d.pop("nodes")
    head = json.dumps(d, indent=2)[:-2]
    body = ",\n".join("    " + json.dumps(n) for n in nodes)
    return f'{head},\n  "nodes": [\n{body}\n  ]\n}}\n'
