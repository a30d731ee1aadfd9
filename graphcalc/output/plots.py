"""Charts of a report, as plain SVG written here (no plotting library): the memory timeline of the
replayed steps, stacked by where the memory goes, and the predicted peak against the batch that
`graphcalc fit` searched.

Every figure printed on a chart is the report's (`units.format_bytes`, as the table prints it);
the stack is `Memory.timeline_stack` as it is, one step line per category.
"""

from __future__ import annotations

import math
from html import escape

from graphcalc.errors import RenderError
from graphcalc.report import Report
from graphcalc.units import format_bytes

FONT = "Helvetica, Arial, sans-serif"
# Tableau 10, the palette PyTorch's memory viewer draws categories in.
COLORS = {"parameters": "#4e79a7", "gradients": "#f28e2c", "optimizer_state": "#59a14f",
          "optimizer_temporaries": "#8cd17d", "batch": "#b07aa1", "activations": "#e15759",
          "workspace": "#9c755f"}
LABELS = {"parameters": "parameters, buffers", "gradients": "gradients",
          "optimizer_state": "optimizer state", "optimizer_temporaries": "optimizer temporaries",
          "batch": "batch", "activations": "activations", "workspace": "cuBLAS workspaces"}
# Bottom to top: what stays for the whole step first, so the layers that come and go sit on top.
DRAW_ORDER = ("parameters", "optimizer_state", "batch", "workspace", "gradients",
              "optimizer_temporaries", "activations")
PHASE_COLORS = {"forward": "#dbe8f5", "loss": "#fbe7b5", "backward": "#f6d3d3",
                "optimizer": "#d9eed3", "end": "#eeeeee"}
PHASE_LABELS = {"end": "zero_grad / step end"}
BUDGET_COLOR = "#c00000"
PEAK_COLOR = "#111111"
CHAR_WIDTH = 0.58  # average glyph width of Helvetica/Arial, in font sizes: for placing labels


def text_width(text: str, size: float) -> float:
    return len(text) * size * CHAR_WIDTH


def _text(x, y, text, size=12, anchor="start", color="#222222", weight="normal",
          extra="") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
            f'fill="{color}" font-weight="{weight}"{extra}>{escape(text)}</text>')


_UNITS = ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB"), (1, "B"))


def byte_ticks(top: float, count: int = 5) -> tuple[list[float], str, int]:
    """Round tick values from 0 to about `top` bytes in one binary unit: (ticks, unit, scale)."""
    scale, unit = next((s, u) for s, u in _UNITS if top >= s)
    span = top / scale
    raw = span / count
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    ticks = [i * step * scale for i in range(int(span / step) + 2)]
    return ticks, unit, scale


def _tick_label(value: float, unit: str, scale: int) -> str:
    v = value / scale
    return f"{v:g} {unit}" if v else "0"


def count_ticks(top: float, count: int = 6) -> list[int]:
    raw = max(top / count, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    step = max(1, int(step))
    return [i * step for i in range(int(top // step) + 2)]


def _simplify(pts: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The same line without the vertices inside a straight stretch (a category that stays put
    for a thousand events is one segment, not a thousand)."""
    out: list[tuple[float, float]] = []
    for p in pts:
        if out and (round(p[0], 1), round(p[1], 1)) == (round(out[-1][0], 1),
                                                        round(out[-1][1], 1)):
            continue
        if len(out) >= 2 and (out[-2][1] == out[-1][1] == p[1] or out[-2][0] == out[-1][0] == p[0]):
            out[-1] = p
        else:
            out.append(p)
    return out


def _svg(width: int, height: int, body: list[str], title: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="{FONT}">\n'
            f"<title>{escape(title)}</title>\n"
            f'<rect width="{width}" height="{height}" fill="white"/>\n'
            + "\n".join(body) + "\n</svg>\n")


def _subtitle(report: Report) -> str:
    cfg, m = report.config, report.memory
    amp = f" · autocast {cfg['amp']}" if cfg.get("amp") else ""
    rank = ""
    d = report.distributed
    if d is not None:
        rank = f" · per rank of {d.world_size} ({d.shard})"
    return (f"batch {cfg['batch']} · {cfg['dtype']}{amp} · {cfg['optimizer']} · memory for "
            f"{m.device}{rank}")


def timeline_svg(report: Report, budget_bytes: int | None = None,
                 budget_label: str | None = None, width: int = 1000) -> str:
    """The live bytes of the replayed steps, stacked by category, with the phases as bands, the
    peak marked with its layer, and `budget_bytes` (a --memory budget, a GPU's memory) as a line
    labelled `budget_label`."""
    m = report.memory
    points = m.timeline_stack
    if not points:
        raise RenderError("the report has no memory timeline to draw")
    left, right, top, plot_h = 86, 24, 96, 330
    plot_w = width - left - right
    x0, x1 = points[0].event, max(points[-1].event, points[0].event + 1)
    if m.timeline_phases:
        x1 = max(x1, m.timeline_phases[-1].end)
    peak = max(points, key=lambda p: p.total)
    ymax = max(peak.total, budget_bytes or 0) * 1.1 or 1
    ticks, unit, scale = byte_ticks(ymax)
    ymax = max(ymax, ticks[-1]) if ticks[-1] < ymax * 1.25 else ymax

    def X(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * plot_w

    def Y(v: float) -> float:
        return top + plot_h - v / ymax * plot_h

    body = [_text(left, 26, f"{report.model}: memory across the {len({p.step for p in points})} "
                            "replayed training steps", 16, weight="bold"),
            _text(left, 46, _subtitle(report) + " · stacked by where the memory goes", 12,
                  color="#444444")]
    # Phase bands: a strip above the plot, named where it is wide enough, tinted below.
    strip_y = top - 26
    for s in m.timeline_phases:
        a, b = X(s.start), X(s.end)
        fill = PHASE_COLORS.get(s.phase, "#eeeeee")
        body.append(f'<rect x="{a:.2f}" y="{top}" width="{max(b - a, 0.5):.2f}" '
                    f'height="{plot_h}" fill="{fill}" opacity="0.45"/>')
        body.append(f'<rect x="{a:.2f}" y="{strip_y}" width="{max(b - a, 0.5):.2f}" height="20" '
                    f'fill="{fill}" stroke="white" stroke-width="1"/>')
        name = PHASE_LABELS.get(s.phase, s.phase)
        for label in (name, name[:4] + "." if len(name) > 5 else name):
            if text_width(label, 10) + 6 < b - a and s.phase != "end":
                body.append(_text((a + b) / 2, strip_y + 14, label, 10, "middle"))
                break
    steps = sorted({s.step for s in m.timeline_phases})
    for step in steps:
        spans = [s for s in m.timeline_phases if s.step == step]
        a, b = X(spans[0].start), X(spans[-1].end)
        body.append(_text((a + b) / 2, strip_y - 6, f"step {step}", 11, "middle", "#333333",
                          "bold"))
        if step != steps[0]:
            body.append(f'<line x1="{a:.2f}" y1="{strip_y - 18}" x2="{a:.2f}" '
                        f'y2="{top + plot_h}" stroke="#888888" stroke-dasharray="2,3"/>')
    # Axes and grid.
    for t in ticks:
        if t > ymax:
            break
        y = Y(t)
        body.append(f'<line x1="{left}" y1="{y:.2f}" x2="{left + plot_w}" y2="{y:.2f}" '
                    'stroke="#dddddd" stroke-width="1"/>')
        body.append(_text(left - 8, y + 4, _tick_label(t, unit, scale), 11, "end", "#333333"))
    # The stack: each category a step line filled down to the one below it.
    xs = [p.event for p in points] + [x1]
    below = [0] * len(points)
    for cat in DRAW_ORDER:
        above = [b + getattr(p, cat) for b, p in zip(below, points)]
        if any(a != b for a, b in zip(above, below)):
            upper, lower = [], []
            for i in range(len(points)):
                upper += [(X(xs[i]), Y(above[i])), (X(xs[i + 1]), Y(above[i]))]
                lower += [(X(xs[i]), Y(below[i])), (X(xs[i + 1]), Y(below[i]))]
            pts = _simplify(upper) + _simplify(lower[::-1])
            body.append(f'<polygon data-category="{cat}" fill="{COLORS[cat]}" stroke="none" '
                        'points="'
                        + " ".join(f"{x:.1f},{y:.1f}" for x, y in pts) + '"/>')
        below = above
    body.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" '
                'stroke="#666666"/>')
    body.append(_text(left + plot_w / 2, top + plot_h + 22, "allocations and frees of the "
                      "replayed steps, in order (events, not time)", 11, "middle", "#444444"))
    body.append(_text(18, top + plot_h / 2, "live bytes", 12, "middle", "#333333",
                      extra=f' transform="rotate(-90 18 {top + plot_h / 2:.1f})"'))
    # The budget line.
    if budget_bytes:
        y = Y(budget_bytes)
        label = f"{budget_label or 'budget'} {format_bytes(budget_bytes)}"
        body.append(f'<line class="budget" data-bytes="{budget_bytes}" x1="{left}" '
                    f'y1="{y:.2f}" x2="{left + plot_w}" y2="{y:.2f}" stroke="{BUDGET_COLOR}" '
                    'stroke-width="2" stroke-dasharray="8,4"/>')
        # on the side away from the peak, whose label is centred on it: the two never meet
        right_side = X(peak.event) <= left + plot_w / 2
        body.append(_text(left + plot_w - 6 if right_side else left + 6, y - 6, label, 12,
                          "end" if right_side else "start", BUDGET_COLOR, "bold"))
    # The peak: a marker, and its figure, phase and layer beside it.
    px, py = X(peak.event), Y(peak.total)
    body.append(f'<line x1="{px:.2f}" y1="{py:.2f}" x2="{px:.2f}" y2="{top + plot_h}" '
                f'stroke="{PEAK_COLOR}" stroke-width="1" stroke-dasharray="3,2"/>')
    body.append(f'<path class="peak" data-bytes="{peak.total}" data-event="{peak.event}" '
                f'd="M {px:.2f} {py - 2:.2f} l -6 -10 l 12 0 z" fill="{PEAK_COLOR}"/>')
    label = (f"peak {format_bytes(m.peak_bytes)} · step {m.peak_step} {m.peak_phase} · "
             f"{m.peak_layer}")
    w = text_width(label, 12)
    ly = max(py - 16, top + 14)
    if budget_bytes and abs(ly - Y(budget_bytes)) < 16:
        ly = Y(budget_bytes) + 18 if ly > Y(budget_bytes) - 4 else ly
    if px + w / 2 > left + plot_w - 4:
        lx, anchor = px - 10, "end"
    elif px - w / 2 < left + 4:
        lx, anchor = px + 10, "start"
    else:
        lx, anchor = px, "middle"
    box_x = lx - w if anchor == "end" else lx - w / 2 if anchor == "middle" else lx
    body.append(f'<rect x="{box_x - 3:.1f}" y="{ly - 13:.1f}" width="{w + 6:.1f}" height="17" '
                'fill="white" opacity="0.85"/>')
    body.append(_text(lx, ly, label, 12, anchor, PEAK_COLOR, "bold"))
    # The legend: each colour, and what it held at the peak.
    ly = top + plot_h + 48
    body.append(_text(left, ly, "at the peak:", 12, color="#333333", weight="bold"))
    shown = [cat for cat in DRAW_ORDER if cat != "workspace" or peak.workspace]
    keys = [f"{LABELS[cat]} {format_bytes(getattr(peak, cat))}" for cat in shown]
    col_w = [max(text_width(k, 12) for k in keys[c::3]) + 44 for c in range(3)]
    rows = -(-len(shown) // 3)
    for i, (cat, key) in enumerate(zip(shown, keys)):
        cx = left + 90 + sum(col_w[:i % 3])
        cy = ly + (i // 3) * 22
        body.append(f'<rect x="{cx:.1f}" y="{cy - 11:.1f}" width="14" height="14" '
                    f'fill="{COLORS[cat]}"/>')
        body.append(_text(cx + 20, cy, key, 12))
    body.append(_text(left, ly + 22 * rows, "activations: what the forward returns and autograd "
                      "saves, and the backward's temporaries; optimizer temporaries: what step() "
                      "makes and frees", 11, color="#555555"))
    ly += 28 + 22 * rows
    body.append(_text(left, ly, "bands:", 12, color="#333333", weight="bold"))
    cx = left + 90
    for phase in ("forward", "loss", "backward", "optimizer", "end"):
        name = PHASE_LABELS.get(phase, phase)
        body.append(f'<rect x="{cx:.1f}" y="{ly - 11:.1f}" width="14" height="14" '
                    f'fill="{PHASE_COLORS[phase]}" stroke="#bbbbbb"/>')
        body.append(_text(cx + 20, ly, name, 12))
        cx += 20 + text_width(name, 12) + 22
    notes = [f"▼ the training peak ({format_bytes(m.peak_bytes)}, {m.peak_bytes:,} B)"]
    if budget_bytes:
        notes.append(f"dashed red: {budget_label or 'budget'} {format_bytes(budget_bytes)}")
    body.append(_text(left, ly + 24, " · ".join(notes), 12, color="#333333"))
    height = int(ly + 40)
    return _svg(width, height, body, f"{report.model}: memory timeline")


def fit_svg(fit, model: str, subtitle: str = "", width: int = 900,
            budget_label: str = "budget") -> str:
    """The predicted peak at each batch `fit` analysed (`verify.Fit.points`), the budget, the
    largest batch that fits and the 80% batch."""
    pts = sorted(fit.points)
    if not pts:
        raise RenderError("the fit has no analysed batches to draw")
    # Probes far past the answer (the search's first overshoot) would squeeze the chart to the
    # left: they are listed under it instead.
    reach = max(2 * fit.batch, 4)
    beyond = [(b, p) for b, p in pts if b > reach]
    pts = [(b, p) for b, p in pts if b <= reach] or pts[:1]
    left, right, top, plot_h = 90, 30, 70, 340
    plot_w = width - left - right
    bmax = max(b for b, _ in pts)
    ymax = max(max(p for _, p in pts), fit.memory_bytes) * 1.1
    ticks, unit, scale = byte_ticks(ymax)
    bticks = count_ticks(bmax)
    xmax = max(bmax, bticks[-1] if bticks[-1] < bmax * 1.2 else bmax)

    def X(b: float) -> float:
        return left + b / xmax * plot_w

    def Y(v: float) -> float:
        return top + plot_h - v / ymax * plot_h

    body = [_text(left, 26, f"{model}: predicted training peak against batch", 16,
                  weight="bold"),
            _text(left, 46, subtitle, 12, color="#444444")]
    for t in ticks:
        if t > ymax:
            break
        body.append(f'<line x1="{left}" y1="{Y(t):.2f}" x2="{left + plot_w}" y2="{Y(t):.2f}" '
                    'stroke="#dddddd"/>')
        body.append(_text(left - 8, Y(t) + 4, _tick_label(t, unit, scale), 11, "end"))
    for b in bticks:
        if b > xmax:
            break
        body.append(f'<line x1="{X(b):.2f}" y1="{top + plot_h}" x2="{X(b):.2f}" '
                    f'y2="{top + plot_h + 5}" stroke="#666666"/>')
        body.append(_text(X(b), top + plot_h + 19, f"{b:,}", 11, "middle"))
    body.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" '
                'stroke="#666666"/>')
    body.append(_text(left + plot_w / 2, top + plot_h + 40, "batch", 12, "middle", "#333333"))
    body.append(_text(20, top + plot_h / 2, "predicted peak", 12, "middle", "#333333",
                      extra=f' transform="rotate(-90 20 {top + plot_h / 2:.1f})"'))
    yb = Y(fit.memory_bytes)
    body.append(f'<line class="budget" data-bytes="{fit.memory_bytes}" x1="{left}" '
                f'y1="{yb:.2f}" x2="{left + plot_w}" y2="{yb:.2f}" stroke="{BUDGET_COLOR}" '
                'stroke-width="2" stroke-dasharray="8,4"/>')
    body.append(_text(left + 8, yb - 7, f"{budget_label} {format_bytes(fit.memory_bytes)}", 12,
                      "start", BUDGET_COLOR, "bold"))
    body.append('<polyline fill="none" stroke="#4e79a7" stroke-width="2" points="'
                + " ".join(f"{X(b):.1f},{Y(p):.1f}" for b, p in pts) + '"/>')
    for b, p in pts:
        fill = "#4e79a7" if p <= fit.memory_bytes else BUDGET_COLOR
        body.append(f'<circle cx="{X(b):.1f}" cy="{Y(p):.1f}" r="4" fill="{fill}"/>')
    marks = []
    if fit.batch:
        marks.append((fit.batch, fit.peak_bytes, "#111111",
                      f"largest that fits: {fit.batch:,} ({format_bytes(fit.peak_bytes)})"))
        marks.append((fit.recommended_batch, fit.recommended_peak_bytes, "#2a7a2a",
                      f"80% of it: {fit.recommended_batch:,} "
                      f"({format_bytes(fit.recommended_peak_bytes)})"))
    label_y = top + plot_h - 12
    for b, p, color, text in marks:  # the lines first: no line crosses a label
        x = X(b)
        body.append(f'<line x1="{x:.2f}" y1="{Y(p):.2f}" x2="{x:.2f}" y2="{top + plot_h}" '
                    f'stroke="{color}" stroke-width="1.5" stroke-dasharray="4,3"/>')
        body.append(f'<circle cx="{x:.1f}" cy="{Y(p):.1f}" r="6" fill="none" stroke="{color}" '
                    'stroke-width="2"/>')
    for b, p, color, text in marks:
        x = X(b)
        w = text_width(text, 12)
        anchor, lx = ("end", x - 6) if x + 6 + w > left + plot_w else ("start", x + 6)
        if anchor == "end" and lx - w < left:
            anchor, lx = "start", left + 4
        body.append(f'<rect x="{(lx - w if anchor == "end" else lx) - 2:.1f}" y="{label_y - 13}" '
                    f'width="{w + 4:.1f}" height="17" fill="white" opacity="0.9"/>')
        body.append(_text(lx, label_y, text, 12, anchor, color, "bold"))
        label_y -= 22
    ly = top + plot_h + 66
    notes = [("#4e79a7", "● an analysed batch (its predicted peak); lines join them"),
             (BUDGET_COLOR, "● over the budget"),
             ("#2a7a2a", "80%: the seed tutorials' advice, a margin under the largest batch")]
    if not fit.batch:
        notes.insert(0, (BUDGET_COLOR, f"not even batch 1 fits: it needs "
                                       f"{format_bytes(fit.peak_bytes)}"))
    if beyond:
        notes.append(("#444444", "off the chart: " + ", ".join(
            f"batch {b:,} ({format_bytes(p)})" for b, p in beyond)))
    for i, (color, text) in enumerate(notes):
        body.append(_text(left, ly + 20 * i, text, 12, color=color))
    return _svg(width, int(ly + 20 * len(notes) + 10), body, f"{model}: fit")


def write_svg(path, svg: str) -> None:
    """Write a chart; a path that cannot be written is one sentence (RenderError)."""
    from graphcalc.outputs import write_atomic

    write_atomic(path, svg)
