"""How close graphcalc's predicted peak training memory is to a measured one.

For every sample in samples/*.py, every small Hugging Face model of bench/hf_models.py (the
mixture-of-experts ones once a routing, balanced and worst, their real steps routed the same way),
every model of the test zoo (tests/zoo/*.py) and of bench/rnn_models.py, for
{sgd, adam} x {fp32, amp bf16}:
  predicted = analyze_module(model, ...).memory.peak_bytes   (fake tensors, on a real-built model)
  measured  = measure_step(other_model, ...).peak_bytes      (a real step on another real build)
  error %   = (predicted - measured) / measured * 100

Usage:
  .venv/bin/python bench/accuracy.py                 # everything, on the CPU
  .venv/bin/python bench/accuracy.py --quick         # fp32 sgd+adam, seed samples + 3 HF models
  .venv/bin/python bench/accuracy.py --device cuda   # measured by torch.cuda.max_memory_allocated
  .venv/bin/python bench/accuracy.py --only gpt2     # models whose name contains 'gpt2'
  .venv/bin/python bench/accuracy.py --set zoo --out bench/results/accuracy-cpu-zoo.md

Prints a table and a summary and writes the same as Markdown to bench/results/accuracy-<device>.md
(or accuracy-<device>-quick.md with --quick). A model that fails to analyse or to measure gets
its error message in the table; the run goes on.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import math
import platform
import shlex
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import hf_models  # noqa: E402  (sets HF_HUB_OFFLINE before transformers is imported)
import torch  # noqa: E402

from graphcalc.sources import loader  # noqa: E402
from graphcalc.commands.analyze import analyze_module  # noqa: E402
from graphcalc.commands.measure import measure_step  # noqa: E402
from graphcalc.options import Options  # noqa: E402
from graphcalc.routing import ForcedRouting  # noqa: E402

SAMPLES = ROOT / "samples"
# The seed tutorials' models (README: "samples/ holds every model of the seed tutorials").
SEED_SAMPLES = ("mnist_mlp", "cifar_mlp", "seed_cnn", "seed_cnn_bn", "lenet_bn", "residual",
                "resnet18", "course_cnn", "conv_arith")
# Big samples run at batch 1 to keep the CPU time reasonable; everything else at batch 2.
BIG_SAMPLES = {"resnet50": 1, "vit_b16": 1, "gpt2": 1}
DEFAULT_BATCH = 2
PRECISIONS = {"fp32": None, "amp bf16": "bf16"}
OPTIMIZERS = ("sgd", "adam")


@dataclass
class Case:
    """One model: how to build a fresh real copy of it, with its inputs and loss."""

    name: str
    build: callable  # () -> (model, make_inputs, loss_fn)
    batch: int
    routing: str = "balanced"
    forced: bool = False  # its real steps routed as assumed (a mixture of experts)
    optimizers: tuple[str, ...] = OPTIMIZERS


@dataclass
class Row:
    model: str
    optim: str
    precision: str
    batch: int
    predicted: int | None = None
    measured: int | None = None
    error: str | None = None
    analyse_s: float = 0.0
    measure_s: float = 0.0

    @property
    def error_pct(self) -> float | None:
        if self.predicted is None or self.measured is None or not self.measured:
            return None
        return (self.predicted - self.measured) / self.measured * 100


def sample_cases(names=None) -> list[Case]:
    return [Case(path.stem, _file_builder(path), BIG_SAMPLES.get(path.stem, DEFAULT_BATCH))
            for path in sorted(SAMPLES.glob("*.py")) if names is None or path.stem in names]


def _builder(module, name):
    """A case's build() for a builder of bench/hf_models.py or bench/rnn_models.py."""
    def build():
        _, model, make_inputs, loss_fn = module.build(name)
        return model, make_inputs, loss_fn
    return build


def _file_builder(path):
    def build():
        src = loader.load(str(path))  # build_model(): llama's small config, not 7b / 70b
        return loader.build_model(src, device=None), src.example_inputs, src.loss
    return build


def hf_cases(names=None) -> list[Case]:
    return [Case(name, _builder(hf_models, name), DEFAULT_BATCH) for name in hf_models.BUILDERS
            if names is None or name in names]


def moe_cases(names=None) -> list[Case]:
    return [Case(f"{name} {routing}", _builder(hf_models, name), DEFAULT_BATCH, routing,
                 forced=True)
            for name in hf_models.MOE for routing in ("balanced", "worst")
            if names is None or name in names or f"{name} {routing}" in names]


ZOO = ROOT / "tests" / "zoo"
ZOO_OPTIMIZERS = {"sparse_embedding": ("sgd", "momentum")}  # Adam refuses sparse gradients


def zoo_cases(names=None) -> list[Case]:
    """The test zoo (tests/zoo/*.py, models from PyTorch's examples and tutorials) and the
    recurrent models of bench/rnn_models.py."""
    import rnn_models

    return ([Case(path.stem, _file_builder(path), DEFAULT_BATCH,
                  optimizers=ZOO_OPTIMIZERS.get(path.stem, OPTIMIZERS))
             for path in sorted(ZOO.glob("*.py")) if names is None or path.stem in names]
            + [Case(name, _builder(rnn_models, name), DEFAULT_BATCH)
               for name in rnn_models.BUILDERS if names is None or name in names])


def _message(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    msg = f"{type(e).__name__}: {text}" if text else type(e).__name__
    return msg[:300]


def run_case(case: Case, optim: str, precision: str, device: str) -> Row:
    row = Row(case.name, optim, precision, case.batch)
    options = Options(batch=case.batch, optimizer=optim, dtype="fp32", amp=PRECISIONS[precision],
                      steps=2, device=device, routing=case.routing)
    try:
        torch.manual_seed(0)
        model, make_inputs, loss_fn = case.build()
        if make_inputs is None:
            raise RuntimeError("the model file defines no example_inputs(batch_size)")
        start = time.perf_counter()
        report = analyze_module(model, make_inputs, options, loss_fn=loss_fn, name=case.name)
        row.analyse_s = time.perf_counter() - start
        row.predicted = int(report.memory.peak_bytes)
    except Exception as e:  # noqa: BLE001 - record and go on
        row.error = "analyse: " + _message(e)
        return row
    finally:
        model = None
        gc.collect()
    try:
        torch.manual_seed(0)
        model, make_inputs, loss_fn = case.build()
        if device == "cuda":
            torch.cuda.empty_cache()
        start = time.perf_counter()
        measured = measure_step(model, make_inputs, options, loss_fn=loss_fn,
                                routing=(lambda: ForcedRouting(case.routing)) if case.forced
                                else contextlib.nullcontext)
        row.measure_s = time.perf_counter() - start
        row.measured = int(measured.peak_bytes)
    except Exception as e:  # noqa: BLE001
        row.error = "measure: " + _message(e)
    finally:
        model = None
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
    return row


# --- statistics and formatting ---------------------------------------------------------------------

def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    v = sorted(values)
    if not v:
        return math.nan
    pos = (len(v) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def summary(rows: list[Row]) -> dict:
    errs = [r.error_pct for r in rows if r.error_pct is not None]
    absolute = [abs(e) for e in errs]
    return {
        "runs": len(rows),
        "compared": len(errs),
        "failed": sum(1 for r in rows if r.error is not None),
        "median": percentile(absolute, 50),
        "p90": percentile(absolute, 90),
        "max": max(absolute) if absolute else math.nan,
        "under": sum(1 for e in errs if e < 0),
        "exact": sum(1 for e in errs if e == 0),
        "over_1pct": [r for r in rows if r.error_pct is not None and abs(r.error_pct) > 1],
    }


def summary_line(s: dict) -> str:
    return (f"{s['compared']} of {s['runs']} runs compared ({s['failed']} failed): "
            f"median |error| {s['median']:.4f}%, 90th percentile |error| {s['p90']:.4f}%, "
            f"max |error| {s['max']:.4f}%, under-estimates {s['under']}, exact {s['exact']}")


def _bytes(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.2f}"


def _pct(r: Row) -> str:
    e = r.error_pct
    return "-" if e is None else f"{e:+.4f}"


COLUMNS = ("model", "optim", "precision", "batch", "predicted (B)", "measured (B)",
           "predicted MiB", "measured MiB", "error %", "note")


def cells(r: Row) -> tuple[str, ...]:
    return (r.model, r.optim, r.precision, str(r.batch), _bytes(r.predicted), _bytes(r.measured),
            _mib(r.predicted), _mib(r.measured), _pct(r), r.error or "")


def text_table(rows: list[Row]) -> str:
    data = [COLUMNS] + [cells(r) for r in rows]
    widths = [max(len(d[i]) for d in data) for i in range(len(COLUMNS) - 1)]
    lines = []
    for k, d in enumerate(data):
        parts = [d[i].ljust(widths[i]) if i < 3 else d[i].rjust(widths[i])
                 for i in range(len(COLUMNS) - 1)]
        lines.append("  ".join(parts) + ("  " + d[-1] if d[-1] else ""))
        if k == 0:
            lines.append("-" * len(lines[0]))
    return "\n".join(lines)


def markdown(rows: list[Row], s: dict, args, started: datetime.datetime, elapsed: float) -> str:
    try:
        import transformers
        tf_version = transformers.__version__
    except Exception:  # noqa: BLE001
        tf_version = "not installed"
    command = " ".join(shlex.quote(a) for a in [".venv/bin/python", "bench/accuracy.py",
                                                  *sys.argv[1:]])
    out = [f"# graphcalc peak-memory accuracy ({args.device})", "",
           f"- date: {started:%Y-%m-%d %H:%M:%S}",
           f"- command: `{command}`",
           f"- torch {torch.__version__}, transformers {tf_version}, Python "
           f"{platform.python_version()}, {platform.machine()}",
           f"- device: {args.device}" + (f" ({torch.cuda.get_device_name()})"
                                         if args.device == "cuda" else ""),
           "- 2 training steps per run; predicted = `analyze_module(...).memory.peak_bytes`, "
           "measured = `measure_step(...).peak_bytes` on a separately built model; "
           "error % = (predicted - measured) / measured x 100",
           f"- wall time: {elapsed:.0f} s", "",
           "## Summary", "", summary_line(s), ""]
    if s["over_1pct"] or s["failed"]:
        out += ["### Off by more than 1% or failed", ""]
        for r in rows:
            if r.error is not None:
                out.append(f"- {r.model} {r.optim} {r.precision}: FAILED, {r.error}")
            elif abs(r.error_pct) > 1:
                out.append(f"- {r.model} {r.optim} {r.precision}: {r.error_pct:+.3f}% "
                           f"(predicted {r.predicted:,} B, measured {r.measured:,} B)")
        out.append("")
    else:
        out += ["No run was off by more than 1%, and none failed.", ""]
    out += ["## Runs", "", "| " + " | ".join(COLUMNS) + " |",
            "|" + "|".join("---" if i < 3 or i == len(COLUMNS) - 1 else "---:"
                           for i in range(len(COLUMNS))) + "|"]
    for r in rows:
        c = list(cells(r))
        c[-1] = c[-1].replace("|", "\\|")
        out.append("| " + " | ".join(c) + " |")
    out.append("")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="fp32 sgd+adam only, on the seed samples and 3 HF models")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--set", choices=("all", "samples", "hf", "zoo"), default="all",
                   help="one family of models: the samples, the HF models (MoE included) or "
                        "the test zoo with the RNN models")
    p.add_argument("--only", action="append", default=[],
                   help="run only models whose name contains this (repeatable)")
    p.add_argument("--out", type=Path, default=None, help="Markdown file to write")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available in this torch build / machine")
    if args.device == "cuda":  # allocated and reserved, and the CUDA-hidden predictions
        # bench/accuracy_cuda.py builds on this file: run it, never import it (no circle)
        import subprocess

        return subprocess.call([sys.executable, str(HERE / "accuracy_cuda.py"),
                                *sum((["--only", o] for o in args.only), [])])
    warnings.filterwarnings("ignore")

    if args.quick:
        cases = sample_cases(set(SEED_SAMPLES)) + hf_cases(set(hf_models.QUICK))
        precisions = ("fp32",)
    else:
        cases = {"samples": sample_cases, "hf": lambda: hf_cases() + moe_cases(),
                 "zoo": zoo_cases}.get(args.set, lambda: sample_cases() + hf_cases()
                                       + moe_cases() + zoo_cases())()
        precisions = tuple(PRECISIONS)
    if args.only:
        cases = [c for c in cases if any(o in c.name for o in args.only)]
    started = datetime.datetime.now()
    t0 = time.perf_counter()
    rows: list[Row] = []
    for case in cases:
        for precision in precisions:
            for optim in case.optimizers:
                row = run_case(case, optim, precision, args.device)
                rows.append(row)
                status = row.error or f"{_pct(row)}%"
                print(f"[{time.perf_counter() - t0:7.1f}s] {case.name:12s} {optim:4s} "
                      f"{precision:8s} b{case.batch}  pred {_bytes(row.predicted):>15s}  "
                      f"meas {_bytes(row.measured):>15s}  {status}  "
                      f"(analyse {row.analyse_s:.1f}s, measure {row.measure_s:.1f}s)", flush=True)
    elapsed = time.perf_counter() - t0
    s = summary(rows)
    print()
    print(text_table(rows))
    print()
    print(summary_line(s))
    out = args.out or HERE / "results" / (f"accuracy-{args.device}"
                                          + ("-quick" if args.quick else "") + ".md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown(rows, s, args, started, elapsed))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
