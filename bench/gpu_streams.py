"""graphcalc's GPU prediction against real H200 runs recorded in tests/data/h200/.

tests/data/h200/streams.json holds 15 configurations of the project's samples and Hugging Face
cases, each measured on an NVIDIA H200 (torch 2.11+cu130, cuDNN 9.19) with
graphcalc.commands.measure.measure_step (2 steps, fresh cuBLAS workspaces, counters reset):
max_memory_allocated and max_memory_reserved. This script predicts each with
`--device cuda --gpu h200` (no GPU needed) and prints predicted against measured.

Usage:
  .venv/bin/python bench/gpu_streams.py               # every row
  .venv/bin/python bench/gpu_streams.py --only resnet # rows whose model contains 'resnet'
  .venv/bin/python bench/gpu_streams.py --fit --out bench/results/gpu-h200.md   # and `fit`
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import accuracy  # noqa: E402
import torch  # noqa: E402

from graphcalc.commands.analyze import analyze_module  # noqa: E402
from graphcalc.options import Options  # noqa: E402

DATA = ROOT / "tests" / "data" / "h200"
PRECISION = {"fp32": None, "bf16": "bf16"}


def rows() -> list[dict]:
    return json.loads((DATA / "streams.json").read_text())["rows"]


def case_for(model: str):
    found = {c.name: c for c in accuracy.sample_cases() + accuracy.hf_cases()}
    return found[model]


def predict(row: dict, steps: int = 2):
    """The report of graphcalc's prediction for one measured row."""
    case = case_for(row["model"])
    torch.manual_seed(0)
    model, make_inputs, loss_fn = case.build()
    options = Options(batch=row["batch"], optimizer=row["optim"],
                      amp=PRECISION[row["precision"]], steps=steps, device="cuda", gpu="h200")
    return analyze_module(model, make_inputs, options, loss_fn=loss_fn, name=row["model"])


def pct(p, m):
    return (p - m) / m * 100


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", default=[])
    ap.add_argument("--out")
    ap.add_argument("--fit", action="store_true",
                    help="also graphcalc's fit against the real largest batch under 8 GiB")
    args = ap.parse_args(argv)
    lines = ["| model | batch | optim | precision | predicted allocated | real allocated | "
             "error % | predicted reserved | real reserved | error % | s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    print(lines[0]), print(lines[1])
    errs_a, errs_r = [], []
    for row in rows():
        if args.only and not any(o in row["model"] for o in args.only):
            continue
        t = time.perf_counter()
        try:
            gpu = predict(row).gpu
            pa, pr = gpu.peak_allocated_bytes, gpu.peak_reserved_bytes
        except Exception as e:  # noqa: BLE001
            line = (f"| {row['model']} | {row['batch']} | {row['optim']} | {row['precision']} | "
                    f"{type(e).__name__}: {str(e)[:120]} |")
            print(line), lines.append(line)
            continue
        ma, mr = row["max_memory_allocated"], row["max_memory_reserved"]
        errs_a.append(pct(pa, ma)), errs_r.append(pct(pr, mr))
        line = (f"| {row['model']} | {row['batch']} | {row['optim']} | {row['precision']} | "
                f"{pa:,} | {ma:,} | {pct(pa, ma):+.2f} | {pr:,} | {mr:,} | {pct(pr, mr):+.2f} | "
                f"{time.perf_counter() - t:.1f} |")
        print(line, flush=True), lines.append(line)
    if errs_a:
        med = sorted(abs(e) for e in errs_a)[len(errs_a) // 2]
        medr = sorted(abs(e) for e in errs_r)[len(errs_r) // 2]
        s = (f"\nallocated: median |error| {med:.2f}%, worst under {min(errs_a):+.2f}%, worst over "
             f"{max(errs_a):+.2f}%; reserved: median |error| {medr:.2f}%, worst under "
             f"{min(errs_r):+.2f}%, worst over {max(errs_r):+.2f}%")
        print(s), lines.append(s)
    if args.fit:
        head = ["", "| model | optim | precision | allocator limit | real largest batch | "
                "graphcalc fit | ratio |", "|---|---|---|---|---|---|---|"]
        print("\n".join(head)), lines.extend(head)
        for row in fit_rows():
            if args.only and not any(o in row["model"] for o in args.only):
                continue
            got = fit_for(row)
            line = (f"| {row['model']} | {row['optim']} | {row['precision']} | "
                    f"{row['limit_bytes']:,} | {row['max_batch']} | {got} | "
                    f"{got / row['max_batch']:.3f} |")
            print(line, flush=True), lines.append(line)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0



def fit_rows() -> list[dict]:
    return json.loads((DATA / "fit_samples.json").read_text())["rows"]


def fit_for(row: dict) -> int:
    """graphcalc's largest batch for a fit_samples.json row: the real runs capped the caching
    allocator at `limit_bytes` reserved (set_per_process_memory_fraction), so the card given to
    `fit` is that limit plus the CUDA context graphcalc assumes on the H200: the allocator gets
    exactly the real limit."""
    from graphcalc.sources import loader
    from graphcalc.gpu.gpus import cuda_context, find_gpu
    from graphcalc.commands.verify import fit_source

    context, _ = cuda_context(find_gpu("h200").gpu)
    memory = row["limit_bytes"] + context
    src = loader.load(str(ROOT / "samples" / f"{row['model']}.py"))
    options = Options(batch=1, optimizer=row["optim"], amp=PRECISION[row["precision"]],
                      device="cuda", gpu="h200", gpu_memory=memory)
    return fit_source(src, src.example_inputs, options, memory).batch


if __name__ == "__main__":
    sys.exit(main())
