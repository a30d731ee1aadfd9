"""`graphcalc` on the command line: a thin adapter over the graphcalc library.

This is the only place where exceptions become exit codes:
0 ok; 1 a check failed (budget exceeded, --strict with unknown ops, verify over tolerance);
2 bad input (file, model, options, shapes); 3 an internal error (a bug: run with --debug).
"""

from __future__ import annotations

import functools
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, List, Optional

import typer

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  rich_markup_mode=None,  # help is plain text: [tool.graphcalc] is no markup
                  help="Parameters, FLOPs and training memory of a PyTorch model, without a GPU. "
                       "Analysing a model file executes it, as importing it would.")

def _print_version(asked: bool) -> None:
    if not asked:
        return
    from importlib.metadata import PackageNotFoundError, version

    from graphcalc.version import __version__

    try:  # torch's own version without importing torch (seconds): the installed distribution's
        torch_version = version("torch")
    except PackageNotFoundError:
        import torch

        torch_version = torch.__version__
    typer.echo(f"graphcalc {__version__} (torch {torch_version})")
    raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print graphcalc's version and torch's, and exit."),
) -> None:
    """Parameters, FLOPs and training memory of a PyTorch model, without a GPU."""


Dtype = Enum("Dtype", {k: k for k in ("fp32", "fp16", "bf16")}, type=str)
Amp = Enum("Amp", {k: k for k in ("bf16", "fp16")}, type=str)
Optim = Enum("Optim", {k: k for k in ("sgd", "momentum", "adam", "adamw", "rmsprop", "adagrad")},
             type=str)
Device = Enum("Device", {k: k for k in ("cpu", "cuda")}, type=str)
Fmt = Enum("Fmt", {k: k for k in ("table", "json", "csv", "md")}, type=str)
Shard = Enum("Shard", {k: k for k in ("none", "ddp", "zero1", "zero2", "fsdp")}, type=str)
WORLD_HELP = ("Data-parallel ranks (GPUs; gloo processes under --device cpu); with --shard, the "
              "figures are per rank.")
ROUTING_HELP = ("Mixture-of-experts routing assumed where the figures depend on it: balanced "
                "(tokens x k spread evenly over the experts), worst (every token to the same "
                "k experts) or capacity:C (no expert over C x its balanced load, e.g. "
                "capacity:1.25).")
FUSED_HELP = ("The optimizer's fused kernels (torch.optim's fused=True: sgd, momentum, adam, "
              "adamw, adagrad); a CUDA step runs the foreach ones by default.")
GPU_HELP = ("The GPU the step is for, as you would name it or nvidia-smi prints it (h100, "
            "a100-80gb, 'NVIDIA GeForce RTX 4090', t4...): what the caching allocator reserves, "
            "the CUDA context and whether it fits. Implies --device cuda.")
GPU_MEMORY_HELP = ("The GPU's memory, e.g. 24GiB, for a card not in the list (or instead of the "
                   "listed figure). Implies --device cuda; with an explicit --device cpu it is "
                   "the CPU step's budget (the peak against it).")
EXPANDABLE_HELP = "Simulate PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True."
SHARD_HELP = ("How the ranks split the state: ddp (replicated, gradient buckets), zero1 (optimizer "
              "state sharded), zero2 (and gradients), fsdp (and parameters, as fully_shard).")


CHECKPOINT_HELP = ("Run these modules under torch.utils.checkpoint (use_reentrant=False): a module "
                   "path pattern, `*` standing for one name between dots (h.* is every block of "
                   "h, layers.*.mlp every block's MLP); repeatable. `auto` (with --memory) "
                   "chooses them so that the step fits, at the least recompute.")


def _fail(e: BaseException, debug: bool) -> None:
    from graphcalc.errors import GraphcalcError

    if debug:
        raise e
    if isinstance(e, GraphcalcError):
        typer.echo(f"graphcalc: {e}", err=True)
        raise typer.Exit(e.exit_code)
    typer.echo(f"graphcalc: internal error: {type(e).__name__}: {e} (run with --debug for the "
               "traceback)", err=True)
    raise typer.Exit(3)


class _Terminated(BaseException):
    """SIGTERM, raised where the process is, so that every `finally` runs: child processes
    (verify's ranks, check's budget workers) are ended and temporary folders removed."""


def _on_sigterm(signum, frame):
    raise _Terminated()


class _ModelExit(BaseException):
    """os._exit called by model code in graphcalc's own process (see _model_cannot_exit)."""


def _model_cannot_exit():
    """While a command runs, os._exit in this process (model code: graphcalc's own calls are in
    child processes) raises instead of ending it, so that the model never decides the exit code;
    returns the function that puts os._exit back."""
    import os

    real, pid = os._exit, os.getpid()

    def guarded(code=0):
        if os.getpid() != pid:  # a forked child: its own business
            real(code)
        raise _ModelExit(code)

    os._exit = guarded

    def restore():
        os._exit = real

    return restore


def _command(fn):
    """A command whose every error becomes one sentence and an exit code (`_fail`); model code
    that ends the process (sys.exit, os._exit, a BaseException) is an error of the model's,
    never a silent exit 0."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        from graphcalc.errors import ModelBuildError

        debug = kwargs.get("debug", False)
        if debug:
            from graphcalc import torchlogs

            torchlogs.show(True)  # torch's own error logs too, tracebacks included
        restore = _model_cannot_exit()
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except _Terminated:
            if debug:
                raise
            typer.echo("graphcalc: stopped by SIGTERM; no figures", err=True)
            raise typer.Exit(143) from None  # 128 + SIGTERM, as a shell reports it
        except _ModelExit as e:
            _fail(ModelBuildError(f"the model called os._exit({e.args[0] if e.args else 0}) "
                                  "while graphcalc ran it: no figures"), debug)
        except SystemExit as e:
            _fail(ModelBuildError(f"the model called sys.exit({e.code!r}) while graphcalc ran "
                                  "it: no figures"), debug)
        except Exception as e:  # noqa: BLE001 - the one place errors become exit codes
            _fail(e, debug)
        except KeyboardInterrupt:
            raise
        except BaseException as e:  # noqa: BLE001 - a model's own BaseException subclass
            _fail(ModelBuildError(f"the model raised {type(e).__name__}: {e}; no figures"),
                  debug)
        finally:
            restore()

    return app.command()(run)


def _outputs(model: str, writes: dict) -> None:
    """Refuse, before the model runs, an output path that is the model file or another
    output's (graphcalc.outputs)."""
    from graphcalc.sources.loader import split_spec
    from graphcalc.outputs import check_outputs

    reads = [] if model.startswith("hf:") else [Path(split_spec(model)[0])]
    check_outputs(reads, writes)


def _model_prints_to_stderr():
    """While the model's code runs (its file imported, its step replayed), what it prints goes
    to stderr: stdout holds the output alone (`--format json` stays parseable)."""
    import contextlib

    return contextlib.redirect_stdout(sys.stderr)


def _write(text: str, output: Optional[Path]) -> None:
    if output is None:
        sys.stdout.write(text)
    else:
        from graphcalc.outputs import write_atomic

        write_atomic(output, text)
        typer.echo(f"wrote {output}", err=True)


MEMORY_LINE_HELP = ("The memory of the device, e.g. 24GiB, drawn as a line on the memory "
                    "timeline: a GPU's, as on every command (the CUDA step is drawn), unless "
                    "--device cpu.")
MODEL_HELP = ("FILE[:NAME]: a Python file defining build_model(), a `model`, or one nn.Module "
              "subclass; NAME picks an instance, class or factory. The file is executed. Or a "
              "Hugging Face model by its config: hf:NAME (read from the local Hugging Face cache, "
              "else the hub; never weights), a config.json, or a model folder.")
TASK_HELP = ("Hugging Face configs: the head, causal-lm, masked-lm, seq2seq, speech-seq2seq, "
             "seq-cls, token-cls, image-cls, semantic-seg, ctc or audio-cls (default: seq2seq "
             "for encoder-decoders, masked-lm for encoders, image-cls for vision, ctc for "
             "speech, else causal-lm).")
SEQ_HELP = ("Hugging Face configs: tokens per sample (default: min(the config's max positions, "
            "2048)).")
IMAGE_HELP = "Hugging Face vision configs: image side (default: the config's image_size, or 224)."
AUDIO_HELP = "Hugging Face speech configs: audio samples per sample (default 16000: 1 s at 16 kHz)."
ATTN_HELP = ("Hugging Face configs: attention as transformers calls it (sdpa, eager; flash is "
             "refused: flash_attention_2 needs a GPU); default: the model's own.")
OFFLINE_HELP = "hf:NAME: read the config from the local Hugging Face cache only, never the hub."


def _hf(task, seq_len, image_size, audio_samples, attn, offline):
    """The options of a model by its Hugging Face config (graphcalc.sources.hf), validated there."""
    from graphcalc.sources.hf import HFOptions

    return HFOptions(task=task, seq_len=seq_len, image_size=image_size,
                     audio_samples=audio_samples, attn=attn, offline=offline)


# --- options shared by the commands: each declared once, the same meaning wherever it is taken ---

BatchOption = Annotated[int, typer.Option("--batch", "-b", help="Batch size.")]
DtypeOption = Annotated[Dtype, typer.Option(help="Dtype of the model and its floating inputs.")]
OptimOption = Annotated[Optim, typer.Option("--optim", help="Optimizer of the training step.")]
AmpOption = Annotated[Optional[Amp], typer.Option(help="Autocast dtype (fp32 master weights).")]
InputOption = Annotated[Optional[List[str]], typer.Option(
    "--input", "-i", help="Input shape without the batch, e.g. 3x224x224, 128:int64, or :int64 "
    "for shape (batch,); repeatable.")]
FormatOption = Annotated[Fmt, typer.Option("--format", "-f", help="Output format.")]
OutputOption = Annotated[Optional[Path], typer.Option("--output", "-o",
                                                      help="Write to this file.")]
TaskOption = Annotated[Optional[str], typer.Option("--task", help=TASK_HELP)]
SeqLenOption = Annotated[Optional[int], typer.Option("--seq-len", help=SEQ_HELP)]
ImageSizeOption = Annotated[Optional[int], typer.Option("--image-size", help=IMAGE_HELP)]
AudioSamplesOption = Annotated[Optional[int], typer.Option("--audio-samples", help=AUDIO_HELP)]
AttnOption = Annotated[Optional[str], typer.Option("--attn", help=ATTN_HELP)]
OfflineOption = Annotated[bool, typer.Option("--offline", help=OFFLINE_HELP)]
ExpandableOption = Annotated[bool, typer.Option("--expandable-segments", help=EXPANDABLE_HELP)]
WorldSizeOption = Annotated[int, typer.Option("--world-size", help=WORLD_HELP)]
ShardOption = Annotated[Shard, typer.Option("--shard", help=SHARD_HELP)]
FusedOption = Annotated[bool, typer.Option("--fused", help=FUSED_HELP)]
CheckpointOption = Annotated[Optional[List[str]], typer.Option("--checkpoint",
                                                               help=CHECKPOINT_HELP)]
RoutingOption = Annotated[str, typer.Option(help=ROUTING_HELP)]
DebugOption = Annotated[bool, typer.Option(help="Show tracebacks.")]
FigureFmt = Enum("FigureFmt", {k: k for k in ("table", "json")}, type=str)
FiguresFormatOption = Annotated[FigureFmt, typer.Option(
    "--format", "-f", help="Output format: the table, or the same figures as JSON.")]


class _Working:
    """What a command is doing, on a terminal only (stderr; nothing on a pipe or a file, so
    --format json and CI logs are untouched): rich's spinner with a line that `say` updates."""

    def __init__(self, text: str, quiet: bool = False):
        self.text, self.status = text, None
        self.on = not quiet and sys.stderr.isatty()

    def __enter__(self):
        if self.on:
            from rich.console import Console

            self.status = Console(stderr=True).status(self.text)
            self.status.start()
        return self

    def say(self, text: str) -> None:
        if self.status is not None:
            self.status.update(text)

    def __exit__(self, *exc):
        if self.status is not None:
            self.status.stop()
        return False


def _emit_json(data: dict, output: Optional[Path]) -> None:
    """A command's figures as JSON, on stdout or to -o (every figure an int or a float)."""
    import json

    _write(json.dumps(data, indent=2) + "\n", output)


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
            with _Working("--checkpoint auto: replaying the step with each candidate "
                          "checkpointed", quiet=fmt.value == "json"):
                planned = _auto_plan(model, options, input, memory, hf)
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
    report = analyze_file(model, options, inputs=input,
                          hf=_hf(task, seq_len, image_size, audio_samples, attn, offline),
                          on_replay=kept.append)
    c = line_up(recorded, predicted_snapshot(kept[-1]))
    if fmt == FigureFmt.json:
        _emit_json({"model": report.model, "config": options.as_dict(), "snapshot": str(real), **as_dict(c, top=top)},
                   output)
    else:
        _write(render(c, top=top) + "\n", output)


def _cpu_budget(device, gpu, memory) -> Optional[int]:
    """--memory as a CPU budget: only with an explicit --device cpu (and no --gpu)."""
    from graphcalc.units import parse_bytes

    if memory is None or gpu is not None or device is None or device.value != "cpu":
        return None
    return parse_bytes(memory)


def _budget(memory: Optional[str]) -> Optional[int]:
    from graphcalc.units import parse_bytes

    return parse_bytes(memory) if memory is not None else None


def _card_line(report) -> tuple[Optional[int], str]:
    """The line a timeline draws for the GPU named (--gpu) or the memory given (--memory)."""
    g = report.gpu
    if g is None or g.capacity_bytes is None:
        return None, "--memory"
    return g.capacity_bytes, g.gpu or "--memory"


def _timeline(report, path: Path, budget: Optional[int], label: str = "--memory") -> None:
    from graphcalc.output.plots import timeline_svg, write_svg

    write_svg(path, timeline_svg(report, budget, label))
    typer.echo(f"wrote {path}", err=True)


def _options(batch, dtype, optim, amp, device, steps=2, world_size=1, shard=None, routing=None,
             fused=False, gpu=None, memory=None, expandable_segments=False, checkpoint=()):
    from graphcalc.errors import UsageError
    from graphcalc.options import Options
    from graphcalc.units import parse_bytes

    target = gpu is not None or memory is not None
    if device is None:
        device_name = "cuda" if target else "cpu"
    else:
        device_name = device.value
        if target and device_name != "cuda":
            flag = "--gpu" if gpu is not None else "--memory"
            raise UsageError(f"{flag} predicts a GPU step: drop --device {device_name} or use "
                             "--device cuda")
    if expandable_segments and device_name != "cuda":
        raise UsageError("--expandable-segments is a CUDA allocator setting: use it with --gpu "
                         "or --device cuda")
    return Options(batch=batch, dtype=dtype.value, optimizer=optim.value,
                   amp=amp.value if amp else None, device=device_name, steps=steps,
                   world_size=world_size, shard=shard.value if shard else "none",
                   routing=routing or "balanced", fused=fused, gpu=gpu,
                   gpu_memory=parse_bytes(memory) if memory is not None else None,
                   expandable_segments=expandable_segments,
                   checkpoint=tuple(checkpoint or ()))


def _checkpoint_choice(checkpoint, memory, *, fit=False) -> tuple[bool, tuple[str, ...]]:
    """(--checkpoint auto?, the patterns otherwise), with --memory checked against them."""
    from graphcalc.errors import UsageError

    given = tuple(checkpoint or ())
    auto = any(p.strip().lower() == "auto" for p in given)
    if auto and len(given) > 1:
        raise UsageError("--checkpoint auto chooses every module itself: give it alone")
    if auto and memory is None:
        raise UsageError("--checkpoint auto chooses the modules for a memory budget: give "
                         "--memory too, e.g. --memory 16GiB")
    if memory is not None and not auto and not fit:
        raise UsageError("--memory goes with --checkpoint auto here (graphcalc fit finds the "
                         "largest batch for a budget)")
    return auto, () if auto else given


def _auto_plan(spec, options, inputs, memory, hf=None):
    from graphcalc.sources import loader
    from graphcalc.commands.analyze import resolve_inputs
    from graphcalc.commands.recompute import plan
    from graphcalc.units import parse_bytes

    if options.distributed:
        from graphcalc.errors import UsageError

        raise UsageError("--checkpoint auto plans one device: drop --world-size/--shard")
    source = loader.load(spec, hf)
    make_inputs = resolve_inputs(source, inputs)
    model = loader.build_model(source, device="meta")
    return plan(model, make_inputs, options, parse_bytes(memory), loss_fn=source.loss,
                name=source.name)


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
        fitted = fit_with_plan(loader.build_model(source, device="meta"), make_inputs, options,
                               budget, batch=batch, loss_fn=source.loss, name=source.name)
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
    two = ("two give every allocation as a line in the batch, the simulated allocator the "
           "device total at any batch" if not on_cpu else "two give every live level as a line in the batch")
    first = (", batch 1 running other kernels: the lines from batch 2"
             if result.evaluations == 4 else "")
    how = (f" ({two}, the last confirms it{first})" if result.affine
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
    run = budgets.check(cfg, changed=files, cache=cache, update_baseline=update_baseline)
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


# --- render: the layer graph with its figures (graphcalc.output.render) ---------------------------------

PictureFmt = Enum("PictureFmt", {k: k for k in ("svg", "png", "pdf", "dot")}, type=str)
ColorBy = Enum("ColorBy", {k: k for k in ("flops", "memory", "params")}, type=str)
Engine = Enum("Engine", {k: k for k in ("auto", "dot", "embedded")}, type=str)


def _picture(report, path: Optional[Path], fmt: Optional[str], **options) -> None:
    from graphcalc.output.render import format_for, render, write_picture

    if path is None:
        chosen = format_for(None, fmt)
        if chosen in ("png", "pdf"):
            from graphcalc.errors import RenderError

            raise RenderError(f"{chosen} is binary: give a file with -o FILE")
        sys.stdout.write(render(report, chosen, **options).decode())
        return
    write_picture(report, path, fmt, **options)
    typer.echo(f"wrote {path}", err=True)


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
    picture = render_ops(trace_file(model, options, inputs=inputs), fmt, layer=layer,
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
    with _model_prints_to_stderr():
        step = trace_file(model, options, inputs=input)
    if fmt.value == "json":
        text = to_json(step, model, options.as_dict())
    else:
        text = to_code(step, model)
    _write(text, output)


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, _on_sigterm)
    app()


if __name__ == "__main__":
    main()
