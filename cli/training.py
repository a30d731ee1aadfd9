"""verify and fit: a real step against the prediction, and the largest batch a device holds."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer

from .common import (AmpOption, AttnOption, AudioSamplesOption, BatchOption, CheckpointOption,
                     DebugOption, Device, Dtype, DtypeOption, ExpandableOption, FigureFmt,
                     FiguresFormatOption, FusedOption, ImageSizeOption, InputOption, MODEL_HELP,
                     OfflineOption, Optim, OptimOption, OutputOption, ROUTING_HELP, SeqLenOption,
                     Shard, ShardOption, TaskOption, WorldSizeOption, _Working, _checkpoint_choice,
                     _command, _emit_json, _hf, _options, _outputs, _write)


@_command
def verify(
    model: str = typer.Argument(..., help=MODEL_HELP),
    batch: BatchOption = 1,
    dtype: DtypeOption = Dtype.fp32,
    optim: OptimOption = Optim.adam,
    amp: AmpOption = None,
    device: Device = typer.Option("cpu", help="Run the real steps here."),
    steps: int = typer.Option(3, help="Real training steps to run; the peak is over all."),
    tolerance: float = typer.Option(5.0, help="Largest error allowed, in percent."),
    input: InputOption = None,
    world_size: int = typer.Option(1, "--world-size",
                                   help="Start this many ranks here (gloo, CPU) and check each."),
    shard: Shard = typer.Option("none", "--shard", help="ddp or fsdp, run for real."),
    routing: str = typer.Option("balanced", help=ROUTING_HELP + " The real steps are routed "
                                    "the same way."),
    fused: FusedOption = False,
    task: TaskOption = None,
    seq_len: SeqLenOption = None,
    image_size: ImageSizeOption = None,
    audio_samples: AudioSamplesOption = None,
    attn: AttnOption = None,
    offline: OfflineOption = False,
    checkpoint: Optional[List[str]] = typer.Option(
        None, "--checkpoint", help="Module path patterns run under torch.utils.checkpoint in "
                                   "the prediction and in the real steps, as for analyze."),
    fmt: FiguresFormatOption = FigureFmt.table,
    output: OutputOption = None,
    debug: DebugOption = False,
):
    """Run real training steps and print predicted against measured (exit 1 past --tolerance)."""
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from graphcalc.sources import loader
    from graphcalc.commands.analyze import resolve_inputs
    from graphcalc.units import format_bytes, format_count, format_seconds
    from graphcalc.commands.verify import verify as run_verify

    _outputs(model, {"-o": output})
    options = _options(batch, dtype, optim, amp, device, steps, world_size, shard, routing,
                       fused, checkpoint=checkpoint)
    source = loader.load(model, _hf(task, seq_len, image_size, audio_samples, attn, offline))
    make_inputs = resolve_inputs(source, input)
    if options.distributed:
        from graphcalc.commands.verify import verify_distributed

        typer.echo(f"starting {world_size} ranks (gloo, CPU), {steps} steps each...", err=True)
        result = verify_distributed(model, source, options, make_inputs, inputs=input,
                                    tolerance_percent=tolerance,
                                    hf=_hf(task, seq_len, image_size, audio_samples, attn, offline))
    else:
        with Progress(transient=True, console=Console(stderr=True)) as progress:
            task = progress.add_task(f"the prediction (a replay on fake tensors), then {steps} "
                                     f"real steps on {device.value}", total=steps)
            result = run_verify(source, options, make_inputs, tolerance_percent=tolerance,
                                on_step=lambda i: progress.advance(task))
    if fmt.value == "json":
        _emit_json({"model": source.name, "config": result.report.config, "steps": steps,
                    "tolerance_percent": tolerance,
                    "checks": [{"figure": c.figure, "unit": c.unit, "predicted": c.predicted,
                                "measured": c.measured, "error_percent": c.error_percent,
                                "judged": c.judged} for c in result.checks],
                    "failed": [c.figure for c in result.failed]}, output)
        if result.failed:
            raise typer.Exit(1)
        return
    per_rank = f", {shard.value} x {world_size}, per rank" if options.distributed else ""
    table = Table(title=f"{source.name}: batch {batch}{per_rank}, {options.dtype}"
                        f"{', autocast ' + options.amp if options.amp else ''}, "
                        f"{options.optimizer}, {device.value}{_predicted_for(result)}, "
                        f"{steps} steps")
    for col in ("figure", "predicted", "measured", "error"):
        table.add_column(col, justify="left" if col == "figure" else "right")
    for c in result.checks:
        fmt = (format_bytes if c.unit == "B" else format_seconds
               if c.unit == "s" else format_count if c.unit == "FLOP" else (lambda v: f"{v:,}"))
        err = c.error_percent
        table.add_row(c.figure, "--" if c.predicted is None else fmt(c.predicted),
                      "--" if c.measured is None else fmt(c.measured),
                      "--" if err is None else f"{err:+.2f}%")
    if output is not None:
        console = Console(no_color=True, highlight=False, record=True, file=open(os.devnull, "w"))
        console.print(table)
        _write(console.export_text(), output)
    else:
        Console(no_color=True, highlight=False).print(table)
    if result.failed:
        names = ", ".join(f"{c.figure} ({c.error_percent:+.2f}%)" for c in result.failed)
        typer.echo(f"graphcalc: over the {tolerance}% tolerance: {names}", err=True)
        raise typer.Exit(1)


def _predicted_for(result) -> str:
    """', predicted for the H200 141GB (the GPU this runs on, NVIDIA H200)' on a CUDA verify."""
    from graphcalc.units import format_bytes

    g = result.report.gpu
    if g is None:
        return ""
    card = g.gpu or f"a GPU of {format_bytes(g.capacity_bytes)}"
    return f", predicted for the {card}" + (f" ({g.note})" if g.note else "")


@_command
def fit(
    model: str = typer.Argument(..., help=MODEL_HELP),
    memory: Optional[str] = typer.Option(None, help="The memory of the device to fit, e.g. 24GiB: "
                                                    "a GPU's, as on every command (the device "
                                                    "total: reserved + CUDA context), unless "
                                                    "--device cpu makes it a CPU budget (the "
                                                    "peak). With --gpu: that card's memory."),
    gpu: Optional[str] = typer.Option(None, "--gpu", help="Fit the card: what the caching "
                                      "allocator reserves plus the CUDA context, as analyze "
                                      "--gpu. Implies --device cuda."),
    expandable_segments: ExpandableOption = False,
    dtype: DtypeOption = Dtype.fp32,
    optim: OptimOption = Optim.adam,
    amp: AmpOption = None,
    device: Optional[Device] = typer.Option(None, help="Device the memory prediction is for "
                                                       "(default cuda: --memory and --gpu are a "
                                                       "GPU's; cpu: --memory is a CPU budget)."),
    input: InputOption = None,
    check: bool = typer.Option(False, "--verify", help="Run the batch found for real."),
    world_size: WorldSizeOption = 1,
    shard: ShardOption = Shard.none,
    plot: Optional[Path] = typer.Option(None, "--plot", help="Draw the predicted peak against "
                                                             "the batch here (SVG)."),
    task: TaskOption = None,
    seq_len: SeqLenOption = None,
    image_size: ImageSizeOption = None,
    audio_samples: AudioSamplesOption = None,
    attn: AttnOption = None,
    offline: OfflineOption = False,
    checkpoint: CheckpointOption = None,
    batch: Optional[int] = typer.Option(None, "--batch", "-b",
                                        help="With --checkpoint auto: the batch to plan for "
                                             "(default: the largest any plan reaches)."),
    fmt: FiguresFormatOption = FigureFmt.table,
    output: OutputOption = None,
    debug: DebugOption = False,
):
    """The largest batch whose predicted training peak fits the memory budget (no real run).
    With --world-size/--shard: the largest per-rank batch."""
    from graphcalc.sources import loader
    from graphcalc.commands.analyze import resolve_inputs
    from graphcalc.errors import UsageError
    from graphcalc.units import format_bytes, parse_bytes
    from graphcalc.commands.verify import fit_source

    auto, patterns = _checkpoint_choice(checkpoint, memory, fit=True)
    if batch is not None and not auto:
        raise UsageError("fit finds the batch: --batch goes with --checkpoint auto (the batch "
                         "to plan for)")
    if memory is None and gpu is None:
        raise UsageError("give the memory budget with --memory SIZE, or a GPU with --gpu NAME")
    _outputs(model, {"--plot": plot, "-o": output})
    as_json = fmt.value == "json"
    # --memory is the memory of the device fitted, a GPU's as on every command; only an explicit
    # --device cpu makes it a CPU budget (the predicted peak against it)
    on_cpu = gpu is None and device is not None and device.value == "cpu"
    if on_cpu:
        budget = parse_bytes(memory)
        options = _options(1, dtype, optim, amp, device, world_size=world_size, shard=shard,
                           expandable_segments=expandable_segments, checkpoint=patterns)
    else:
        options = _options(1, dtype, optim, amp, device, world_size=world_size, shard=shard,
                           gpu=gpu, memory=memory, expandable_segments=expandable_segments,
                           checkpoint=patterns)
        budget = options.gpu_memory or options.gpu_spec.memory_bytes
    card = "" if on_cpu else (f" on the {options.gpu_spec.name}" if gpu is not None
                              else " on a GPU of that memory")
    figure = "peak" if on_cpu else "device total"
    say = (lambda text: typer.echo(text, err=True)) if as_json or output is not None \
        else typer.echo
    say("Fitting " + (f"the CPU: the predicted peak against {format_bytes(budget)}"
                             if on_cpu else
                             f"{'the ' + options.gpu_spec.name if gpu is not None else 'a GPU'} "
                             f"of {format_bytes(budget)}: the device total (the caching "
                             "allocator's reserved peak + the CUDA context)")
               + f", {options.optimizer}, {options.dtype}"
               + (f", autocast {options.amp}" if options.amp else ""))
    if check and options.distributed:
        raise UsageError("fit --verify runs one device: check a per-rank batch with "
                         "graphcalc verify --world-size N --shard ddp|fsdp")
    if auto and options.distributed:
        raise UsageError("--checkpoint auto plans one device: drop --world-size/--shard")
    source = loader.load(model, _hf(task, seq_len, image_size, audio_samples, attn, offline))
    make_inputs = resolve_inputs(source, input)
    if auto:
        from dataclasses import replace

        from graphcalc.commands.recompute import fit_with_plan, plan_text

        if batch is not None:
            replace(options, batch=batch)  # validates it
        with _Working("fit --checkpoint auto: the first replay", quiet=as_json) as working:
            fitted = fit_with_plan(loader.build_model(source, device="meta"), make_inputs,
                                   options, budget, batch=batch, loss_fn=source.loss,
                                   name=source.name, say=working.say)
        options = replace(options, checkpoint=fitted.plan.patterns)
        result = fitted.with_plan
        if as_json:
            _emit_json(_fit_dict(source, options, budget, on_cpu, result)
                       | {"checkpoint": list(fitted.plan.patterns)}, output)
        else:
            _write(plan_text(fitted.plan, fitted=fitted), output)
        if fitted.with_plan.batch == 0:
            raise typer.Exit(1)
        if check:
            _fit_verify(source, make_inputs, options, result, budget)
        return
    with _Working("fitting: the first analysis", quiet=as_json) as working:
        result = fit_source(source, make_inputs, options, budget,
                            on_analysis=lambda n, b: working.say(
                                f"fitting: analysis {n} (of 3 where the step is affine in the "
                                f"batch), batch {b}"))
    if plot is not None:
        from graphcalc.output.plots import fit_svg, write_svg

        rank = (f" · per rank ({options.shard} x {options.world_size})"
                if options.distributed else "")
        write_svg(plot, fit_svg(result, source.name, f"{options.optimizer} · {options.dtype}"
                                f"{' · autocast ' + options.amp if options.amp else ''} · "
                                f"memory for {options.device}{rank}", budget_label="--memory"))
        typer.echo(f"wrote {plot}", err=True)
    if as_json:
        _emit_json(_fit_dict(source, options, budget, on_cpu, result), output)
        if result.batch == 0:
            raise typer.Exit(1)
        if check:
            _fit_verify(source, make_inputs, options, result, budget, say)
        return
    lines = []
    if result.note:
        lines.append(f"Note: {result.note}")
    if result.batch == 0:
        typer.echo(f"graphcalc: batch {result.smallest_batch} needs "
                   f"{format_bytes(result.peak_bytes)}, more than {format_bytes(budget)}{card}",
                   err=True)
        raise typer.Exit(1)
    rank = (f" per rank ({options.shard} x {options.world_size}, global batch "
            f"{result.batch * options.world_size})") if options.distributed else ""
    lines.append(f"Largest batch{rank} that fits {format_bytes(budget)}{card}: {result.batch} "
                 f"({figure} {format_bytes(result.peak_bytes)})")
    lines.append(f"Recommended (80%): {result.recommended_batch} "
                 f"({figure} {format_bytes(result.recommended_peak_bytes)})")
    if not on_cpu:
        from graphcalc.gpu.gpus import cuda_context

        lines.append(f"Device total: the caching allocator's reserved peak (simulated) + "
                     f"{format_bytes(cuda_context(options.gpu_spec)[0])} CUDA context"
                     + (f"; {options.gpu_note}" if options.gpu_note else ""))
    two = ("two, at batches 2 and 64, give every allocation as a line in the batch, the "
           "simulated allocator the device total at any batch" if not on_cpu
           else "two, at batches 2 and 64, give every live level as a line in the batch")
    last = ", the answer one of them" if result.batch in (2, 64) else ", the last confirms it"
    first = (", batch 1 analysed for the recommendation"
             if result.affine and 1 in dict(result.points) else "")
    how = (f" ({two}{last}{first})" if result.affine
           else " (the step is not affine in the batch: a secant search)"
           if result.evaluations > 3 else "")
    lines.append(f"{result.evaluations} analyses{how}, {options.optimizer}, {options.dtype}"
                 f"{', autocast ' + options.amp if options.amp else ''}, for {options.device}"
                 + (f", checkpointing {' '.join(options.checkpoint)}"
                    if options.checkpoint else ""))
    _write("\n".join(lines) + "\n", output)
    if check:
        _fit_verify(source, make_inputs, options, result, budget, say)


def _fit_dict(source, options, budget, on_cpu, result) -> dict:
    """fit's figures as JSON: what was fitted, the batch found, every batch analysed."""
    from dataclasses import asdict

    d = asdict(result)
    d["points"] = [list(p) for p in result.points]
    return {"model": source.name, "config": options.as_dict(),
            "target": "cpu" if on_cpu else (options.gpu_spec.name if options.gpu
                                            else "a GPU of that memory"),
            "figure": "peak_bytes" if on_cpu else "device_total_bytes"} | d


def _fit_verify(source, make_inputs, options, result, budget, say=typer.echo) -> None:
    """fit --verify: a real step at the batch found (with the checkpointing chosen, if any)."""
    from dataclasses import replace

    from graphcalc.sources import loader
    from graphcalc.commands.measure import measure_step
    from graphcalc.units import format_bytes

    measured = measure_step(loader.build_model(source, device=None), make_inputs,
                            replace(options, batch=result.batch), loss_fn=source.loss)
    verdict = "fits" if measured.peak_bytes <= budget else "DOES NOT FIT"
    say(f"Measured at batch {result.batch} on {options.device}: "
               f"{format_bytes(measured.peak_bytes)}: {verdict}")
    if measured.peak_bytes > budget:
        raise typer.Exit(1)
