"""Renderers of a Report: terminal table, Markdown, CSV, JSON. They read the report, nothing else."""

from __future__ import annotations

import csv
import io
import re

from graphcalc.gpu.gpus import CUDA_CONTEXT_RANGE
from graphcalc.report import Report, register_renderer
from graphcalc.units import format_bytes, format_count


LOSS_MEAN_NOTE = ("Loss: the mean of the model's output (the model file defines no "
                  "loss(output, *inputs) and the output has no .loss): the backward is that "
                  "loss's; define loss() for your own")


def breakdown_parts(b) -> list[tuple[str, int]]:
    """The parts of the peak, each once, adding up to it: the optimizer's step() temporaries and
    a CUDA step's workspaces only where there are some."""
    parts = [("parameters", b.parameters), ("gradients", b.gradients),
             ("optimizer state", b.optimizer_state)]
    if b.optimizer_temporaries:
        parts.append(("step() temporaries", b.optimizer_temporaries))
    parts += [("batch", b.batch), ("activations", b.activations)]
    if b.workspace:
        parts.append(("workspaces", b.workspace))
    return parts


def inference_text(m) -> str:
    """The inference peak, or why there is none (the forward fails under no_grad)."""
    if m.inference_peak_bytes is None:
        return f"none: the forward fails under no_grad ({m.inference_error})"
    return format_bytes(m.inference_peak_bytes)

COLUMNS = ("Layer", "Type", "Output shape", "Params", "FLOPs fwd", "FLOPs bwd", "Output", "Saved")


def _shape(layer, shapes=None) -> str:
    shapes = [list(s) for s in (layer.output_shapes if shapes is None else shapes)]
    if not shapes:
        return "--"
    text = ", ".join(str(s) for s in shapes[:2])
    return text + (f" +{len(shapes) - 2}" if len(shapes) > 2 else "")


def _columns(report: Report) -> tuple[str, ...]:
    """The table's columns; "Calls" only when some module runs more than once (its shape is the
    first call's, its bytes and FLOPs are all calls')."""
    if any(layer.calls > 1 for layer in report.layers):
        return COLUMNS[:3] + ("Calls",) + COLUMNS[3:]
    return COLUMNS


def _cells(layer, indent: bool, calls: bool = False) -> list[str]:
    name = ("  " * layer.depth if indent else "") + layer.name
    params = format_count(layer.params) if layer.params else "--"
    if layer.shared:
        params += " (shared)"
    count = [f"x{layer.calls}" if layer.calls > 1 else ""] if calls else []
    return [name, layer.type, _shape(layer), *count, params,
            format_count(layer.flops_forward) if layer.flops_forward else "--",
            format_count(layer.flops_backward) if layer.flops_backward else "--",
            format_bytes(layer.activation_bytes) if layer.activation_bytes else "--",
            format_bytes(layer.saved_bytes) if layer.saved_bytes else "--"]


def _total_cells(report: Report, calls: bool = False) -> list[str]:
    """The Total row of the table and of the Markdown: the report's totals, not a column sum."""
    t = report.totals
    return ["Total", "", "", *([""] if calls else []), format_count(t.params),
            format_count(t.flops_forward),
            format_count(t.flops_backward), "", format_bytes(t.saved_bytes)]


def summary_lines(report: Report) -> list[str]:
    t, m = report.totals, report.memory
    b = m.breakdown
    cfg = report.config
    amp = f", autocast {cfg['amp']}" if cfg.get("amp") else ""
    # what the figures lack makes them lower bounds: said where they are printed, not only below
    low_flops = "AT LEAST (incomplete, see below) " if report.unknown_ops or report.opaque else ""
    low_peak = ("AT LEAST (incomplete, see below) "
                if report.opaque or report.memory_gaps or m.step_growth_bytes else "")
    lines = [
        f"Model {report.model}: batch {cfg['batch']}, {cfg['dtype']}{amp}, optimizer "
        f"{cfg['optimizer']}, memory for {m.device}"
        + (f" on the {report.gpu.gpu}" if report.gpu is not None and report.gpu.gpu else ""),
        *([LOSS_MEAN_NOTE] if report.loss == "output.mean()" else []),
        f"Params: {t.params:,} ({format_count(t.params)}); trainable {t.trainable_params:,}, "
        f"frozen {t.frozen_params:,}; buffers {t.buffers:,} elements",
        f"FLOPs (2 per multiply-accumulate, as FlopCounterMode): {low_flops}forward "
        f"{format_count(t.flops_forward)}, backward {format_count(t.flops_backward)}, step "
        f"{format_count(t.flops)}",
        f"MACs forward: {t.macs_forward:,}; with one add per bias element (torchinfo's mult-adds): "
        f"{t.mult_adds_with_bias:,}",
        f"Peak training memory: {low_peak}{format_bytes(m.peak_bytes)} ({m.peak_bytes:,} B), step "
        f"{m.peak_step} {m.peak_phase} at {m.peak_layer}; first step {format_bytes(m.first_step_peak_bytes)}"
        + (f", steady {format_bytes(m.steady_step_peak_bytes)}" if not m.step_growth_bytes
           else f", last step {format_bytes(m.steady_step_peak_bytes)}, NOT STEADY: "
                f"{format_bytes(m.step_growth_bytes)} more held after every step"),
        "  " + " | ".join(f"{name} {format_bytes(value)}" for name, value in breakdown_parts(b)),
        f"  optimizer state once created: {format_bytes(m.optimizer_state_bytes)}; "
        f"step() temporaries at the peak: {format_bytes(m.optimizer_temporary_bytes)}",
        "Inference peak (no_grad, eval): " + inference_text(m),
    ]
    lines.append("Timeline (peak per phase): " + timeline_text(report))
    d = report.distributed
    if d is not None:
        c = d.communication
        lines.append(
            f"Per rank of {d.world_size} ({d.shard}): batch {d.per_rank_batch} of {d.global_batch}"
            f"{f', {d.units} FSDP units + root' if d.units else ''}"
            f"{f', gradient buckets {format_bytes(d.bucket_bytes)}' if d.bucket_bytes else ''}; "
            f"sent per step {format_bytes(c.total_bytes)} (all-reduce "
            f"{format_bytes(c.all_reduce_bytes)}, all-gather {format_bytes(c.all_gather_bytes)}, "
            f"reduce-scatter {format_bytes(c.reduce_scatter_bytes)})")
    if m.device == "cuda":
        lines.append(f"Replayed as on CUDA for {m.cuda_target}: 512-byte blocks, foreach "
                     "optimizer kernels, CUDA's autocast lists"
                     + (f", attention by {', '.join(m.attention_kernels)}"
                        if m.attention_kernels else "")
                     + (f", workspaces (cuBLAS, cuBLASLt, cuDNN) "
                        f"{format_bytes(m.breakdown.workspace)} in the peak"
                        if m.breakdown.workspace else "")
                     + "; not in the peak: the CUDA context (see the GPU lines; "
                       f"{CUDA_CONTEXT_RANGE[0] // 10**6}-{CUDA_CONTEXT_RANGE[1] // 10**6} MB "
                       "seen by driver and GPU)")
    if report.gpu is not None:
        lines.extend(gpu_lines(report.gpu))
    if report.cpu_budget is not None:
        lines.append(cpu_budget_line(report))
    if report.checkpointed or report.recompute:
        lines.append(checkpoint_line(report))
    if report.routers:
        where = ", ".join(f"{path} (top-{k} of {e})" for path, e, k in report.routers)
        lines.append(f"Mixture of experts: {report.routing} routing assumed at {where}"
                     + (_ROUTING_GLOSS[report.routing] if report.routing in _ROUTING_GLOSS
                        else "; no expert gets more than "
                             f"{report.routing.partition(':')[2]} x tokens x k / experts")
                     + "".join(f"; peak {format_bytes(peak)} {r}"
                               for r, peak in report.routing_peaks))
    if report.value_reads:
        reads = "; ".join(f"{_READ_GLOSS.get(op, 'the values of a tensor')} in "
                          f"{', '.join(where)} [{op.removeprefix('aten::')}]"
                          for op, where in report.value_reads)
        lines.append("Follows the example inputs' values: the step reads them, as the real one "
                     f"would, so the figures are for these values: {reads}")
    if report.unknown_ops:
        ops = ", ".join(f"{op} x{n}" for op, n in report.unknown_ops)
        lines.append(f"INCOMPLETE: no FLOP formula for {ops}; FLOP totals are a lower bound")
    for path, why in report.opaque:
        lines.append(f"INCOMPLETE: layer '{path}' {why}: it was analysed around, not through "
                     "(its output and gradients are counted, its own FLOPs and activations are not)")
    for where, why in report.memory_gaps:
        lines.append(f"INCOMPLETE: peak memory of {where}: {why}; the peak is a lower bound")
    return lines


def gpu_lines(g) -> list[str]:
    """The GPU section: which card, what the caching allocator reserves, the verdict."""
    given = g.capacity_source == "--memory"
    if g.gpu is not None:
        head = f"GPU {g.gpu} ({g.compute_capability}): {format_bytes(g.capacity_bytes)}" \
               + (" (--memory)" if given else " as the driver reports it")
    elif g.capacity_bytes is not None:
        head = f"GPU with {format_bytes(g.capacity_bytes)} (--memory)"
    else:
        head = "GPU not named (--gpu NAME or --memory SIZE for a verdict)"
    lines = [head + (f"; {g.note}" if g.note else "")]
    lines += [f"  NOTE: {c}" for c in g.caveats]
    lo, hi = g.cuda_context_range
    context = (f"CUDA context {format_bytes(g.cuda_context_bytes)} assumed (seen "
               f"{lo // 10**6}-{hi // 10**6} MB by GPU, driver and kernels loaded)")
    if g.reserved_simulated:
        how = ", expandable segments" if g.expandable_segments else ""
        segments = f"{g.segments_at_peak} segment{'' if g.segments_at_peak == 1 else 's'}"
        where = f"step {g.reserved_peak_step} {g.reserved_peak_phase} at {g.reserved_peak_layer}"
        lines.append(f"  caching allocator (simulated{how}): peak reserved "
                     f"{format_bytes(g.peak_reserved_bytes)} in {segments} ({where}); peak "
                     f"allocated {format_bytes(g.peak_allocated_bytes)} counted as whole blocks")
    else:
        lines.append("  caching allocator not simulated per rank: the device total is the rank's "
                     "peak allocated plus the context, a lower bound")
    lines.append(f"  device total {format_bytes(g.device_total_bytes)} = "
                 f"{'reserved' if g.reserved_simulated else 'allocated'} + {context}")
    if g.cublas_workspace_bytes is not None:
        lines.append(f"  cuBLAS workspace on this card: {format_bytes(g.cublas_workspace_bytes)} "
                     "(informational: the replay allocates it in the step, not added again)")
    if g.estimated_bytes:
        lines.append(f"  ESTIMATE: cuDNN's convolution workspaces (largest "
                     f"{format_bytes(g.estimated_bytes)}) are estimated from measurements on an "
                     f"H200 with cuDNN 9.19, not derived")
    if g.estimate_margin_bytes and g.capacity_bytes is not None:
        lines.append(f"  margin: the verdict keeps {format_bytes(g.estimate_margin_bytes)} free "
                     "beyond the device total (2% of the allocated peak, the replay's largest "
                     "error against real GPU runs, or a third of an estimated cuDNN workspace "
                     "live at the peak, whichever is more)")
    if g.fits is True:
        lines.append(f"  Verdict: fits, headroom {format_bytes(g.headroom_bytes)}"
                     + (" (only after the allocator returns its cached segments to the driver)"
                        if g.released_cache else ""))
    elif g.fits is False:
        lines.append(f"  Verdict: DOES NOT FIT: {format_bytes(g.short_by_bytes)} short"
                     + (" even after the allocator returns its cached segments"
                        if g.reserved_simulated else "")
                     + f"; {format_bytes(g.device_total_bytes)} needed without a limit")
    return lines


def cpu_budget_line(report: Report) -> str:
    """The CPU verdict: the step's peak against --memory (with --device cpu)."""
    v = report.cpu_budget
    head = f"CPU budget {format_bytes(v['budget_bytes'])} (--memory, --device cpu): "
    low = "" if report.complete else " (the peak is a lower bound: see INCOMPLETE below)"
    if v["fits"]:
        return head + f"Verdict: fits, headroom {format_bytes(v['headroom_bytes'])}" + low
    return head + (f"Verdict: DOES NOT FIT: {format_bytes(-v['headroom_bytes'])} short; "
                   f"{format_bytes(v['peak_bytes'])} needed") + low


def checkpoint_line(report: Report) -> str:
    """What activation checkpointing re-runs: the patterns, and the forward FLOPs recomputed in
    backward (counted in backward, as FlopCounterMode counts them)."""
    t = report.totals
    which = report.config.get("checkpoint") or []
    where = (f"{', '.join(which)} ({len(report.checkpointed)} module"
             f"{'s' if len(report.checkpointed) != 1 else ''})" if report.checkpointed
             else "the model's own checkpoint calls")
    without = t.flops - t.flops_recompute
    share = (f": +{100 * t.flops_recompute / without:.1f}% over the step without it"
             if without else "")
    return (f"Activation checkpointing of {where}: forward re-run in backward "
            f"{format_count(t.flops_recompute)} FLOPs (counted in backward{share})")


_ROUTING_GLOSS = {"balanced": "; each expert gets tokens x k / experts",
                  "worst": "; every token goes to the first k experts"}
# what the step does with the values it reads, in a user's words (the ATen op follows in [])
_READ_GLOSS = {
    "aten::_pack_padded_sequence": "the sequence lengths size the packed batch",
    "aten::_local_scalar_dense": "a tensor value read into Python (.item(), `if mask.all():`)",
    "aten::_ctc_loss": "the longest label sizes CTC's table",
    "aten::nonzero": "the positions of nonzero values size a tensor (nonzero, masked indexing)",
    "aten::masked_select": "a mask's count sizes a tensor (masked_select, x[mask])",
    "aten::unique": "the number of distinct values sizes a tensor",
    "aten::repeat_interleave": "repeat counts size a tensor",
    "aten::rand": ("a random number drawn to branch on (LayerDrop), taken at the top of its "
                   "range: no layer is skipped, the figures are the most a step takes"),
}


def timeline_text(report: Report) -> str:
    peaks: dict[tuple[int, str], int] = {}
    for p in report.memory.timeline:
        key = (p.step, p.phase)
        peaks[key] = max(peaks.get(key, 0), p.peak_bytes)
    parts = []
    for (step, phase), peak in peaks.items():
        parts.append(f"{'step ' + str(step) + ' ' if phase == 'forward' else ''}{phase} "
                     f"{format_bytes(peak)}")
    return " > ".join(parts)


def terminal_width(stream=None) -> int | None:
    """The width to fit: $COLUMNS when set, else the terminal's when `stream` (stdout) is one;
    None for a file or a pipe, which get the table's natural width."""
    import os
    import shutil
    import sys

    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    stream = sys.stdout if stream is None else stream
    try:
        if stream.isatty():
            return shutil.get_terminal_size().columns
    except (AttributeError, ValueError, OSError):  # a closed or detached stream
        pass
    return None


# --columns names -> the table's column headers (torchinfo lets its users choose columns too)
COLUMN_NAMES = {"layer": "Layer", "type": "Type", "input": "Input shape",
                "shape": "Output shape", "calls": "Calls",
                "params": "Params", "flops_fwd": "FLOPs fwd", "flops_bwd": "FLOPs bwd",
                "output": "Output", "saved": "Saved"}
# what goes first when the table is wider than the terminal: the least asked-for figures first;
# Layer, Output shape and Params always stay
DROP_ORDER = ("Saved", "FLOPs bwd", "Calls", "Type", "Output", "FLOPs fwd")
# a figure and its unit are one word: wrapping never puts them on two lines
_UNIT = re.compile(r"(?<=\d) (?=(?:B|KiB|MiB|GiB|TiB|PiB|ms|s|min|tokens|steps?|x|%)\b)")
_GLUE = "\u2060"  # word joiner: not whitespace to textwrap, taken out again after wrapping


_TEXT_COLUMNS = ("Layer", "Type", "Input shape", "Output shape")
_SHAPE_COLUMNS = ("Input shape", "Output shape")


def parse_columns(text: str) -> tuple[str, ...]:
    """`--columns params,flops_fwd,shape` -> headers, Layer first; unknown names refused."""
    from graphcalc.errors import UsageError

    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in COLUMN_NAMES]
    if unknown or not names:
        raise UsageError(f"--columns: unknown column {', '.join(map(repr, unknown)) or '(none)'}"
                         f"; choose from {', '.join(COLUMN_NAMES)}")
    return ("Layer",) + tuple(dict.fromkeys(COLUMN_NAMES[n] for n in names if n != "layer"))



def wrap_line(line: str, width: int) -> str:
    """`line` wrapped between words at `width`, a figure never parted from its unit."""
    import textwrap

    glued = _UNIT.sub(_GLUE, line)
    indent = line[:len(line) - len(line.lstrip())]
    return textwrap.fill(glued, width, subsequent_indent=indent + "  ", break_long_words=False,
                         break_on_hyphens=False).replace(_GLUE, " ")


def _compact_shape(text: str) -> str:
    """'[2, 64, 112, 112]' -> '2x64x112x112': the same shape in fewer columns."""
    return re.sub(r"\[([^\]]*)\]", lambda m: "x".join(d.strip() for d in m.group(1).split(","))
                  if m.group(1).strip() else "scalar", text)


def to_table(report: Report, width: int | None = None,
             columns: tuple[str, ...] | None = None) -> str:
    """The terminal table, fitted to `width` columns (None: as wide as its content needs).

    `columns`: the headers to show (`parse_columns`); by default all. Wider than `width`, the
    shapes are written compactly (2x64x56x56) and then the least asked-for columns are left
    out (DROP_ORDER), which a line under the table names; a layer name is never broken. The
    summary lines wrap between words at `width`, never between a figure and its unit."""
    from rich.console import Console
    from rich.markup import escape
    from rich.measure import Measurement
    from rich.table import Table

    every = _columns(report)
    calls = len(every) > len(COLUMNS)
    rows = [_cells(layer, indent=True, calls=calls) for layer in report.layers]
    total = _total_cells(report, calls)
    if columns is not None and "Input shape" in columns:  # torchinfo's input-size column
        every = every[:2] + ("Input shape",) + every[2:]
        rows = [r[:2] + [_shape(layer, layer.input_shapes)] + r[2:]
                for r, layer in zip(rows, report.layers)]
        total = total[:2] + [""] + total[2:]
    chosen = [c for c in every if columns is None or c in columns]
    measure = Console(file=io.StringIO(), width=10_000, no_color=True, highlight=False)

    def build(shown: list[str], compact: bool) -> Table:
        table = Table(show_lines=False, header_style="bold")
        index = [every.index(c) for c in shown]
        for c in shown:
            table.add_column(c, justify="left" if c in _TEXT_COLUMNS else "right",
                             no_wrap=True)
        for cells in rows:
            cells = [_compact_shape(x) if compact and every[i] in _SHAPE_COLUMNS else x
                     for i, x in enumerate(cells)]
            table.add_row(*(escape(cells[i]) for i in index))
        table.add_section()
        table.add_row(*(total[i] for i in index))
        return table

    def needed(table) -> int:
        return Measurement.get(measure, measure.options, table).maximum

    shown, compact, dropped = chosen, False, []
    table = build(shown, compact)
    if width is not None and needed(table) > width:
        compact = True
        table = build(shown, compact)
        for c in DROP_ORDER:
            if needed(table) <= width:
                break
            if c in shown:
                shown = [x for x in shown if x != c]
                dropped.append(c)
                table = build(shown, compact)
    buf = io.StringIO()
    lines = summary_lines(report)
    # what the figures are for (the model, batch, precision, optimizer, device or card) first
    head = lines.pop(0)
    buf.write((head if width is None else wrap_line(head, width)) + "\n")
    console = Console(file=buf, width=needed(table), no_color=True, highlight=False)
    console.print(table)
    if dropped:
        lines.insert(0, f"Columns left out to fit {width} characters: {', '.join(dropped)} "
                        "(--columns chooses them)")
    for line in lines:
        buf.write((line if width is None else wrap_line(line, width)) + "\n")
    return buf.getvalue()


def op_table(report: Report) -> str:
    """FLOPs by ATen op, as fvcore's by-operator table: calls, forward, backward and the share
    of the step, the costliest first."""
    total = report.totals.flops or 1
    rows = [("op", "calls", "forward", "backward", "share")]
    for op, calls, fwd, bwd in report.op_flops:
        rows.append((op.removeprefix("aten::"), str(calls), format_count(fwd) if fwd else "--",
                     format_count(bwd) if bwd else "--", f"{(fwd + bwd) / total:.1%}"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = [f"FLOPs by operator (step 1; {format_count(report.totals.flops)} in all):"]
    for r in rows:
        lines.append("  " + r[0].ljust(widths[0]) + "".join(
            "  " + c.rjust(w) for c, w in zip(r[1:], widths[1:])))
    return "\n".join(lines) + "\n"


def to_markdown(report: Report) -> str:
    columns = _columns(report)
    calls = len(columns) > len(COLUMNS)
    rows = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for layer in report.layers:
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in _cells(layer, False, calls))
                    + " |")
    rows.append("| " + " | ".join(f"**{c}**" if c else "" for c in _total_cells(report, calls))
                + " |")
    return "\n".join(rows) + "\n\n" + "\n".join(f"- {line}" for line in summary_lines(report)) + "\n"


def to_html(report: Report) -> str:
    from html import escape

    columns = _columns(report)
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = []
    for layer in report.layers:
        cells = _cells(layer, indent=False, calls=len(columns) > len(COLUMNS))
        pad = f' style="padding-left:{layer.depth}em"' if layer.depth else ""
        body.append(f"<tr><td{pad}>{escape(cells[0])}</td>"
                    + "".join(f"<td>{escape(c)}</td>" for c in cells[1:]) + "</tr>")
    notes = "".join(f"<li>{escape(line)}</li>" for line in summary_lines(report))
    picture = ""
    if report.memory.timeline_stack:  # the memory timeline under the table (graphcalc.output.plots)
        from graphcalc.output.plots import timeline_svg

        picture = f'<div class="graphcalc-timeline">{timeline_svg(report)}</div>'
    return (f'<div class="graphcalc-report"><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table><ul>{notes}</ul>{picture}</div>")


CSV_FIELDS = ("name", "type", "depth", "output_shapes", "output_dtype", "params",
              "trainable_params", "frozen_params", "buffers", "flops_forward", "flops_backward",
              "macs_forward", "bias_adds_forward", "activation_bytes", "saved_bytes", "calls")


def to_csv(report: Report) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    for layer in report.layers:
        row = []
        for f in CSV_FIELDS:
            v = getattr(layer, f)
            row.append(";".join("x".join(map(str, s)) for s in v) if f == "output_shapes" else v)
        w.writerow(row)
    return buf.getvalue()


def render(report: Report, fmt: str, width: int | None = None,
           columns: tuple[str, ...] | None = None) -> str:
    """`fmt` of the report; `width` and `columns` are the terminal table's (`to_table`)."""
    fmt = fmt.lower()
    if fmt == "json":
        return report.to_json() + "\n"
    if fmt == "csv":
        return to_csv(report)
    if fmt == "md":
        return to_markdown(report)
    return to_table(report, width, columns)


FORMATS = ("table", "json", "csv", "md")


register_renderer("text", to_table)
register_renderer("html", to_html)
