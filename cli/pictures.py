"""render and trace: the layer graph with its figures, and the step as a torch.fx graph."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from .common import (AmpOption, AttnOption, AudioSamplesOption, BatchOption, DebugOption, Device,
                     _Working,
                     Dtype, DtypeOption, ImageSizeOption, InputOption, MEMORY_LINE_HELP,
                     MODEL_HELP, OfflineOption, Optim, OptimOption, OutputOption, SeqLenOption,
                     TaskOption, _budget, _card_line, _command, _hf, _model_prints_to_stderr,
                     _options, _outputs, _picture, _timeline, _write)


# --- render: the layer graph with its figures (graphcalc.output.render) ---------------------------------

PictureFmt = Enum("PictureFmt", {k: k for k in ("svg", "png", "pdf", "dot")}, type=str)
ColorBy = Enum("ColorBy", {k: k for k in ("flops", "memory", "params")}, type=str)
Engine = Enum("Engine", {k: k for k in ("auto", "dot", "embedded")}, type=str)



@_command
def render(
    model: str = typer.Argument(..., help=MODEL_HELP),
    batch: BatchOption = 1,
    dtype: DtypeOption = Dtype.fp32,
    optim: OptimOption = Optim.adam,
    amp: AmpOption = None,
    device: Optional[Device] = typer.Option(None, help="Device the memory prediction is for "
                                                       "(default cpu; cuda with --memory)."),
    input: InputOption = None,
    output: Optional[Path] = typer.Option(None, "--output", "-o",
                                          help="Write here; the suffix picks the format."),
    fmt: Optional[PictureFmt] = typer.Option(None, "--format", "-f",
                                             help="svg, png, pdf or dot (default: the suffix "
                                                  "of -o, else svg)."),
    depth: Optional[int] = typer.Option(None, help="Fold layers deeper than this depth into one "
                                                   "node (default: all, or a depth that fits "
                                                   "--max-nodes)."),
    color_by: ColorBy = typer.Option("flops", "--color-by", help="Colour nodes by their share "
                                                                 "of this."),
    max_nodes: int = typer.Option(60, "--max-nodes", help="Node budget for the automatic depth."),
    engine: Optional[Engine] = typer.Option(None, help="dot binary or embedded (WebAssembly, svg "
                                                       "only); default: $GRAPHCALC_RENDER_ENGINE,"
                                                       " else dot when on PATH."),
    fold_repeats: Optional[bool] = typer.Option(
        None, "--fold-repeats/--no-fold-repeats",
        help="Draw a run of identical blocks (same module types, same shapes) once, as 'x12', "
             "with the figures of all of them (default: when the picture is past --max-nodes)."),
    timeline: bool = typer.Option(False, "--timeline", help="Draw the memory timeline of the "
                                                            "step instead of the layer graph "
                                                            "(SVG)."),
    memory: Optional[str] = typer.Option(None, help=MEMORY_LINE_HELP + " With --timeline."),
    task: TaskOption = None,
    seq_len: SeqLenOption = None,
    image_size: ImageSizeOption = None,
    audio_samples: AudioSamplesOption = None,
    attn: AttnOption = None,
    offline: OfflineOption = False,
    ops: bool = typer.Option(False, "--ops", help="Draw the ATen ops of the first step "
                                                  "(forward, loss, backward) instead of layers: "
                                                  "a small model, or one layer with --layer."),
    layer: Optional[str] = typer.Option(None, "--layer", help="With --ops: only this layer and "
                                                              "its children, e.g. h.0."),
    debug: DebugOption = False,
):
    """Draw the layer graph with its figures: params, FLOPs, bytes, the peak layer marked; with
    --timeline, the memory of the step over time, stacked by where it goes; with --ops, the
    op-level graph of the step."""
    from graphcalc.commands.analyze import analyze_file
    from graphcalc.errors import RenderError, UsageError

    _outputs(model, {"-o": output})
    from graphcalc.output.render import format_for

    budget = _budget(memory)
    if timeline:
        chosen = format_for(output, fmt.value if fmt else None)
        if chosen != "svg":
            raise RenderError(f"the timeline is drawn as svg, not {chosen}: give -o FILE.svg")
    else:
        if memory is not None:
            raise UsageError("--memory draws a line on the timeline: use it with --timeline")
        chosen = format_for(output, fmt.value if fmt else None)  # bad suffix: fail early
    # --memory is a GPU's memory here as on every command (the timeline of the CUDA step, the
    # line at the card's memory); with --device cpu a line at that budget on the CPU step
    on_cpu = device is not None and device.value == "cpu"
    options = _options(batch, dtype, optim, amp, device,
                       memory=memory if timeline and not on_cpu else None)
    if layer is not None and not ops:
        from graphcalc.errors import UsageError

        raise UsageError("--layer picks the layer of an op-level picture: add --ops")
    if ops:
        _op_picture(model, options, input, output, chosen, layer,
                    engine.value if engine else None)
        return
    hf = _hf(task, seq_len, image_size, audio_samples, attn, offline)
    with _Working(f"replaying a training step of {model} at batch {batch} on fake tensors"):
        report = analyze_file(model, options, inputs=input, hf=hf)
    if timeline:
        from graphcalc.output.plots import timeline_svg

        if memory is not None and not on_cpu:
            budget, label = _card_line(report)
        else:
            label = "--memory"
        if output is None:
            sys.stdout.write(timeline_svg(report, budget, label))
        else:
            _timeline(report, output, budget, label)
        return
    _picture(report, output, chosen, depth=depth, color_by=color_by.value,
             max_nodes=max_nodes, engine=engine.value if engine else None,
             fold_repeats=fold_repeats)


def _op_picture(model, options, inputs, output, fmt, layer, engine) -> None:
    from graphcalc.errors import RenderError
    from graphcalc.output.render_ops import render as render_ops
    from graphcalc.commands.trace import trace_file

    if output is None and fmt in ("png", "pdf"):
        raise RenderError(f"{fmt} is binary: give a file with -o FILE")
    with _Working(f"replaying a training step of {model} on fake tensors"):
        step = trace_file(model, options, inputs=inputs)
    picture = render_ops(step, fmt, layer=layer,
                         engine=engine)
    if output is None:
        sys.stdout.write(picture.decode())
        return
    from graphcalc.outputs import write_atomic

    write_atomic(output, picture)
    typer.echo(f"wrote {output}", err=True)


# --- trace: the step as a torch.fx graph of ATen ops (graphcalc.commands.trace) ---------------------------

TraceFmt = Enum("TraceFmt", {k: k for k in ("code", "json")}, type=str)


@_command
def trace(
    model: str = typer.Argument(..., help=MODEL_HELP),
    batch: BatchOption = 1,
    dtype: DtypeOption = Dtype.fp32,
    optim: OptimOption = Optim.adam,
    amp: AmpOption = None,
    device: Device = typer.Option("cpu", help="Device the memory prediction is for."),
    input: InputOption = None,
    fmt: TraceFmt = typer.Option("code", "--format", "-f",
                                 help="code (what GraphModule prints) or json (the nodes with "
                                      "their meta)."),
    output: OutputOption = None,
    debug: DebugOption = False,
):
    """The training step (forward, loss, backward, optimizer; two steps) as a torch.fx graph of
    ATen ops, each node with its shape, layer, phase, FLOPs and bytes."""

    from graphcalc.commands.trace import to_code, to_json, trace_file

    _outputs(model, {"-o": output})
    options = _options(batch, dtype, optim, amp, device)
    with _model_prints_to_stderr(), _Working(f"replaying a training step of {model} at batch "
                                             f"{batch} on fake tensors"):
        step = trace_file(model, options, inputs=input)
    if fmt.value == "json":
        text = to_json(step, model, options.as_dict())
    else:
        text = to_code(step, model)
    _write(text, output)
