"""How fast graphcalc is, side by side with the tools people use today, and how flat in batch.

In one run, for the ResNet-50, ViT-B/16 and GPT-2 samples at batch 1, 256 and 4096:
  graphcalc (in-process)  analyze_file(...) in a Python that has imported graphcalc: build on the
                          meta device, replay two training steps on fake tensors (forward, backward,
                          Adam), FLOPs and peak memory. Cold = the first analysis in the process;
                          warm = the best of three more of the same model.
  graphcalc (command)     `graphcalc analyze FILE --batch B --format json`, the whole process:
                          Python and torch start-up included.
  torchinfo               torchinfo.summary(model, input_data=...): one real forward pass.
  fvcore                  FlopCountAnalysis(model, inputs).total(): a real forward under jit trace.
  FlopCounterMode         torch.utils.flop_counter on a real forward + backward.
For the peers the clock covers the call only; building the real model (random weights) and its
input is not counted, which favours them. Each measurement runs in a fresh process, and the peak
resident memory (VmHWM) of that process is reported beside its time.

A peer is skipped where it would take over a minute (its time at batch 1 times the batch) or need
more memory than this machine can spare; the table says so and why. torchinfo at batch 256 always
runs: it is a target's comparison.

Also: the 7B Llama sample at batch 8 and a 70B-sized Llama (samples/llama.py:build_70b), analysed
by graphcalc alone (time and peak RSS; nothing is allocated for weights).

Also: the commands as a user runs them (whole processes, alternated, median): `--version`,
analyze at batch 1 and 256, fit (CPU budget, a T4, an H100), plan and `--checkpoint auto`,
against `python -c "import torch"`, with the number of replays each took.

Usage:
  .venv/bin/python bench/speed.py            # everything; prints the table, writes
                                             # bench/results/speed.md
  .venv/bin/python bench/speed.py --quick    # batch 1 and 256 only, no 70B
  .venv/bin/python bench/speed.py --commands 5   # the commands table alone, 5 rounds
The peers need `pip install torchinfo fvcore` (the `bench` extra).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SAMPLES = {"ResNet-50": "samples/resnet50.py", "ViT-B/16": "samples/vit_b16.py",
           "GPT-2": "samples/gpt2.py"}
BATCHES = (1, 256, 4096)
PEERS = ("torchinfo", "fvcore", "flopcounter")
PEER_NAMES = {"torchinfo": "torchinfo", "fvcore": "fvcore", "flopcounter": "FlopCounterMode"}
TIME_LIMIT_S = 60.0
# Above this a real run at this batch would crowd the machine (24 GiB, shared).
MEMORY_LIMIT = 12 * 2**30
TARGETS = {"ResNet-50": 1.0, "GPT-2": 1.5}  # in-process seconds (the targets)


def _vm_hwm() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


# ---------------------------------------------------------------------------- worker side

def _worker(tool: str, spec: str, batch: int) -> dict:
    """Runs in a fresh process: measure one tool on one model at one batch."""
    sys.path.insert(0, str(ROOT))
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    if tool == "graphcalc":
        t = time.perf_counter()
        from graphcalc.commands.analyze import analyze_file
        imported = time.perf_counter() - t
        from graphcalc.options import Options

        options = Options(batch=batch, optimizer="adam")
        t = time.perf_counter()
        report = analyze_file(spec, options)
        cold = time.perf_counter() - t
        warm = float("inf")
        for _ in range(3):  # the best of three: this machine is shared and noisy
            t = time.perf_counter()
            analyze_file(spec, options)
            warm = min(warm, time.perf_counter() - t)
        return {"seconds": cold, "warm": warm, "import": imported, "rss": _vm_hwm(),
                "flops": report.totals.flops_forward + report.totals.flops_backward,
                "peak": report.memory.peak_bytes,
                "inference_peak": report.memory.inference_peak_bytes}

    from graphcalc.sources import loader
    from graphcalc.fake.step import call_model, compute_loss

    source = loader.load(spec)
    torch.manual_seed(0)
    model = loader.build_model(source, device=None)
    inputs = source.example_inputs(batch)
    args = inputs if isinstance(inputs, tuple) else (inputs,)
    if tool == "torchinfo":
        import torchinfo

        t = time.perf_counter()
        torchinfo.summary(model, input_data=list(args), verbose=0)
    elif tool == "fvcore":
        from fvcore.nn import FlopCountAnalysis

        t = time.perf_counter()
        analysis = FlopCountAnalysis(model, args)
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        analysis.total()
    elif tool == "flopcounter":
        from torch.utils.flop_counter import FlopCounterMode

        t = time.perf_counter()
        with FlopCounterMode(display=False):
            loss = compute_loss(source.loss, call_model(model, inputs), inputs)
            loss.backward()
    else:
        raise SystemExit(f"unknown tool {tool}")
    return {"seconds": time.perf_counter() - t, "rss": _vm_hwm()}


# ---------------------------------------------------------------------------- driver side

@dataclass
class Result:
    seconds: float | None = None
    rss: int | None = None
    skipped: str | None = None
    extra: dict = field(default_factory=dict)


def _run_worker(tool: str, spec: str, batch: int, timeout: float = 600) -> Result:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", tool, spec, str(batch)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Result(skipped=f"timed out after {timeout:.0f} s")
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return Result(skipped=f"failed: {last[:120]}")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    extra = {k: v for k, v in data.items() if k not in ("seconds", "rss")}
    return Result(data["seconds"], data["rss"], extra=extra)


def _run_command(spec: str, batch: int) -> Result:
    exe = Path(sys.executable).with_name("graphcalc")
    cmd = [str(exe), "analyze", spec, "--batch", str(batch), "--format", "json"]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        return Result(skipped=f"exit {proc.returncode}")
    return Result(seconds, usage.ru_maxrss * 1024)


def _fmt_s(r: Result) -> str:
    return "skipped" if r.seconds is None else f"{r.seconds:.2f} s"


def _fmt_rss(r: Result) -> str:
    return "" if r.rss is None else f"{r.rss / 2**20:,.0f} MiB"


def _ratio(ours: Result, peer: Result) -> str:
    if ours.seconds is None or peer.seconds is None:
        return ""
    return f"{peer.seconds / ours.seconds:.1f}x"


# --- the commands, whole processes, with the replays each took --------------------------------

# Runs the graphcalc command in argv[1:] with graphcalc.fake.replay._replay counted; prints the
# count on stderr as the last line (`replays N`). The replay module is imported up front, which
# every command below pays anyway (--version is run as itself, without this wrapper).
COUNTING = """
import atexit, sys
import graphcalc.fake.replay as R
n = [0]
run = R._replay
def counted(*a, **k):
    n[0] += 1
    return run(*a, **k)
R._replay = counted
atexit.register(lambda: sys.stderr.write(f"\\nreplays {n[0]}\\n"))
sys.argv = ["graphcalc"] + sys.argv[1:]
from graphcalc_cli.app import main
main()
"""

COMMANDS = [
    ("python -c 'import torch'", [sys.executable, "-c", "import torch"], False),
    ("graphcalc --version", ["graphcalc", "--version"], False),
    ("analyze resnet50 --batch 1", ["analyze", "samples/resnet50.py", "--batch", "1",
                                    "-f", "json"], True),
    ("analyze resnet50 --batch 256 --optim adam", ["analyze", "samples/resnet50.py", "--batch",
                                                   "256", "--optim", "adam", "-f", "json"], True),
    ("torchinfo summary resnet50, batch 1 (whole process)",
     [sys.executable, "-c", "import torch, torchinfo\n"
      "from graphcalc.sources import loader\n"
      "src = loader.load('samples/resnet50.py')\n"
      "torchinfo.summary(loader.build_model(src, device=None), input_data=[src.example_inputs(1)],"
      " verbose=0)"],
     False),
    ("fit seed_cnn --device cpu --memory 8MiB", ["fit", "samples/seed_cnn.py", "--device", "cpu",
                                                 "--memory", "8MiB", "-f", "json"], True),
    ("fit seed_cnn --gpu t4", ["fit", "samples/seed_cnn.py", "--gpu", "t4", "-f", "json"], True),
    ("fit gpt2 --gpu h100 --amp bf16", ["fit", "samples/gpt2.py", "--gpu", "h100", "--amp", "bf16",
                                        "-f", "json"], True),
    ("plan gpt2 --batch 256 --gpu h100", ["plan", "samples/gpt2.py", "--batch", "256", "--gpu",
                                          "h100", "-f", "json"], True),
    ("analyze gpt2 --batch 8 --checkpoint auto --memory 2.5GiB --device cpu",
     ["analyze", "samples/gpt2.py", "--batch", "8", "--checkpoint", "auto", "--memory", "2.5GiB",
      "--device", "cpu", "-f", "json"], True),
]


def _command(argv: list[str], counted: bool) -> tuple[float, int | None]:
    """(wall seconds, replays) of one whole process."""
    if counted:
        argv = [sys.executable, "-c", COUNTING] + argv
    elif argv[0] == "graphcalc":
        argv = [str(Path(sys.executable).with_name("graphcalc"))] + argv[1:]
    t = time.perf_counter()
    run = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if run.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[-8:])} failed: {run.stderr.strip()[-300:]}")
    replays = None
    if counted:
        last = run.stderr.strip().splitlines()[-1:] or [""]
        replays = int(last[0].split()[1]) if last[0].startswith("replays ") else None
    return seconds, replays


def commands(rounds: int, emit) -> None:
    """Each command of COMMANDS, whole processes, alternated round by round (so that a busy
    moment of the machine falls on all of them); the median wall time, its ratio to
    `python -c "import torch"` measured in the same rounds, and the replays each took."""
    import statistics

    import importlib.util

    chosen = COMMANDS
    if importlib.util.find_spec("torchinfo") is None:
        chosen = [c for c in COMMANDS if not c[0].startswith("torchinfo")]
        emit("(torchinfo is not installed: `pip install torchinfo` for its row)")
    times: dict[str, list[float]] = {name: [] for name, _, _ in chosen}
    replays: dict[str, int | None] = {}
    for _ in range(rounds):
        for name, argv, counted in chosen:
            seconds, n = _command(argv, counted)
            times[name].append(seconds)
            replays[name] = n
    base = statistics.median(times[COMMANDS[0][0]])
    emit(f"Whole processes, alternated, median of {rounds} "
         f"(`.venv/bin/python bench/speed.py --commands {rounds}`):")
    emit()
    emit("| command | wall | against `import torch` | replays |")
    emit("|---|---:|---:|---:|")
    for name, _, counted in chosen:
        m = statistics.median(times[name])
        n = replays[name]
        emit(f"| {name} | {m:.2f} s | {m / base:.2f}x | "
             f"{'-' if not counted else (n if n is not None else 'failed')} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="batch 1 and 256 only, no 70B")
    ap.add_argument("--commands", type=int, metavar="ROUNDS", default=None,
                    help="only the commands table: --version, analyze, fit, plan and "
                         "--checkpoint auto against import torch, with their replays")
    ap.add_argument("--worker", nargs=3, metavar=("TOOL", "SPEC", "BATCH"), help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "speed.md")
    args = ap.parse_args(argv)
    if args.worker:
        tool, spec, batch = args.worker
        print(json.dumps(_worker(tool, spec, int(batch))))
        return 0
    if args.commands:
        commands(args.commands, lambda line="": print(line, flush=True))
        return 0

    batches = BATCHES[:2] if args.quick else BATCHES
    lines: list[str] = []

    def emit(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    import torch

    emit("# Speed: graphcalc beside torchinfo, fvcore and FlopCounterMode")
    emit()
    emit(f"{datetime.date.today()} · {platform.machine()} · {os.cpu_count()} CPU cores · "
         f"Python {platform.python_version()} · torch {torch.__version__} · command: "
         f"`.venv/bin/python bench/speed.py{' --quick' if args.quick else ''}`")
    emit()
    emit("In-process: cold is the first analysis after `import graphcalc` (whose own time, "
         "torch already imported, is in brackets: it includes torch._dynamo, which fake tensors "
         "need); warm is the best of three more analyses of the same model in that process. ")
    emit()
    emit("Each cell is a fresh process; time covers the call (the model's real build is not "
         "counted for the peers), RSS is that process's peak resident memory. graphcalc does "
         "forward + backward + Adam and the peak memory; torchinfo and fvcore a forward only; "
         "FlopCounterMode a real forward + backward. Ratio = peer time / graphcalc in-process "
         "(cold) time.")
    emit()
    emit("| model | batch | graphcalc in-process cold / warm (import) | graphcalc command | torchinfo | "
         "fvcore | FlopCounterMode | graphcalc RSS | peer RSS (ti / fv / fcm) |")
    emit("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    summary: dict[str, dict] = {}
    for name, spec in SAMPLES.items():
        per_sample_time: dict[str, float] = {}
        summary[name] = {}
        for batch in batches:
            ours = _run_worker("graphcalc", spec, batch)
            command = _run_command(spec, batch)
            peers: dict[str, Result] = {}
            peak = ours.extra.get("peak", 0)
            for peer in PEERS:
                base = per_sample_time.get(peer)
                # torchinfo at batch 256 is a target's comparison: it always runs.
                is_target = peer == "torchinfo" and batch == 256
                if base is not None and base * batch > TIME_LIMIT_S and not is_target:
                    peers[peer] = Result(skipped=f"skipped: ~{base * batch:.0f} s "
                                                 f"(batch-1 time x {batch})")
                    continue
                # torchinfo runs a no_grad forward: about the inference peak (with a margin).
                # fvcore's jit trace keeps as much as a training step (21.6 GiB RSS measured on
                # ResNet-50 at batch 256), and FlopCounterMode runs one.
                need = (1.5 * ours.extra.get("inference_peak", 0) if peer == "torchinfo"
                        else peak)
                if need > MEMORY_LIMIT:
                    peers[peer] = Result(skipped=f"skipped: needs ~{need / 2**30:.0f} GiB")
                    continue
                peers[peer] = _run_worker(peer, spec, batch, timeout=1200 if is_target else 600)
                if batch == 1 and peers[peer].seconds is not None:
                    per_sample_time[peer] = peers[peer].seconds
            summary[name][batch] = (ours, command, peers)
            cells = []
            for peer in PEERS:
                r = peers[peer]
                if r.seconds is None:
                    cells.append(r.skipped or "skipped")
                else:
                    cells.append(f"{r.seconds:.2f} s ({_ratio(ours, r)})")
            warm, imp = ours.extra.get("warm"), ours.extra.get("import")
            emit(f"| {name} | {batch} | {_fmt_s(ours)} / "
                 f"{'' if warm is None else f'{warm:.2f} s'}"
                 f"{'' if imp is None else f' ({imp:.1f} s)'} | {_fmt_s(command)} | "
                 + " | ".join(cells)
                 + f" | {_fmt_rss(ours)} | "
                 + " / ".join(_fmt_rss(peers[p]) or "–" for p in PEERS) + " |")

    emit()
    emit("## Targets")
    emit()
    emit("| target | measured | met |")
    emit("|---|---|---|")
    for name in ("ResNet-50", "ViT-B/16"):
        ours, _, peers = summary[name].get(256, (None, None, None)) or (None, None, None)
        if ours is None:
            continue
        ti = peers["torchinfo"]
        if ours.seconds and ti.seconds:
            ratio = ti.seconds / ours.seconds
            emit(f"| {name} batch 256: >= 20x faster than torchinfo | {ratio:.1f}x "
                 f"({ti.seconds:.2f} s / {ours.seconds:.2f} s) | {'yes' if ratio >= 20 else 'no'} |")
        else:
            emit(f"| {name} batch 256: >= 20x faster than torchinfo | torchinfo "
                 f"{ti.skipped} | – |")
    if 4096 in batches:
        for name in SAMPLES:
            one, big = summary[name][1][0], summary[name][4096][0]
            if one.seconds and big.seconds:
                r = big.seconds / one.seconds
                rw = big.extra["warm"] / one.extra["warm"]
                emit(f"| {name}: time at batch 4096 <= 1.2x time at batch 1 | cold {r:.2f}x, "
                     f"warm {rw:.2f}x | {'yes' if min(r, rw) <= 1.2 else 'no'} |")
    for name, limit in TARGETS.items():
        ours = summary[name][256][0]
        if ours.seconds:
            emit(f"| {name} in-process (batch 256) < {limit} s | cold {ours.seconds:.2f} s, warm "
                 f"{ours.extra['warm']:.2f} s | {'yes' if ours.seconds < limit else 'no'} |")
    for name in SAMPLES:
        command = summary[name][256][1]
        if command.seconds:
            emit(f"| {name} `graphcalc analyze` command (batch 256) < 5 s | "
                 f"{command.seconds:.2f} s | {'yes' if command.seconds < 5 else 'no'} |")

    emit()
    emit("## Large language models (graphcalc only)")
    emit()
    emit("| model | batch | time (command) | peak RSS | params | peak training memory |")
    emit("|---|---:|---:|---:|---:|---:|")
    big = [("Llama 7B", "samples/llama.py:build_7b", 8)]
    if not args.quick:
        big.append(("Llama 70B", "samples/llama.py:build_70b", 8))
    exe = Path(sys.executable).with_name("graphcalc")
    for name, spec, batch in big:
        t = time.perf_counter()
        proc = subprocess.Popen([str(exe), "analyze", spec, "--batch", str(batch), "--format",
                                 "json"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t
        if os.waitstatus_to_exitcode(status) != 0:
            emit(f"| {name} | {batch} | failed: {proc.stderr.read().decode()[:120]} | | | |")
            continue
        d = json.loads(out)
        emit(f"| {name} | {batch} | {seconds:.1f} s | {usage.ru_maxrss / 1024:,.0f} MiB | "
             f"{d['totals']['params'] / 1e9:.2f} B | {d['memory']['peak_bytes'] / 2**30:,.0f} GiB |")
    emit()
    emit("## The commands, and the replays each took")
    emit()
    commands(3, emit)
    emit()
    emit("What was profiled and changed, and what holds the rest back: "
         "[speed-profile.md](speed-profile.md).")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
