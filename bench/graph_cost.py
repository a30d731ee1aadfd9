"""What recording the step as a torch.fx graph costs, side by side in one run.

1. The speed bench's own measure (bench/speed.py's in-process worker: `analyze_file` cold, the
   first analysis after import, and warm, the best of three more), of this checkout and of the
   last commit before the step graph (280c891, checked out in a temporary git worktree, or
   `--baseline PATH`), run alternately in fresh processes, `--rounds` rounds; the best of each.
   The issue's target: this checkout within 1.2x of the baseline.
2. Inside one process, for the same models:
  tallied   the replay without a graph (`replay(..., graph=False)`) and the figures tallied as the
            ops go by: layers and FLOPs (`analyze._layers`), memory from the tracker's events
            (`timeline.step_memory`): the pipeline before the step graph;
  graph     the replay recording the graph (`graph=True`) and the figures read from it
            (`graphpasses.graph_flops`, `graphpasses.graph_memory`): what `analyze` runs now.
   Both run on the same model, alternately, `--repeat` times each after one warm-up of each;
   the table gives the best time of each, their ratio and the op nodes recorded. Both produce
   the same figures (tests/test_stepgraph.py); this times them.

Usage:
  .venv/bin/python bench/graph_cost.py            # prints the tables, writes
                                                  # bench/results/graph-cost.md
  .venv/bin/python bench/graph_cost.py --rounds 3 --repeat 5 --baseline /path/to/checkout
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import torch  # noqa: E402

from graphcalc.passes import graphpasses  # noqa: E402
from graphcalc.sources import loader
from graphcalc.commands.analyze import _layers, resolve_inputs  # noqa: E402
from graphcalc.options import Options  # noqa: E402
from graphcalc.fake.replay import replay  # noqa: E402
from graphcalc.passes.timeline import step_memory  # noqa: E402

BASELINE = "280c891"  # main before the step graph (the merge 309b358's first parent)
MODELS = [("ResNet-50", "samples/resnet50.py"), ("ViT-B/16", "samples/vit_b16.py"),
          ("GPT-2", "samples/gpt2.py")]


def tallied(model, make_inputs, loss, options):
    rp = replay(model, make_inputs, loss, options)
    return _layers(model, rp), step_memory(rp, options)


def graph(model, make_inputs, loss, options):
    rp = replay(model, make_inputs, loss, options, graph=True)
    layers, _ = graphpasses.graph_flops(_layers(model, rp), rp.step_graph)
    memory = graphpasses.graph_memory(rp.step_graph, device=options.device,
                                      inference_peak_bytes=rp.inference_peak,
                                      optimizer_state_bytes=rp.state_bytes)
    return layers, memory, len(rp.step_graph.nodes("call_function"))


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


@contextlib.contextmanager
def baseline_checkout(path: Path | None):
    if path is not None:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="graphcalc-baseline-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(tree), BASELINE],
                       cwd=HERE.parent, check=True)
        try:
            yield tree
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=HERE.parent,
                           check=False)


def speed_worker(tree: Path, spec: str, batch: int) -> dict:
    """bench/speed.py's graphcalc worker of checkout `tree` (it puts `tree` first on the path)."""
    proc = subprocess.run([sys.executable, str(tree / "bench" / "speed.py"), "--worker",
                           "graphcalc", str(tree / spec), str(batch)], cwd=tree,
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def whole_analysis(args, emit) -> None:
    emit("## 1. The speed bench's measure: this checkout against the one before the graph")
    emit("")
    emit(f"bench/speed.py's in-process worker (`analyze_file`, batch {args.batch}, Adam), each "
         f"run a fresh process, the two checkouts alternately, {args.rounds} rounds; best of "
         f"each. Baseline: {args.baseline or BASELINE + ' (git worktree)'}. Target: <= 1.2x.")
    emit("")
    emit("| model | cold: before / now | ratio | warm: before / now | ratio | figures agree |")
    emit("|---|---:|---:|---:|---:|---|")
    with baseline_checkout(args.baseline) as base:
        for name, spec in MODELS:
            best = {"base": [float("inf")] * 2, "now": [float("inf")] * 2}
            agree = True
            for _ in range(args.rounds):
                got = {}
                for key, tree in (("base", base), ("now", HERE.parent)):
                    d = speed_worker(tree, spec, args.batch)
                    best[key] = [min(best[key][0], d["seconds"]), min(best[key][1], d["warm"])]
                    got[key] = (d["flops"], d["peak"])
                agree &= got["base"] == got["now"]
            (c0, w0), (c1, w1) = best["base"], best["now"]
            emit(f"| {name} | {c0:.2f} s / {c1:.2f} s | {c1 / c0:.2f}x | {w0:.2f} s / "
                 f"{w1:.2f} s | {w1 / w0:.2f}x | {agree} |")
    emit("")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--baseline", type=Path, default=None,
                    help=f"a checkout to compare with (default: {BASELINE} in a worktree)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "graph-cost.md")
    args = ap.parse_args()
    lines: list[str] = []

    def emit(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    emit("# The step graph's cost")
    emit("")
    emit(f"{datetime.date.today()} · {platform.machine()} · {torch.get_num_threads()} threads · "
         f"torch {torch.__version__} · command: `.venv/bin/python bench/graph_cost.py "
         f"--rounds {args.rounds} --repeat {args.repeat}`")
    emit("")
    whole_analysis(args, emit)
    options = Options(batch=args.batch, optimizer="adam")
    emit("## 2. Inside one process: the replay with and without recording the graph")
    emit("")
    emit("Best of the alternate runs; ratio = graph / tallied.")
    emit("")
    emit("| model | op nodes | tallied (best) | graph (best) | ratio | peak agrees |")
    emit("|---|---:|---:|---:|---:|---|")
    for name, spec in MODELS:
        src = loader.load(str(HERE.parent / spec))
        make_inputs = resolve_inputs(src, None)
        model = loader.build_model(src, device="meta")
        run = (model, make_inputs, src.loss, options)
        tallied(*run), graph(*run)  # warm-up: first-call costs out of both
        a, b = [], []
        for _ in range(args.repeat):
            ta, (_, mem_a) = timed(tallied, *run)
            tb, (_, mem_b, nodes) = timed(graph, *run)
            a.append(ta)
            b.append(tb)
        emit(f"| {name} | {nodes:,} | {min(a):.2f} s | {min(b):.2f} s | "
             f"{min(b) / min(a):.2f}x | {mem_a.peak_bytes == mem_b.peak_bytes} |")
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
