"""How long a picture takes: ResNet-50 and GPT-2 (and ResNet-18) must render in under 5 s.

For each sample, at the automatic depth (the default) and with every layer shown:
  analyze   = analyze_file(...)                          (the replay, not the picture)
  DOT       = render.to_dot(report)                      (building the source)
  dot svg   = engines.render_source(source, "svg", "dot") (the Graphviz binary; absent: --)
  wasm svg  = the same with the embedded WebAssembly Graphviz, its engine already started
  render    = DOT + the slower available engine          (the figure the 5 s target is about)
and, once per process, the embedded engine's start (compiling graphviz.wasm). Then, unless
--no-cli, the whole command `graphcalc render SAMPLE -o x.svg` in a fresh process per engine
(Python start, torch import, analysis, picture), wall time.

Usage:
  .venv/bin/python bench/render.py          # prints the table, writes bench/results/render.md
  .venv/bin/python bench/render.py --no-cli --out /tmp/r.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from graphcalc.output import engines, render  # noqa: E402,F401
from graphcalc.commands.analyze import analyze_file  # noqa: E402
from graphcalc.options import Options  # noqa: E402

SAMPLES = ("resnet50", "gpt2", "resnet18")
TARGET_S = 5.0
BATCH = 32


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def cli_seconds(sample: str, engine: str | None) -> float:
    """The whole command in a fresh process; engine None: `analyze -f json`, for comparison."""
    env = dict(os.environ, **{engines.ENGINE_ENV: engine or "auto"})
    graphcalc = Path(sys.executable).with_name("graphcalc")
    with tempfile.TemporaryDirectory() as tmp:
        command = ["render"] if engine else ["analyze", "-f", "json"]
        cmd = [str(graphcalc), *command, str(ROOT / "samples" / f"{sample}.py"), "--batch",
               str(BATCH), "-o", str(Path(tmp) / ("x.svg" if engine else "x.json"))]
        start = time.perf_counter()
        run = subprocess.run(cmd, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
    if run.returncode != 0:
        raise RuntimeError(run.stderr.strip())
    return seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE / "results" / "render.md")
    ap.add_argument("--no-cli", action="store_true", help="skip the end-to-end command timings")
    args = ap.parse_args()
    has_dot = shutil.which("dot") is not None
    _, wasm_start = timed(lambda: engines.render_source("digraph { a -> b }", "svg", "embedded"))

    rows = []
    for sample in SAMPLES:
        report, analyze_s = timed(lambda: analyze_file(str(ROOT / "samples" / f"{sample}.py"),
                                                       Options(batch=BATCH, optimizer="adam")))
        for label, budget in (("auto", render.NODE_BUDGET), ("all", 10**6)):
            view = render.view(report, None, budget)
            source, dot_build_s = timed(lambda: render.to_dot(report, max_nodes=budget))
            dot_s = None
            if has_dot:
                dot_s = timed(lambda: engines.render_source(source, "svg", "dot"))[1]
            _, wasm_s = timed(lambda: engines.render_source(source, "svg", "embedded"))
            slowest = max(s for s in (dot_s, wasm_s) if s is not None)
            depth = "all" if view.depth is None else str(view.depth)
            rows.append((sample, f"{label} ({depth})", len(view.nodes), analyze_s, dot_build_s,
                         dot_s, wasm_s, dot_build_s + slowest))
    cli = {}
    if not args.no_cli:
        for sample in SAMPLES[:2]:
            engines = ("dot", "embedded") if has_dot else ("embedded",)
            cli[sample] = {engine: cli_seconds(sample, engine) for engine in engines}
            cli[sample]["analyze alone"] = cli_seconds(sample, None)

    def s(x):
        return "--" if x is None else f"{x:.2f}"

    head = ("| sample | depth | nodes | analyze s | DOT s | dot svg s | wasm svg s | render s | "
            f"render < {TARGET_S:.0f} s |")
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for sample, depth, nodes, an, build, dot_s, wasm_s, total in rows:
        ok = "yes" if total < TARGET_S else "NO"
        lines.append(f"| {sample} | {depth} | {nodes} | {s(an)} | {s(build)} | {s(dot_s)} | "
                     f"{s(wasm_s)} | {s(total)} | {ok} |")
    notes = [f"Embedded engine start in this process: {wasm_start:.2f} s (wasmtime keeps the "
             "compiled graphviz.wasm in ~/.cache/wasmtime; the very first start compiles it, "
             "about 1 s here)."]
    for sample, by_engine in cli.items():
        parts = ", ".join(f"{engine} {sec:.2f} s" for engine, sec in by_engine.items())
        notes.append(f"`graphcalc render samples/{sample}.py --batch {BATCH} -o x.svg`, the "
                     f"whole command in a fresh process (Python, torch import, analysis, "
                     f"picture): {parts}.")
    if not has_dot:
        notes.append("The dot binary is not on PATH: its columns are --.")
    stamp = (f"{datetime.date.today()}, Python {platform.python_version()}, "
             f"{platform.machine()}, {os.cpu_count()} CPUs (load average "
             f"{os.getloadavg()[0]:.1f}), batch {BATCH}, adam, fp32")
    text = ("# Render timings\n\n" + stamp + "\n\n" + "\n".join(lines) + "\n\n"
            + "\n".join(f"- {n}" for n in notes) + "\n\n"
            "`render s` = building the DOT source + the slower engine's layout; `analyze s` is "
            "the replay the picture is drawn from (the same as `analyze`'s).\n")
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0 if all(total < TARGET_S for *_, total in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
