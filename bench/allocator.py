"""What the caching allocator simulation (graphcalc.gpu.allocator) costs beside the replay.

For the GPT-2 sample at batch 8 and the 7B Llama sample at batch 1 (`--device cuda`): the replay's
time, its number of allocation events, and the time of `simulate` over them, plain and with
expandable segments; then a synthetic stream of 10^6 events (half allocations of 512 B to 200 MiB,
half frees of a random live block), the size the issue plans for. Writes
bench/results/allocator.md.

Usage: .venv/bin/python bench/allocator.py
"""

from __future__ import annotations

import platform
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from graphcalc.sources import loader  # noqa: E402
from graphcalc.gpu.allocator import simulate  # noqa: E402
from graphcalc.commands.analyze import resolve_inputs  # noqa: E402
from graphcalc.options import Options  # noqa: E402
from graphcalc.fake.replay import replay  # noqa: E402

MODELS = (("GPT-2", "samples/gpt2.py", 8), ("Llama 7B", "samples/llama.py:build_7b", 1))


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def synthetic(n: int) -> list[tuple[int, int]]:
    rng = random.Random(0)
    events, live, serial = [], [], 0
    while len(events) < n:
        if live and rng.random() < 0.5:
            j = rng.randrange(len(live))
            live[j], live[-1] = live[-1], live[j]
            s, b = live.pop()
            events.append((s, -b))
        else:
            b = 512 * rng.choice((rng.randint(1, 2000), rng.randint(1, 40000),
                                  rng.randint(1, 400000)))
            live.append((serial, b))
            events.append((serial, b))
            serial += 1
    return events


def main() -> None:
    rows = []
    for name, spec, batch in MODELS:
        src = loader.load(str(ROOT / spec))
        model = loader.build_model(src, device="meta")
        rp, t_replay = timed(lambda: replay(model, resolve_inputs(src, None), src.loss,
                                            Options(batch=batch, device="cuda")))
        events = rp.recorder.tracker.events
        r, t_sim = timed(lambda: simulate(events))
        _, t_exp = timed(lambda: simulate(events, expandable_segments=True))
        rows.append((f"{name}, batch {batch}", len(events), f"{t_replay:.1f} s",
                     f"{t_sim * 1000:.0f} ms", f"{t_exp * 1000:.0f} ms",
                     f"{r.peak_reserved_bytes / 2**30:.2f} GiB"))
    events = synthetic(10**6)
    r, t_sim = timed(lambda: simulate(events))
    _, t_exp = timed(lambda: simulate(events, expandable_segments=True))
    rows.append(("synthetic", len(events), "--", f"{t_sim * 1000:.0f} ms", f"{t_exp * 1000:.0f} ms",
                 f"{r.peak_reserved_bytes / 2**30:.2f} GiB"))
    head = ("stream", "events", "replay", "simulate", "expandable", "peak reserved")
    lines = ["# Caching allocator simulation: cost", "",
             f"{platform.processor() or platform.machine()}, Python {platform.python_version()}; "
             "`.venv/bin/python bench/allocator.py`", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    text = "\n".join(lines) + "\n"
    (ROOT / "bench" / "results" / "allocator.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
