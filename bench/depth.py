"""How the analysis scales with the number of layers: an nn.Sequential of N small Linear layers,
analysed in-process (`analyze_module`, batch 2, fp32, Adam) at growing N, in one run.

The replay's work is per op, so the time per layer should stay flat as N grows; a column that
climbs is a pass that is quadratic in the layers (issue 27: `layer_flow` numbered its edges with
networkx's number_of_edges(), which walks every node, and a 10,000-layer model took minutes
there alone).

Usage:
  .venv/bin/python bench/depth.py                  # N = 500, 1000, 2000, 4000
  .venv/bin/python bench/depth.py 1000 10000       # other depths
"""

from __future__ import annotations

import sys
import time

import torch
from torch import nn

from graphcalc.commands.analyze import analyze_module
from graphcalc.options import Options


def run(depth: int) -> tuple[float, float, int]:
    with torch.device("meta"):
        model = nn.Sequential(*[nn.Linear(4, 4) for _ in range(depth)])
    start = time.perf_counter()
    report = analyze_module(model, lambda b: torch.randn(b, 4), Options(batch=2))
    seconds = time.perf_counter() - start
    return seconds, seconds / depth * 1000, len(report.layers)


def main(argv: list[str]) -> None:
    depths = [int(a) for a in argv] or [500, 1000, 2000, 4000]
    run(50)  # imports and first-call costs out of the table
    print(f"{'layers':>8} {'seconds':>9} {'ms/layer':>9} {'rows':>7}")
    for depth in depths:
        seconds, per_layer, rows = run(depth)
        print(f"{depth:>8} {seconds:>9.1f} {per_layer:>9.2f} {rows:>7}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
