"""check and plan: budgets for pre-commit and CI, and per-rank memory over world sizes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer

from .common import (AmpOption, AttnOption, AudioSamplesOption, DebugOption, Device, Dtype,
                     DtypeOption, ExpandableOption, FigureFmt, FiguresFormatOption,
                     ImageSizeOption, InputOption, MODEL_HELP, OfflineOption, Optim, OptimOption,
                     OutputOption, SeqLenOption, Shard, TaskOption, _Working, _command, _emit_json,
                     _hf, _options, _outputs, _write)


# --- check: budgets for pre-commit and CI ---------------------------------------------------------

@_command
def check(
    files: Optional[List[Path]] = typer.Argument(
        None, help="Changed files (pre-commit passes them): only the budgets whose model file or "
                   "its local imports are among them are checked; all when omitted."),
    config: Optional[Path] = typer.Option(
        None, "--config", "-c", help="The config file; else graphcalc.toml or a pyproject.toml "
                                     "with [tool.graphcalc], from here upwards."),
    update_baseline: bool = typer.Option(False, "--update-baseline",
                                         help="Write the figures to the baseline file, for "
                                              "max_growth; commit it."),
    fmt: FiguresFormatOption = FigureFmt.table,
    output: OutputOption = None,
    no_cache: bool = typer.Option(False, "--no-cache", help="Analyse every model again."),
    debug: DebugOption = False,
):
    """Check the models against their budgets (exit 1 when one is exceeded, 2 on a bad config)."""
    import json

    from graphcalc.commands import budget as budgets
    from graphcalc.commands import budget_cache, budget_text
    from graphcalc.errors import BudgetError

    cfg = budgets.load_config(config if config is not None else budgets.find_config())
    cache = None if no_cache else budgets.Cache(budget_cache.default_cache_dir())
    with _Working("check: the budgets", quiet=fmt.value == "json") as working:
        run = budgets.check(cfg, changed=files, cache=cache, update_baseline=update_baseline,
                            on_budget=lambda b: working.say(f"check: budget {b.name} "
                                                            f"({b.model}, batch "
                                                            f"{b.options.batch})"))
    if fmt.value == "json":
        _write(json.dumps(run.to_dict(), indent=2) + "\n", output)
    elif run.outcomes:
        _print_budgets(run, output)
    if update_baseline:
        typer.echo(f"wrote {run.config.baseline_path} ({len(run.outcomes)} "
                   f"budget{'s' if len(run.outcomes) != 1 else ''})", err=True)
    if not run.outcomes:
        typer.echo(f"graphcalc: no budgeted model among the {len(files or [])} changed files",
                   err=True)
    errors = [budget_text.failures_text(o) for o in run.outcomes if o.error is not None]
    if errors:  # a budget not evaluated fails the gate: exit 2, as a bad input does
        from graphcalc.errors import ModelBuildError

        raise ModelBuildError(f"{len(errors)} budget{'s' if len(errors) != 1 else ''} could "
                              f"not be checked: {'; '.join(errors)}")
    failures = [budget_text.failures_text(o) for o in run.outcomes if not o.ok]
    if failures:
        raise BudgetError(f"budget exceeded: {'; '.join(failures)}")


# --- plan: per-rank memory over world sizes and sharding strategies (graphcalc.ranks.distributed) -------

@_command
def plan(
    model: str = typer.Argument(..., help=MODEL_HELP),
    batch: int = typer.Option(..., "--batch", "-b", help="Global batch, split over the ranks."),
    memory: Optional[str] = typer.Option(None, help="Memory of each GPU (each rank), e.g. "
                                                    "80GiB (with --gpu: instead of its figure)."),
    gpu: Optional[str] = typer.Option(None, "--gpu", help="The GPU of each rank: the fit is "
                                      "judged on what its device holds (reserved + CUDA "
                                      "context), as analyze --gpu."),
    expandable_segments: ExpandableOption = False,
    world_size: Optional[List[int]] = typer.Option(
        None, "--world-size", help="World sizes to try (repeatable); default: 1, 2, 4 ... 64 "
                                   "where they divide the batch."),
    shard: Optional[List[Shard]] = typer.Option(None, "--shard",
                                                help="Strategies (repeatable); default: all."),
    dtype: DtypeOption = Dtype.fp32,
    optim: OptimOption = Optim.adam,
    amp: AmpOption = None,
    device: Device = typer.Option("cuda", help="Device the memory prediction is for: GPUs "
                                               "(NCCL) by default, or CPU ranks (gloo)."),
    input: InputOption = None,
    task: TaskOption = None,
    seq_len: SeqLenOption = None,
    image_size: ImageSizeOption = None,
    audio_samples: AudioSamplesOption = None,
    attn: AttnOption = None,
    offline: OfflineOption = False,
    fmt: FiguresFormatOption = FigureFmt.table,
    output: OutputOption = None,
    debug: DebugOption = False,
):
    """Per-rank peak, per-rank batch, fit and bytes sent per step, over world sizes and sharding
    (for GPUs unless --device cpu)."""
    from rich.console import Console
    from rich.table import Table

    from graphcalc.sources import loader
    from graphcalc.commands.analyze import resolve_inputs
    from graphcalc.ranks.distributed import STRATEGIES
    from graphcalc.ranks.distributed import plan as make_plan
    from graphcalc.errors import UsageError
    from graphcalc.units import format_bytes

    from graphcalc.units import parse_bytes

    if memory is None and gpu is None:
        raise UsageError("give each GPU's memory with --memory SIZE, or the GPU with --gpu NAME")
    _outputs(model, {"-o": output})
    if batch < 1:
        raise UsageError(f"batch must be at least 1, got {batch}")
    if gpu is None:
        budget = parse_bytes(memory)
        options = _options(1, dtype, optim, amp, device,
                           expandable_segments=expandable_segments)
    else:
        options = _options(1, dtype, optim, amp, device, gpu=gpu, memory=memory,
                           expandable_segments=expandable_segments)
        budget = options.gpu_memory or options.gpu_spec.memory_bytes
    shards = [s.value for s in shard] if shard else list(STRATEGIES)
    if "none" in shards:
        raise UsageError("--shard none is world size 1, always in the table")
    source = loader.load(model, _hf(task, seq_len, image_size, audio_samples, attn, offline))
    make_inputs = resolve_inputs(source, input)
    replayed, read = [], []

    def on_replay(b: int, k: int, n: int) -> None:
        (replayed if k else read).append(b)
        if k:
            working.say(f"plan: replay {k} (per-rank batch {b}) of at most {n}")

    with _Working(f"plan: per-rank batches of {batch}", quiet=fmt.value == "json") as working:
        rows = make_plan(loader.build_model(source, device="meta"), make_inputs, options,
                         global_batch=batch, memory_bytes=budget,
                         world_sizes=world_size or None, shards=shards, loss_fn=source.loss,
                         on_replay=on_replay)
    how = (f"{len(replayed)} replays (per-rank batch {', '.join(map(str, replayed))})"
           + (f"; {', '.join(map(str, sorted(read)))} read off their lines" if read else ""))
    unit = "GPU" if options.device == "cuda" else "rank"  # --device cpu: gloo processes
    if fmt.value == "json":
        from dataclasses import asdict

        _emit_json({"model": source.name, "config": options.as_dict(), "global_batch": batch,
                    "memory_bytes": budget, "unit": unit,
                    "gpu": options.gpu_spec.name if gpu is not None else None,
                    "rows": [asdict(r) for r in rows], "replayed_batches": replayed,
                    "batches_read_off_lines": sorted(read)}, output)
        return
    card = f" ({options.gpu_spec.name}, device totals)" if gpu is not None else ""
    table = Table(title=f"{source.name}: global batch {batch}, {format_bytes(budget)} per "
                        f"{unit}{card}, {options.dtype}"
                        f"{', autocast ' + options.amp if options.amp else ''}"
                        f", {options.optimizer}, for {options.device}")
    for col in (f"{unit}s", "shard", f"batch/{unit}",
                f"peak/{unit}" if gpu is None else f"held/{unit}", "fits",
                f"sent/{unit}/step"):
        table.add_column(col, justify="left" if col == "shard" else "right")
    for r in rows:
        table.add_row(str(r.world_size), r.shard, str(r.per_rank_batch),
                      format_bytes(r.peak_bytes if r.device_total_bytes is None
                                   else r.device_total_bytes), "yes" if r.fits else "no",
                      format_bytes(r.communicated_bytes) if r.world_size > 1 else "--")
    console = Console(no_color=True, highlight=False, width=100, record=output is not None,
                      file=open(os.devnull, "w") if output is not None else None)
    console.print(table)
    console.print(how)
    if output is not None:
        _write(console.export_text(), output)


def _print_budgets(run, output: Optional[Path] = None) -> None:
    from graphcalc.commands import budget_text
    from rich.console import Console
    from rich.table import Table

    failed = sum(not o.ok for o in run.outcomes)
    title = (f"graphcalc check: {len(run.outcomes) - failed} of {len(run.outcomes)} budgets "
             "hold"
             + (f", {run.skipped} untouched" if run.skipped else ""))
    table = Table(title=title)
    for col in ("budget", "figure", "value", "limit", "verdict"):
        table.add_column(col, justify="right" if col in ("value", "limit") else "left")
    for o in run.outcomes:
        opts = o.budget.options
        setup = (f"batch {opts.batch}, {opts.dtype}{', autocast ' + opts.amp if opts.amp else ''},"
                 f" {opts.optimizer}" + (f", on {opts.gpu_spec.name}" if opts.gpu else "")
                 + (", cached" if o.cached else ""))
        if o.error is not None:
            table.add_row(o.budget.name, "analysis", "", "", f"FAIL: {o.error}")
            table.add_row(setup, "", "", "", "")
            table.add_section()
            continue
        for i, c in enumerate(o.checks):
            figure = budget_text.LABELS[c.figure] + (" growth" if c.kind == "growth" else "")
            table.add_row(o.budget.name if i == 0 else (setup if i == 1 else ""), figure,
                          budget_text.value_text(c), budget_text.limit_text(c),
                          budget_text.verdict_text(c))
        if len(o.checks) == 1:
            table.add_row(setup, "", "", "", "")
        if o.figures.unknown_ops:
            table.add_row("", "note", "", "", "FLOPs incomplete: no formula for "
                                              + ", ".join(o.figures.unknown_ops))
        for layer in o.figures.opaque_layers:
            table.add_row("", "note", "", "", f"incomplete: layer '{layer}' reads tensor values "
                                              "and was analysed around")
        table.add_section()
    # A wide, uncoloured table: CI logs and pre-commit's output are no terminal.
    console = Console(no_color=True, highlight=False, width=max(Console().width, 120),
                      record=output is not None,
                      file=open(os.devnull, "w") if output is not None else None)
    console.print(table)
    if output is not None:
        _write(console.export_text(), output)
