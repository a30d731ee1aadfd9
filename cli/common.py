"""What the commands share: the app, each option declared once, errors into exit codes.

This is the only place where exceptions become exit codes:
0 ok; 1 a check failed (budget exceeded, --strict with unknown ops, verify over tolerance);
2 bad input (file, model, options, shapes); 3 an internal error (a bug: run with --debug).
"""

from __future__ import annotations

import functools
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


def _auto_plan(spec, options, inputs, memory, hf=None, say=None):
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
                name=source.name, say=say)


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
