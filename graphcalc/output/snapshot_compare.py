"""A real CUDA memory snapshot against graphcalc's predicted allocation stream.

A user records a real step with PyTorch's own tools:

    torch.cuda.memory._record_memory_history(context="alloc", stacks="python")
    ... model.cuda(), training steps ...
    torch.cuda.memory._dump_snapshot("real.pickle")

and `graphcalc compare MODEL real.pickle` (same batch, precision and optimizer) lines the real
allocations up with the predicted ones (graphcalc.output.snapshot writes those in the same format):

- **Phases.** Each real event is placed in a step and a phase from what the snapshot holds:
  allocations from autograd's device thread carry no Python frames (backward); frames inside
  `torch/optim/`, or a time inside an `Optimizer.step`/`zero_grad` annotation, are the optimizer;
  frames under a `Tensor.backward`/`autograd.backward` call are backward too; frames inside an
  `nn.Module` call are forward (the loss module included); the rest before the first forward is
  setup (the model moved to the GPU, the batch); what comes between forward and backward outside
  a module is the loss. A forward after a backward or an optimizer starts the next step.
- **Figures per phase**: allocated bytes at the phase's end and at its peak, bytes and number of
  allocations made, real against predicted (bytes as the caching allocator counts them: each
  request rounded up to 512 B).
- **What the real run has that the prediction lacks**: the allocation sizes that one stream has
  and the other has not, phase by phase (a multiset difference), largest first, with the real
  allocation's innermost frame; and allocations sorted into kinds both streams are checked for:
  workspaces held for good (a 32 MiB / 8,519,680 B cuBLAS workspace, a 1 MiB cuBLASLt one: never
  freed, made at a matmul) and scratch (freed again before any other allocation is made: cuDNN's
  convolution workspaces, a kernel's temporary).
"""

from __future__ import annotations

import pickle
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from graphcalc.errors import UsageError

ALIGN = 512
PHASES = ("setup", "forward", "loss", "backward", "optimizer")
WORKSPACE_SIZES = {32 << 20: "cuBLAS workspace", 8_519_680: "cuBLAS workspace",
                   1 << 20: "cuBLASLt workspace"}


def _round(size: int) -> int:
    return -(-size // ALIGN) * ALIGN


@dataclass
class Alloc:
    """One allocation of a stream: its bytes (rounded), where it was made and freed."""

    size: int
    step: int
    phase: str
    where: str  # the innermost frame outside torch, or the predicted layer
    index: int  # position among the stream's allocations
    freed_at: int | None = None  # index of the first allocation made after its free
    kind: str = ""  # "" (a tensor), a workspace's name, or "scratch"


@dataclass
class PhaseFigures:
    step: int
    phase: str
    peak: int = 0  # allocated bytes, highest during the phase
    end: int = 0  # allocated bytes when it ends
    allocated: int = 0  # bytes allocated during it
    count: int = 0


@dataclass
class Stream:
    allocs: list[Alloc] = field(default_factory=list)
    phases: dict[tuple[int, str], PhaseFigures] = field(default_factory=dict)
    peak: int = 0
    peak_at: tuple[int, str] = (0, "setup")


def _frame(f: dict) -> str:
    return f"{f.get('filename', '')}:{f.get('line', 0)} {f.get('name', '')}"


def _innermost(frames: list[dict]) -> str:
    """The innermost frame, and the innermost outside torch's own files when that is another
    ('torch/nn/modules/conv.py:548 _conv_forward < samples/net.py:30 forward')."""
    if not frames:
        return "(no Python frames: autograd's device thread)"
    inner = _frame(frames[0])
    for f in frames:
        if "torch/" not in str(f.get("filename", "")):
            return inner if f is frames[0] else f"{inner} < {_frame(f)}"
    return inner


def _optimizer_spans(snapshot: dict) -> list[tuple[int, int]]:
    starts, spans = {}, []
    for a in snapshot.get("external_annotations") or []:
        name = str(a.get("name", ""))
        if not name.startswith("Optimizer."):
            continue
        if a.get("stage") == "START":
            starts[name] = a.get("time_us", 0)
        elif a.get("stage") == "END" and name in starts:
            spans.append((starts.pop(name), a.get("time_us", 0)))
    return spans


def _real_phase(event: dict, spans) -> str:
    frames = event.get("frames") or []
    if not frames:
        return "backward"
    t = event.get("time_us")
    if t is not None and any(lo <= t <= hi for lo, hi in spans):
        return "optimizer"
    names = [(str(f.get("filename", "")), str(f.get("name", ""))) for f in frames]
    if any("torch/optim/" in fn for fn, _ in names):
        return "optimizer"
    if any((fn.endswith("torch/_tensor.py") and n == "backward")
           or (fn.endswith("torch/autograd/__init__.py") and n == "backward") for fn, n in names):
        return "backward"
    if any(fn.endswith("torch/nn/modules/module.py") and n in ("_call_impl", "_wrapped_call_impl")
           for fn, n in names):
        return "forward"
    return "other"


def _predicted_phase(event: dict) -> tuple[int, str]:
    """(step, phase) from graphcalc.output.snapshot's frames: '<phase> of step <n>'."""
    for f in event.get("frames") or []:
        parts = str(f.get("name", "")).split(" of step ")
        if len(parts) == 2 and parts[1].isdigit():
            return int(parts[1]) - 1, parts[0]
    return 0, "setup"


def _stream(snapshot: dict, predicted: bool) -> Stream:
    traces = snapshot.get("device_traces")
    if not isinstance(traces, list) or not traces:
        raise UsageError("the snapshot holds no allocation trace (record it with "
                         "torch.cuda.memory._record_memory_history before the steps)")
    trace = max(traces, key=len)
    spans = [] if predicted else _optimizer_spans(snapshot)
    s = Stream()
    live: dict[int, Alloc] = {}
    current = 0
    step, phase = 0, "setup"
    seen_forward = False
    for e in trace:
        action = e.get("action")
        if action == "alloc":
            if predicted:
                step, phase = _predicted_phase(e)
            else:
                p = _real_phase(e, spans)
                if p == "forward":
                    if phase in ("backward", "optimizer") and seen_forward:
                        step += 1
                    seen_forward = True
                elif p == "other":
                    p = "setup" if not seen_forward else ("loss" if phase in ("forward", "loss")
                                                          else phase)
                phase = p
            a = Alloc(_round(int(e.get("size", 0))), step, phase,
                      _innermost(e.get("frames") or []) if not predicted
                      else str((e.get("frames") or [{}])[-1].get("filename", "")),
                      len(s.allocs))
            s.allocs.append(a)
            live[e.get("addr")] = a
            current += a.size
            f = s.phases.setdefault((step, phase), PhaseFigures(step, phase))
            f.allocated += a.size
            f.count += 1
            if current > f.peak:
                f.peak = current
            if current > s.peak:
                s.peak, s.peak_at = current, (step, phase)
        elif action == "free_completed" or (predicted and action == "free_requested"):
            a = live.pop(e.get("addr"), None)
            if a is None:
                continue  # made before the recording began
            a.freed_at = len(s.allocs)
            current -= a.size
        f = s.phases.get((step, phase))
        if f is not None:
            f.end = current
    for a in s.allocs:
        if a.freed_at is None and a.size in WORKSPACE_SIZES and a.phase in (
                "forward", "loss", "backward"):
            a.kind = WORKSPACE_SIZES[a.size]
        elif a.freed_at == a.index + 1:
            a.kind = "scratch"
    return s


@dataclass(frozen=True)
class Comparison:
    real: Stream
    predicted: Stream
    rows: tuple[tuple[int, str, PhaseFigures | None, PhaseFigures | None], ...]
    # (step, phase) -> sizes only the real stream has / only the prediction has
    real_only: dict
    predicted_only: dict
    kinds: dict  # kind -> (real bytes, real count, predicted bytes, predicted count)


def load(path) -> dict:
    try:
        with open(path, "rb") as f:
            data = pickle.load(f)
    except FileNotFoundError:
        raise UsageError(f"no snapshot at {path}") from None
    except Exception as e:  # noqa: BLE001 - a damaged or foreign file is the user's input
        raise UsageError(f"{path} is not a PyTorch memory snapshot (torch.cuda.memory."
                         f"_dump_snapshot): {type(e).__name__}") from None
    if not isinstance(data, dict) or "device_traces" not in data:
        raise UsageError(f"{path} is not a PyTorch memory snapshot (torch.cuda.memory."
                         "_dump_snapshot writes a dict with 'device_traces')")
    return data


def compare(real: dict, predicted: dict) -> Comparison:
    r, p = _stream(real, False), _stream(predicted, True)
    keys = sorted(set(r.phases) | set(p.phases),
                  key=lambda k: (k[0], PHASES.index(k[1]) if k[1] in PHASES else 9))
    rows = tuple((k[0], k[1], r.phases.get(k), p.phases.get(k)) for k in keys)
    real_only, predicted_only = {}, {}
    for k in keys:
        rs = Counter(a.size for a in r.allocs if (a.step, a.phase) == k)
        ps = Counter(a.size for a in p.allocs if (a.step, a.phase) == k)
        if rs - ps:
            real_only[k] = rs - ps
        if ps - rs:
            predicted_only[k] = ps - rs
    kinds = {}
    for name in sorted({a.kind for a in r.allocs + p.allocs if a.kind}):
        ra = [a.size for a in r.allocs if a.kind == name]
        pa = [a.size for a in p.allocs if a.kind == name]
        kinds[name] = (sum(ra), len(ra), sum(pa), len(pa))
    return Comparison(r, p, rows, real_only, predicted_only, kinds)


def _mib(n: int) -> str:
    return f"{n / 2**20:,.2f} MiB"


def as_dict(c: Comparison, top: int = 5) -> dict:
    """The comparison's figures as `render` prints them, in bytes: the peaks, each phase's
    real and predicted figures, the kinds of allocation, and per phase the allocation sizes
    only one side has (the `top` largest by bytes, with where each was made)."""

    def phase(f: PhaseFigures | None) -> dict | None:
        return None if f is None else {"peak_bytes": f.peak, "end_bytes": f.end,
                                       "allocated_bytes": f.allocated, "allocations": f.count}

    def only(diff: dict, stream: Stream) -> list:
        out = []
        for (step, ph), sizes in diff.items():
            biggest = sorted(sizes.items(), key=lambda kv: -kv[0] * kv[1])[:top]
            out.append({"step": step + 1, "phase": ph,
                        "bytes": sum(s * n for s, n in sizes.items()),
                        "allocations": sum(sizes.values()),
                        "largest": [{"size_bytes": size, "count": n, "where": next(
                            a.where for a in stream.allocs
                            if (a.step, a.phase) == (step, ph) and a.size == size)}
                            for size, n in biggest]})
        return out

    return {
        "real": {"peak_bytes": c.real.peak, "peak_step": c.real.peak_at[0] + 1,
                 "peak_phase": c.real.peak_at[1]},
        "predicted": {"peak_bytes": c.predicted.peak, "peak_step": c.predicted.peak_at[0] + 1,
                      "peak_phase": c.predicted.peak_at[1]},
        "peak_differs_percent": round(
            (c.predicted.peak - c.real.peak) / max(c.real.peak, 1) * 100, 4),
        "phases": [{"step": step + 1, "phase": ph, "real": phase(rf), "predicted": phase(pf)}
                   for step, ph, rf, pf in c.rows],
        "kinds": {name: {"real_bytes": rb, "real_count": rn, "predicted_bytes": pb,
                         "predicted_count": pn} for name, (rb, rn, pb, pn) in c.kinds.items()},
        "real_only": only(c.real_only, c.real),
        "predicted_only": only(c.predicted_only, c.predicted),
    }


def render(c: Comparison, top: int = 5) -> str:
    lines = [f"peak allocated: real {_mib(c.real.peak)} (step {c.real.peak_at[0] + 1} "
             f"{c.real.peak_at[1]}), predicted {_mib(c.predicted.peak)} (step "
             f"{c.predicted.peak_at[0] + 1} {c.predicted.peak_at[1]}), "
             f"{(c.predicted.peak - c.real.peak) / max(c.real.peak, 1) * 100:+.2f}%",
             "",
             f"{'step':>4} {'phase':<10} {'real peak':>14} {'predicted':>14} {'differs':>12} "
             f"{'real end':>14} {'predicted':>14} {'allocs real/pred':>18}"]
    for step, phase, rf, pf in c.rows:
        rp, pp = (rf.peak if rf else 0), (pf.peak if pf else 0)
        lines.append(f"{step + 1:>4} {phase:<10} {_mib(rp):>14} {_mib(pp):>14} "
                     f"{_mib(pp - rp):>12} {_mib(rf.end if rf else 0):>14} "
                     f"{_mib(pf.end if pf else 0):>14} "
                     f"{(rf.count if rf else 0):>8}/{(pf.count if pf else 0):<8}")
    if c.kinds:
        lines += ["", "kinds of allocation (real | predicted): bytes in all, count"]
        for name, (rb, rn, pb, pn) in c.kinds.items():
            lines.append(f"  {name:<20} {_mib(rb):>14} x{rn:<5} | {_mib(pb):>14} x{pn}")
    for title, diff, stream in (("in the real run only", c.real_only, c.real),
                                ("in the prediction only", c.predicted_only, c.predicted)):
        if not diff:
            continue
        lines += ["", f"allocation sizes {title} (largest first):"]
        for (step, phase), sizes in diff.items():
            biggest = sorted(sizes.items(), key=lambda kv: -kv[0] * kv[1])[:top]
            total = sum(s * n for s, n in sizes.items())
            lines.append(f"  step {step + 1} {phase}: {_mib(total)} in {sum(sizes.values())}")
            for size, n in biggest:
                where = next(a.where for a in stream.allocs
                             if (a.step, a.phase) == (step, phase) and a.size == size)
                lines.append(f"    {size:>14,} B x{n:<4} {where}")
    return "\n".join(lines)


def compare_files(real_path, predicted_snapshot: dict) -> Comparison:
    return compare(load(Path(real_path)), predicted_snapshot)
