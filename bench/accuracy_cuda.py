"""graphcalc's CUDA figures against a real GPU (issue 16's proof), in one run.

For every sample and every HF model of bench/hf_models.py (the MoE ones routed as assumed), for
{sgd, adam} x {fp32, amp bf16}, on the GPU of this machine (`--gpu` named after it):
  predicted allocated = report.gpu.peak_allocated_bytes (blocks as the simulated allocator hands
                        them out) vs torch.cuda.max_memory_allocated
  predicted reserved  = report.gpu.peak_reserved_bytes vs torch.cuda.max_memory_reserved
measured as the peak over 3 real steps after reset_peak_memory_stats, with the cuBLAS workspaces
and the allocator's cache cleared before each model (a fresh process's state). The same
predictions are made again in a subprocess with CUDA hidden (CUDA_VISIBLE_DEVICES=): a CPU-only
machine must print the same figures.

    python bench/accuracy.py --device cuda [--only NAME ...]      (delegates here)
    python bench/accuracy_cuda.py --predict-only --gpu h100 --json out.json   (any machine)

Writes bench/results/accuracy-cuda.md.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import accuracy  # noqa: E402
import torch  # noqa: E402

from graphcalc.commands.analyze import analyze_module  # noqa: E402
from graphcalc.commands.measure import measure_step  # noqa: E402
from graphcalc.options import Options  # noqa: E402
from graphcalc.routing import ForcedRouting  # noqa: E402

TARGETS = ("allocated: median |error| <= 1%, p90 <= 3%, never under by more than 2%; "
           "reserved: median <= 5%, never under by more than 5%; the CUDA-hidden prediction "
           "equal on every row")


@dataclass
class GpuRow:
    model: str
    optim: str
    precision: str
    batch: int
    allocated: int | None = None  # predicted
    reserved: int | None = None
    measured_allocated: int | None = None
    measured_reserved: int | None = None
    hidden: tuple[int, int] | None = None  # predicted with CUDA hidden
    error: str | None = None

    @property
    def key(self) -> str:
        return f"{self.model}|{self.optim}|{self.precision}"

    def pct(self, which: str) -> float | None:
        p, m = ((self.allocated, self.measured_allocated) if which == "allocated"
                else (self.reserved, self.measured_reserved))
        return None if p is None or not m else (p - m) / m * 100


def cases(only: list[str]) -> list:
    found = accuracy.sample_cases() + accuracy.hf_cases() + accuracy.moe_cases()
    return [c for c in found if not only or any(o in c.name for o in only)]


def options_for(case, optim: str, precision: str, gpu: str | None, memory: int | None,
                steps: int = 2) -> Options:
    return Options(batch=case.batch, optimizer=optim, amp=accuracy.PRECISIONS[precision],
                   steps=steps, device="cuda", routing=case.routing, gpu=gpu, gpu_memory=memory)


def predict(case, optim: str, precision: str, gpu, memory) -> tuple[int, int]:
    torch.manual_seed(0)
    model, make_inputs, loss_fn = case.build()
    report = analyze_module(model, make_inputs, options_for(case, optim, precision, gpu, memory),
                            loss_fn=loss_fn, name=case.name)
    return report.gpu.peak_allocated_bytes, report.gpu.peak_reserved_bytes


def measure(case, optim: str, precision: str, gpu, memory) -> tuple[int, int]:
    gc.collect()
    torch._C._cuda_clearCublasWorkspaces()  # as in a fresh process: the next step makes them
    torch.cuda.empty_cache()
    torch.manual_seed(0)
    model, make_inputs, loss_fn = case.build()
    options = options_for(case, optim, precision, gpu, memory, steps=3)
    routing = (lambda: ForcedRouting(case.routing)) if case.forced else None
    kw = {"routing": routing} if routing else {}
    m = measure_step(model, make_inputs, options, loss_fn=loss_fn, **kw)
    return m.peak_bytes, m.reserved_bytes


def this_gpu() -> tuple[str | None, int | None, str]:
    """(a --gpu name, else None with the memory, the device's name)."""
    from graphcalc.errors import GraphcalcError
    from graphcalc.gpu.gpus import find_gpu

    name = torch.cuda.get_device_name(0)
    try:
        find_gpu(name)
        return name, None, name
    except GraphcalcError:
        return None, torch.cuda.get_device_properties(0).total_memory, name


def predict_all(selected, gpu, memory) -> dict[str, list[int]]:
    out = {}
    for case in selected:
        for precision in accuracy.PRECISIONS:
            for optim in case.optimizers:
                key = f"{case.name}|{optim}|{precision}"
                try:
                    out[key] = list(predict(case, optim, precision, gpu, memory))
                except Exception as e:  # noqa: BLE001
                    out[key] = [None, None, accuracy._message(e)]
    return out


def hidden_predictions(only, gpu, memory) -> dict[str, list]:
    """The predictions of a process that sees no CUDA device."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "hidden.json"
        cmd = [sys.executable, __file__, "--predict-only", "--json", str(path)]
        cmd += ["--gpu", gpu] if gpu else ["--memory", str(memory)]
        for o in only:
            cmd += ["--only", o]
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
        subprocess.run(cmd, env=env, check=True)
        return json.loads(path.read_text())


def summary(rows: list[GpuRow]) -> dict:
    ok = [r for r in rows if r.error is None and r.measured_allocated]
    a = [r.pct("allocated") for r in ok]
    res = [r.pct("reserved") for r in ok if r.measured_reserved]
    same = sum(1 for r in ok if r.hidden == (r.allocated, r.reserved))
    return {"rows": len(rows), "compared": len(ok),
            "alloc_median": statistics.median(abs(x) for x in a) if a else None,
            "alloc_p90": accuracy.percentile([abs(x) for x in a], 90) if a else None,
            "alloc_worst_under": min(a, default=None),
            "reserved_median": statistics.median(abs(x) for x in res) if res else None,
            "reserved_worst_under": min(res, default=None),
            "hidden_equal": same}


def _fmt(x, pct=False):
    if x is None:
        return "-"
    return f"{x:+.2f}" if pct else f"{x:,}"


def markdown(rows, s, device_name, started, elapsed) -> str:
    lines = [f"# graphcalc against a real GPU: {device_name}", "",
             f"- run {started:%Y-%m-%d %H:%M}, {elapsed:.0f} s; torch {torch.__version__}, "
             f"CUDA {torch.version.cuda}, Python {platform.python_version()}",
             "- command: `python bench/accuracy.py --device cuda`",
             f"- targets: {TARGETS}", "",
             "## Summary", "",
             f"{s['compared']} of {s['rows']} rows measured; allocated: median |error| "
             f"{_fmt(s['alloc_median'], True)}%, p90 {_fmt(s['alloc_p90'], True)}%, worst under "
             f"{_fmt(s['alloc_worst_under'], True)}%; reserved: median |error| "
             f"{_fmt(s['reserved_median'], True)}%, worst under "
             f"{_fmt(s['reserved_worst_under'], True)}%; CUDA-hidden prediction equal on "
             f"{s['hidden_equal']} of {s['compared']}", "",
             "| model | optim | precision | batch | predicted allocated | max_memory_allocated | "
             "error % | predicted reserved | max_memory_reserved | error % | hidden equal | "
             "note |", "|" + "---|" * 12]
    for r in rows:
        lines.append(f"| {r.model} | {r.optim} | {r.precision} | {r.batch} | "
                     f"{_fmt(r.allocated)} | {_fmt(r.measured_allocated)} | "
                     f"{_fmt(r.pct('allocated'), True)} | {_fmt(r.reserved)} | "
                     f"{_fmt(r.measured_reserved)} | {_fmt(r.pct('reserved'), True)} | "
                     f"{'yes' if r.hidden == (r.allocated, r.reserved) else 'NO'} | "
                     f"{r.error or ''} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", action="append", default=[])
    p.add_argument("--predict-only", action="store_true",
                   help="predictions only, as JSON (any machine, CUDA or not)")
    p.add_argument("--gpu", default=None)
    p.add_argument("--memory", type=int, default=None)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--out", type=Path, default=HERE / "results" / "accuracy-cuda.md")
    args = p.parse_args(argv)
    selected = cases(args.only)
    if args.predict_only:
        if args.gpu is None and args.memory is None:
            p.error("--predict-only needs --gpu NAME or --memory BYTES")
        result = predict_all(selected, args.gpu, args.memory)
        text = json.dumps(result, indent=1)
        args.json.write_text(text) if args.json else print(text)
        return 0
    if not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available in this torch build / machine")
    gpu, memory, device_name = this_gpu()
    started, t0 = datetime.datetime.now(), time.perf_counter()
    hidden = hidden_predictions(args.only, gpu, memory)
    rows = []
    for case in selected:
        for precision in accuracy.PRECISIONS:
            for optim in case.optimizers:
                r = GpuRow(case.name, optim, precision, case.batch)
                h = hidden.get(r.key)
                r.hidden = tuple(h[:2]) if h else None
                try:
                    r.allocated, r.reserved = predict(case, optim, precision, gpu, memory)
                    r.measured_allocated, r.measured_reserved = measure(
                        case, optim, precision, gpu, memory)
                except Exception as e:  # noqa: BLE001
                    r.error = accuracy._message(e)
                rows.append(r)
                print(f"[{time.perf_counter() - t0:6.1f}s] {r.model:22s} {optim:4s} "
                      f"{precision:8s} alloc {_fmt(r.allocated)} vs {_fmt(r.measured_allocated)}"
                      f" ({_fmt(r.pct('allocated'), True)}%), reserved {_fmt(r.reserved)} vs "
                      f"{_fmt(r.measured_reserved)} ({_fmt(r.pct('reserved'), True)}%)"
                      f"{'' if r.hidden == (r.allocated, r.reserved) else ' HIDDEN DIFFERS'}"
                      f" {r.error or ''}", flush=True)
    s = summary(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(rows, s, device_name, started, time.perf_counter() - t0))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
