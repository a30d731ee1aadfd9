"""`graphcalc` on the command line: a thin adapter over the graphcalc library.

This is the only place where exceptions become exit codes:
0 ok; 1 a check failed (budget exceeded, --strict with unknown ops, verify over tolerance);
2 bad input (file, model, options, shapes); 3 an internal error (a bug: run with --debug).
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="Parameters, FLOPs and training memory of a PyTorch model, without a GPU. "
                       "Analysing a model file executes it, as importing it would.")

@app.callback()
def _root() -> None:
    """Parameters, FLOPs and training memory of a PyTorch model, without a GPU."""


Dtype = Enum("Dtype", {k: k for k in ("fp32", "fp16", "bf16")}, type=str)
Amp = Enum("Amp", {k: k for k in ("bf16", "fp16")}, type=str)
Optim = Enum("Optim", {k: k for k in ("sgd", "momentum", "adam", "adamw", "rmsprop", "adagrad")},
             type=str)
Device = Enum("Device", {k: k for k in ("cpu", "cuda")}, type=str)
Fmt = Enum("Fmt", {k: k for k in ("table", "json", "csv", "md")}, type=str)


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


def _write(text: str, output: Optional[Path]) -> None:
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
        typer.echo(f"wrote {output}", err=True)


MODEL_HELP = ("FILE[:NAME]: a Python file defining build_model(), a `model`, or one nn.Module "
              "subclass; NAME picks an instance, class or factory. The file is executed.")


@app.command()
def analyze(
    model: str = typer.Argument(..., help=MODEL_HELP),
    batch: int = typer.Option(1, "--batch", "-b", help="Batch size."),
    dtype: Dtype = typer.Option("fp32", help="Dtype of the model and its floating inputs."),
    optim: Optim = typer.Option("adam", "--optim", help="Optimizer of the training step."),
    amp: Optional[Amp] = typer.Option(None, help="Autocast dtype (fp32 master weights)."),
    device: Device = typer.Option("cpu", help="Device the memory prediction is for."),
    input: Optional[List[str]] = typer.Option(None, "--input", "-i",
                                              help="Input shape without the batch, e.g. 3x224x224 "
                                                   "or 128:int64; repeatable."),
    fmt: Fmt = typer.Option("table", "--format", "-f", help="Output format."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to this file."),
    depth: Optional[int] = typer.Option(None, help="Fold layers deeper than this depth."),
    strict: bool = typer.Option(False, help="Exit 1 when an op has no FLOP formula."),
    debug: bool = typer.Option(False, help="Show tracebacks."),
):
    """Parameters, FLOPs, activations and peak training memory, per layer and in total."""
    try:
        from graphcalc.analyze import analyze_file
        from graphcalc.errors import IncompleteError, UsageError
        from graphcalc.formatting import render
        from graphcalc.options import Options

        if depth is not None and depth < 0:
            raise UsageError(f"depth must be 0 or more, got {depth}")
        options = Options(batch=batch, dtype=dtype.value, optimizer=optim.value,
                          amp=amp.value if amp else None, device=device.value)
        report = analyze_file(model, options, inputs=input)
        _write(render(report.at_depth(depth), fmt.value), output)
        if strict and not report.complete:
            ops = ", ".join(op for op, _ in report.unknown_ops)
            raise IncompleteError(f"no FLOP formula for {ops}: the FLOP figures are incomplete")
    except typer.Exit:
        raise
    except Exception as e:  # noqa: BLE001 - the one place errors become exit codes
        _fail(e, debug)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
