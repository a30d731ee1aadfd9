"""The pictures of where the memory goes: the stacked timeline (Report.memory.timeline_stack and
its SVG), the fit curve, the report's HTML, and the PyTorch memory snapshot.

The stack is checked against the replay's own tracker, event by event: its six figures must sum
to the live bytes the tracker counted after that event (`tracking.LiveStorages.events`, a running
sum of +/- bytes), and its highest point must be the report's peak."""

from __future__ import annotations

import pickle
import random
import re
import xml.etree.ElementTree as ET
from collections import Counter

import pytest
from typer.testing import CliRunner

from graphcalc.passes import timeline
from graphcalc.commands.analyze import analyze_file
from graphcalc.options import Options
from graphcalc.output.plots import CHAR_WIDTH, fit_svg, timeline_svg
from graphcalc.report import STACK_CATEGORIES
from graphcalc.units import format_bytes
from graphcalc.commands.verify import fit
from graphcalc_cli.app import app

from conftest import SAMPLES

CNN = str(SAMPLES / "seed_cnn.py")
runner = CliRunner()
NS = {"s": "http://www.w3.org/2000/svg"}


def analysed(options: Options, spec: str = CNN):
    kept = []
    report = analyze_file(spec, options, on_replay=kept.append)
    return report, kept[-1]


def tracker_levels(rp) -> list[int]:
    """Live bytes after each event, summed here from the tracker's raw (serial, delta) log."""
    out, level = [], 0
    for _, delta in rp.recorder.tracker.events:
        level += delta
        out.append(level)
    return out


@pytest.mark.parametrize("options", [Options(batch=16), Options(batch=4, optimizer="sgd"),
                                     Options(batch=8, device="cuda", optimizer="adamw")])
def test_the_stack_sums_to_the_trackers_live_bytes_at_every_point(options):
    report, rp = analysed(options)
    levels = tracker_levels(rp)
    cats = rp.categories()
    points = report.memory.timeline_stack
    # small step: every event from the first step's start to the last step's end is a point
    assert [p.event for p in points] == list(range(rp.step_events[0], rp.step_events[-1] + 1))
    for p in points:
        assert p.total == levels[p.event - 1]
        by_cat = Counter()
        for serial, delta in rp.recorder.tracker.events[:p.event]:
            by_cat[cats.get(serial, "activations")] += delta
        assert [getattr(p, c) for c in STACK_CATEGORIES] == [by_cat[c] for c in
                                                              STACK_CATEGORIES]
    top = max(points, key=lambda p: p.total)
    assert top.total == report.memory.peak_bytes
    assert (top.step, top.phase) == (report.memory.peak_step, report.memory.peak_phase)
    # at the peak the stack is the report's breakdown (state and temporaries together there)
    b = report.memory.breakdown
    assert (top.parameters, top.gradients, top.optimizer_state + top.optimizer_temporaries,
            top.batch, top.activations) == (b.parameters, b.gradients, b.optimizer_state,
                                            b.batch, b.activations)


def test_the_phases_cover_the_steps_in_order():
    report, rp = analysed(Options(batch=2))
    spans = report.memory.timeline_phases
    assert spans[0].start == rp.step_events[0] and spans[-1].end == rp.step_events[-1]
    assert all(a.end == b.start for a, b in zip(spans, spans[1:]))
    main = [(s.step, s.phase) for s in spans if s.phase != "end"]
    assert main == [(step, ph) for step in (1, 2)
                    for ph in ("forward", "loss", "backward", "optimizer")]
    for p in report.memory.timeline_stack[1:]:
        span = next(s for s in spans if s.start < p.event <= s.end)
        assert (p.step, p.phase) == (span.step, span.phase)


def test_a_big_step_keeps_each_stretchs_extremes_and_the_exact_peak(monkeypatch):
    monkeypatch.setattr(timeline, "MAX_POINTS", 40)
    report, rp = analysed(Options(batch=16))
    levels = tracker_levels(rp)
    points = report.memory.timeline_stack
    assert len(points) <= 40 + 3
    assert all(p.total == levels[p.event - 1] for p in points)
    assert max(p.total for p in points) == report.memory.peak_bytes
    assert rp.recorder.tracker.peak_event in {p.event for p in points}


def test_chosen_events_are_the_envelope():
    rng = random.Random(1)
    levels = [rng.randrange(1000) for _ in range(5000)]
    start, end = 10, 4990
    peak_x = max(range(start, end + 1), key=lambda x: levels[x - 1])
    keep = timeline.chosen_events(levels, start, end, peak_x, max_points=100)
    assert len(keep) <= 103 and keep == sorted(set(keep))
    assert {start, end, peak_x} <= set(keep)
    size = -(-(end - start + 1) // 50)
    for b0 in range(start, end + 1, size):
        xs = range(b0, min(b0 + size, end + 1))
        assert max(levels[x - 1] for x in xs) in {levels[k - 1] for k in keep if k in xs}
        assert min(levels[x - 1] for x in xs) in {levels[k - 1] for k in keep if k in xs}


@pytest.mark.parametrize("shard", ["ddp", "zero2", "fsdp"])
def test_per_rank_stack_peaks_at_the_per_rank_peak(shard):
    report = analyze_file(CNN, Options(batch=4, world_size=2, shard=shard))
    points = report.memory.timeline_stack
    assert max(p.total for p in points) == report.memory.peak_bytes
    assert "per rank of 2" in timeline_svg(report)


def _texts(svg: str):
    """(x0, y0, x1, y1, text) of every unrotated text, its width estimated as the chart does."""
    root = ET.fromstring(svg)
    boxes = []
    for t in root.iter("{http://www.w3.org/2000/svg}text"):
        if "transform" in t.attrib:
            continue
        x, y, size = float(t.get("x")), float(t.get("y")), float(t.get("font-size"))
        w = len(t.text) * size * CHAR_WIDTH
        x0 = {"start": x, "middle": x - w / 2, "end": x - w}[t.get("text-anchor")]
        boxes.append((x0, y - size * 0.8, x0 + w, y + size * 0.2, t.text))
    return root, boxes


def _no_overlap(boxes, width):
    for i, a in enumerate(boxes):
        assert a[0] >= 0 and a[2] <= width, f"{a[4]!r} leaves the picture"
        for b in boxes[i + 1:]:
            overlap = a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
            assert not overlap, f"{a[4]!r} overlaps {b[4]!r}"


@pytest.mark.parametrize("batch", [16, 64])
@pytest.mark.parametrize("factor", [None, 0.97, 1.03, 0.3, 40])
def test_timeline_svg_marks_the_peak_and_the_budget_and_explains_its_colours(batch, factor):
    report, _ = analysed(Options(batch=batch))
    m = report.memory
    budget = None if factor is None else int(m.peak_bytes * factor)
    svg = timeline_svg(report, budget, "--memory")
    root, boxes = _texts(svg)
    _no_overlap(boxes, float(root.get("width")))
    texts = " ".join(b[4] for b in boxes)
    peak = next(p for p in root.iter("{http://www.w3.org/2000/svg}path")
                if p.get("class") == "peak")
    assert int(peak.get("data-bytes")) == m.peak_bytes
    # the drawn curve: the highest vertex of the top of the stack is at the peak marker's height
    polys = [p for p in root.iter("{http://www.w3.org/2000/svg}polygon")]
    top_y = min(float(xy.split(",")[1]) for p in polys for xy in p.get("points").split())
    marker_y = float(re.match(r"M [\d.]+ ([\d.]+)", peak.get("d")).group(1)) + 2
    assert abs(top_y - marker_y) < 0.06
    assert f"peak {format_bytes(m.peak_bytes)} · step {m.peak_step} {m.peak_phase} · " \
           f"{m.peak_layer}" in texts
    for word in ("parameters", "gradients", "optimizer state", "optimizer temporaries", "batch",
                 "activations", "forward", "backward", "optimizer", "step 1", "step 2"):
        assert word in texts
    lines = [x for x in root.iter("{http://www.w3.org/2000/svg}line") if x.get("class") == "budget"]
    if budget is None:
        assert not lines and "--memory" not in texts
    else:
        assert int(lines[0].get("data-bytes")) == budget
        assert f"--memory {format_bytes(budget)}" in texts


def test_fit_keeps_every_batch_it_analysed_and_the_plot_draws_them():
    calls = []

    def peak_at(b):  # affine, as a training peak nearly is: 1 MiB + 10 KiB per sample
        calls.append(b)
        return 2**20 + b * 10 * 2**10

    f = fit(peak_at, 64 * 2**20)
    assert f.points == tuple(sorted((b, peak_at(b)) for b in set(calls)))
    assert f.evaluations == len(set(calls))
    # (64 MiB - 1 MiB) / 10 KiB = 6451.2: the largest batch is 6451, 80% of it 5160
    assert (f.batch, f.recommended_batch) == (6451, 5160)
    svg = fit_svg(f, "toy", "adam · fp32")
    root, boxes = _texts(svg)
    _no_overlap(boxes, float(root.get("width")))
    texts = " ".join(b[4] for b in boxes)
    assert f"largest that fits: 6,451 ({format_bytes(f.peak_bytes)})" in texts
    assert f"80% of it: 5,160 ({format_bytes(f.recommended_peak_bytes)})" in texts
    assert "budget 64.0 MiB" in texts
    drawn = [c for c in root.iter("{http://www.w3.org/2000/svg}circle") if c.get("r") == "4"]
    off = [b for b, _ in f.points if b > 2 * f.batch]
    assert len(drawn) + len(off) == len(f.points)
    none = fit(peak_at, 2**20)  # batch 1 needs 1 MiB + 10 KiB
    assert none.batch == 0
    assert "not even batch 1 fits: it needs 1.01 MiB" in fit_svg(none, "toy")


def test_the_html_of_a_report_shows_the_timeline_under_the_table():
    report, _ = analysed(Options(batch=2))
    html = report._repr_html_()
    assert html.index("</table>") < html.index("<svg")
    ET.fromstring(html[html.index("<svg"):html.index("</svg>") + 6])


# --- the PyTorch memory snapshot ----------------------------------------------------------------

def _trace_peak(trace) -> tuple[int, int]:
    """(peak, live at the end) of a device trace, walked as PyTorch's viewer walks it: + on alloc,
    - on free_completed (MemoryViz.js process_alloc_data)."""
    level = peak = 0
    for e in trace:
        if e["action"] == "alloc":
            level += e["size"]
            peak = max(peak, level)
        elif e["action"] == "free_completed":
            level -= e["size"]
    return peak, level


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_snapshot_loads_in_torchs_memory_viz_with_graphcalcs_peak(device, tmp_path):
    from torch.cuda import _memory_viz

    path = tmp_path / "step.pickle"
    result = runner.invoke(app, ["analyze", CNN, "--batch", "16", "--device", device,
                                 "--snapshot", str(path), "--format", "json"])
    assert result.exit_code == 0, result.output
    import json

    peak_bytes = json.loads(result.stdout)["memory"]["peak_bytes"]
    data = pickle.loads(path.read_bytes())
    assert set(data) == {"segments", "device_traces"}
    trace = data["device_traces"][0]
    peak, end = _trace_peak(trace)
    assert peak == peak_bytes
    assert end == sum(s["total_size"] for s in data["segments"])
    if device == "cuda":
        assert all(e["size"] % 512 == 0 for e in trace if e["action"] == "alloc")
    # torch's own readers
    stats = _memory_viz.segsum(data)  # asserts its own accounting
    assert f"total_allocated: {_memory_viz.Bytes(end)}" in stats
    flame = _memory_viz.memory(data, format_flamegraph=lambda lines: lines)
    assert sum(int(line.rsplit(" ", 1)[1]) for line in flame.splitlines()) == end
    assert "fc.0.weight:0:before the step" in flame
    _memory_viz.segments(data, format_flamegraph=lambda lines: lines)
    assert _memory_viz.trace(data).startswith("Device 0")
    for html in (_memory_viz.trace_plot(data), _memory_viz.segment_plot(data)):
        assert "MemoryViz.js" in html
    cats = {e.get("category") for e in trace}
    assert cats == {"parameter", "gradient", "optimizer_state", "temporary", "input",
                    "activation", "unknown"}
    layers = {e["frames"][-1]["filename"] for e in trace if e["action"] == "alloc"}
    assert {"conv.0", "fc.2", "[loss]", "[optimizer]"} <= layers
    # The viewer unpickles the file itself, in JavaScript (MemoryViz.js `unpickle`): protocols 2
    # to 4 and only the opcodes its switch has, listed here from that function.
    import pickletools

    viewer_reads = {"PROTO", "APPEND", "APPENDS", "LIST", "TUPLE", "NEWFALSE", "NEWTRUE", "NONE",
                    "BINGET", "BININT", "BININT1", "BININT2", "EMPTY_DICT", "EMPTY_LIST", "FRAME",
                    "LONG1", "LONG_BINGET", "MARK", "MEMOIZE", "BINPUT", "LONG_BINPUT",
                    "SETITEMS", "SETITEM", "DICT", "SHORT_BINUNICODE", "BINUNICODE", "STOP",
                    "EMPTY_TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "BINFLOAT"}
    assert path.read_bytes()[:2] == b"\x80\x04"
    used = {op.name for op, _, _ in pickletools.genops(path.read_bytes())}
    assert used <= viewer_reads, used - viewer_reads


# --- the command line ---------------------------------------------------------------------------

def test_render_timeline_and_analyze_timeline_svg(tmp_path):
    out = tmp_path / "step.svg"
    r = runner.invoke(app, ["render", CNN, "--timeline", "-o", str(out), "--memory", "2MiB"])
    assert r.exit_code == 0, r.output
    svg = out.read_text()
    assert 'class="budget" data-bytes="2097152"' in svg
    out2 = tmp_path / "t.svg"
    r = runner.invoke(app, ["analyze", CNN, "--timeline-svg", str(out2)])
    assert r.exit_code == 0, r.output
    assert "<svg" in out2.read_text() and "Total" in r.stdout


def test_fit_plot(tmp_path):
    out = tmp_path / "curve.svg"
    r = runner.invoke(app, ["fit", CNN, "--memory", "32MiB", "--device", "cpu", "--plot",
                            str(out)])
    assert r.exit_code == 0, r.output
    svg = out.read_text()
    batch = int(re.search(r"Largest batch that fits [^:]*: (\d+)", r.stdout).group(1))
    rec = int(re.search(r"Recommended \(80%\): (\d+)", r.stdout).group(1))
    assert f"largest that fits: {batch:,}" in svg and f"80% of it: {rec:,}" in svg


@pytest.mark.parametrize("args, words", [
    (["render", CNN, "--timeline", "-o", "x.png"], "drawn as svg"),
    (["render", CNN, "--memory", "1GiB"], "with --timeline"),
    (["analyze", CNN, "--snapshot", "s.pickle", "--world-size", "2", "--shard", "ddp"],
     "one device's step"),
    (["render", CNN, "--timeline", "--memory", "lots"], "does not parse"),
])
def test_bad_picture_options_are_one_sentence(args, words, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    assert words in r.output and "Traceback" not in r.output
