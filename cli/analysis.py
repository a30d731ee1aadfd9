"""analyze and compare: the figures of one step; a real CUDA snapshot beside the prediction."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from .common import (AmpOption, AttnOption, AudioSamplesOption, BatchOption, CheckpointOption,
                     DebugOption, Device, Dtype, DtypeOption, ExpandableOption, FigureFmt,
                     FiguresFormatOption, Fmt, FormatOption, FusedOption, GPU_HELP,
                     GPU_MEMORY_HELP, ImageSizeOption, InputOption, MODEL_HELP, OfflineOption,
                     Optim, OptimOption, OutputOption, RoutingOption, SeqLenOption, Shard,
                     ShardOption, TaskOption, WorldSizeOption, _Working, _auto_plan, _card_line,
                     _checkpoint_choice, _command, _cpu_budget, _emit_json, _hf,
                     _model_prints_to_stderr, _options, _outputs, _picture, _timeline, _write)


@_command
def analyze(
    model: str = typer.Argument(..., help=MODEL_HELP),
    batch: BatchOption = 1,
    dtype: DtypeOption = Dtype.fp32,
    optim: OptimOption = Optim.adam,
    amp: AmpOption = None,
    device: Optional[Device] = typer.Option(None, help="Device the memory prediction is for "
                                                       "(default cpu; cuda with --gpu)."),
    gpu: Optional[str] = typer.Option(None, "--gpu", help=GPU_HELP),
    memory: Optional[str] = typer.Option(None, "--memory", help=GPU_MEMORY_HELP),
    expandable_segments: ExpandableOption = False,
    input: InputOption = None,
    fmt: FormatOption = Fmt.table,
    output: OutputOption = None,
    depth: Optional[int] = typer.Option(None, help="Fold layers deeper than this depth."),
    strict: bool = typer.Option(False, help="Exit 1 when the figures are incomplete: an op has "
                                            "no FLOP formula, a layer that reads tensor "
                                            "values was analysed around, or a kernel's memory "
                                            "is not modelled."),
    world_size: WorldSizeOption = 1,
    shard: ShardOption = Shard.none,
    svg: Optional[Path] = typer.Option(None, "--svg", help="Also draw the annotated graph here."),
    timeline_svg: Optional[Path] = typer.Option(None, "--timeline-svg",
                                                help="Also draw the memory timeline here (SVG)."),
    snapshot: Optional[Path] = typer.Option(None, "--snapshot",
                                            help="Also write the predicted step as a PyTorch "
                                                 "memory snapshot (pickle) for "
                                                 "pytorch.org/memory_viz."),
    routing: RoutingOption = "balanced",
    fused: FusedOption = False,
    task: TaskOption = None,
    seq_len: SeqLenOption = None,
    image_size: ImageSizeOption = None,
    audio_samples: AudioSamplesOption = None,
    attn: AttnOption = None,
    offline: OfflineOption = False,
    checkpoint: CheckpointOption = None,
    by_op: bool = typer.Option(False, "--by-op", help="Also print the FLOPs by ATen operator "
                               "(fvcore's by-operator table; in the JSON always, flops_by_op)."),
    columns: Optional[str] = typer.Option(
        None, "--columns", help="The table's columns, comma-separated, from: layer, type, input "
        "(torchinfo's input size), shape, calls, params, flops_fwd, flops_bwd, output, saved "
        "(default: all but input that fit the terminal)."),
    debug: DebugOption = False,
):
    """Parameters, FLOPs, activations and peak training memory, per layer and in total.
    With --world-size/--shard: per rank, --batch being each rank's batch."""
    from graphcalc.commands.analyze import analyze_file
    from graphcalc.errors import IncompleteError, UsageError
    from graphcalc.output.formatting import parse_columns, render, terminal_width

    chosen = parse_columns(columns) if columns is not None else None
    _outputs(model, {"-o": output, "--svg": svg, "--timeline-svg": timeline_svg,
                     "--snapshot": snapshot})

    if depth is not None and depth < 0:
        raise UsageError(f"depth must be 0 or more, got {depth}")
    auto, patterns = _checkpoint_choice(checkpoint, memory, fit=True)  # --memory: the card
    # --memory is a GPU's memory, as on every command; with an explicit --device cpu it is the
    # CPU step's budget (the peak against it), as in fit
    cpu_budget = _cpu_budget(device, gpu, memory)
    options = _options(batch, dtype, optim, amp, device, world_size=world_size, shard=shard,
                       routing=routing, fused=fused, gpu=gpu,
                       memory=None if cpu_budget is not None else memory,
                       expandable_segments=expandable_segments, checkpoint=patterns)
    if snapshot is not None and options.distributed:
        raise UsageError("--snapshot writes one device's step: leave out --world-size/--shard")
    kept = []
    hf = _hf(task, seq_len, image_size, audio_samples, attn, offline)
    planned = None
    with _model_prints_to_stderr():
        if auto:
            with _Working("--checkpoint auto: the first replay", quiet=fmt.value == "json") \
                    as working:
                planned = _auto_plan(model, options, input, memory, hf, say=working.say)
            report = planned.report
        else:
            with _Working(f"replaying a training step of {model} at batch {batch} on fake "
                          "tensors", quiet=fmt.value == "json"):
                report = analyze_file(model, options, inputs=input, hf=hf,
                                      on_replay=kept.append if snapshot is not None else None)
    if cpu_budget is not None:
        from dataclasses import replace

        report = replace(report, cpu_budget_bytes=cpu_budget)
    width = terminal_width() if output is None else None  # a file: the natural width
    text = render(report.at_depth(depth), fmt.value, width, chosen)
    if by_op and fmt.value == "table":
        from graphcalc.output.formatting import op_table

        text += "\n" + op_table(report)
    _write(text, output)
    if planned is not None:
        from graphcalc.commands.recompute import plan_text

        text = plan_text(planned)
        if output is None and fmt.value == "table":
            sys.stdout.write("\n" + text)
        else:
            sys.stderr.write(text)
        if not planned.fits:
            raise typer.Exit(1)
    if svg is not None:
        _picture(report, svg, "svg", depth=depth)
    if timeline_svg is not None:
        _timeline(report, timeline_svg, *_card_line(report))
    if snapshot is not None:
        from graphcalc.output.snapshot import write_snapshot

        write_snapshot(kept[-1], snapshot)
        typer.echo(f"wrote {snapshot}", err=True)
    if strict and not report.complete:
        raise IncompleteError(f"{'; '.join(report.incomplete_reasons)}: the figures are "
                              "incomplete")


@_command
def compare(
    model: str = typer.Argument(..., help=MODEL_HELP),
    real: Path = typer.Argument(..., help="A real run's memory snapshot: the pickle "
                                          "torch.cuda.memory._dump_snapshot wrote after "
                                          "_record_memory_history(context='alloc', "
                                          "stacks='python') and the training steps."),
    batch: int = typer.Option(1, "--batch", "-b", help="Batch size of the real run."),
    dtype: DtypeOption = Dtype.fp32,
    optim: OptimOption = Optim.adam,
    amp: AmpOption = None,
    gpu: Optional[str] = typer.Option(None, "--gpu", help="The GPU the real run was on "
                                                          "(default: an sm80 card)."),
    steps: int = typer.Option(2, help="Training steps the real run recorded."),
    input: InputOption = None,
    fused: FusedOption = False,
    task: TaskOption = None,
    seq_len: SeqLenOption = None,
    image_size: ImageSizeOption = None,
    audio_samples: AudioSamplesOption = None,
    attn: AttnOption = None,
    offline: OfflineOption = False,
    top: int = typer.Option(5, "--top", help="Allocation sizes listed per phase."),
    fmt: FiguresFormatOption = FigureFmt.table,
    output: OutputOption = None,
    debug: DebugOption = False,
):
    """Line a real CUDA memory snapshot up with the predicted allocation stream, phase by
    phase: where they part, by how much, and what the real run allocates that the prediction
    does not."""
    from graphcalc.commands.analyze import analyze_file
    from graphcalc.output.snapshot import snapshot as predicted_snapshot
    from graphcalc.output.snapshot_compare import as_dict, compare as line_up, load, render

    recorded = load(real)  # a bad file is refused before the model runs
    options = _options(batch, dtype, optim, amp, Device("cuda"), steps=steps, fused=fused,
                       gpu=gpu)
    kept = []
    with _Working(f"replaying a training step of {model} at batch {batch} on fake tensors",
                  quiet=fmt == FigureFmt.json):
        report = analyze_file(model, options, inputs=input,
                              hf=_hf(task, seq_len, image_size, audio_samples, attn, offline),
                              on_replay=kept.append)
    c = line_up(recorded, predicted_snapshot(kept[-1]))
    if fmt == FigureFmt.json:
        _emit_json({"model": report.model, "config": options.as_dict(), "snapshot": str(real), **as_dict(c, top=top)},
                   output)
    else:
        _write(render(c, top=top) + "\n", output)
