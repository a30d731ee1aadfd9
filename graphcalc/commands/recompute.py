"""`--checkpoint auto`: which modules to checkpoint so that the step fits a memory budget, at the
least recompute.

Candidates are the model's modules grouped by pattern (`h.*`, `h.*.mlp`, `lm_head`: a repeated
block's members go together), largest saved tensors first, from the per-layer Saved column of the
step without checkpointing. Each is then replayed alone: its real effect on the peak and the
forward FLOPs it re-runs, both confirmed rather than estimated (a module's saved tensors are not
all it frees: its input stays saved, and its recompute lives while its backward runs). The plan is
a greedy pick by peak bytes saved per recomputed FLOP (then, if those cannot reach the budget, by
the peak each reaches alone), each step confirmed by a replay of the step with everything picked
so far, until the peak fits; then picks no longer needed are dropped, and of each group only as
many members as needed are kept (the first ones: their saved tensors live longest), found by
bisection. `torch.distributed._tools.sac_milp` solves a MILP over per-op estimates; this plan
replays its answer instead, so the peak it prints is the step's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

from torch import nn

from graphcalc.commands.analyze import analyze_module
from graphcalc.fake.checkpointing import generalize
from graphcalc.errors import GraphcalcError
from graphcalc.options import Options
from graphcalc.report import Report
from graphcalc.commands.verify import Fit, fit

CANDIDATES = 12  # groups replayed one by one (the largest savers)


@dataclass(frozen=True)
class Candidate:
    pattern: str  # `h.*`, or a module path
    paths: tuple[str, ...]
    saved_bytes: int  # what the members' saved tensors weigh (Saved of their layers, summed)
    peak_bytes: int  # the step's peak with this group alone checkpointed (replayed)
    recompute_flops: int  # forward FLOPs it re-runs in backward (replayed)


@dataclass(frozen=True)
class Plan:
    memory_bytes: int
    patterns: tuple[str, ...]  # for --checkpoint (and the code printed)
    base: Report  # the step as the model runs it
    report: Report  # the step with the plan, replayed
    candidates: tuple[Candidate, ...]
    replays: int

    @property
    def fits(self) -> bool:
        return self.report.needed_bytes <= self.memory_bytes

    @property
    def paths(self) -> tuple[str, ...]:
        return self.report.checkpointed

    @property
    def recompute_flops(self) -> int:
        """FLOPs the plan adds to the step (a checkpoint the model calls itself is in base)."""
        return self.report.totals.flops_recompute - self.base.totals.flops_recompute

    @property
    def overhead_percent(self) -> float:
        step = self.base.totals.flops
        return 100.0 * self.recompute_flops / step if step else 0.0


class _Replays:
    """The step with a set of paths checkpointed, each set replayed once."""

    def __init__(self, model, make_inputs, options: Options, loss_fn, name):
        self.model, self.make_inputs, self.loss_fn, self.name = model, make_inputs, loss_fn, name
        self.options = replace(options, checkpoint=())
        self.done: dict[tuple[int, frozenset], Report] = {}

    def __call__(self, paths, batch: int | None = None) -> Report:
        batch = self.options.batch if batch is None else batch
        key = (batch, frozenset(paths))
        if key not in self.done:
            opts = replace(self.options, batch=batch, checkpoint=tuple(paths))
            self.done[key] = analyze_module(self.model, self.make_inputs, opts,
                                            loss_fn=self.loss_fn, name=self.name)
        return self.done[key]


def groups(model: nn.Module, base: Report) -> list[tuple[str, tuple[str, ...], int]]:
    """(pattern, member paths, saved bytes of their subtrees), largest first: every module that
    ran in the step and whose subtree saves something, a repeated block's members together."""
    ran = {layer.name: layer for layer in base.layers if layer.calls > 0}
    members: dict[str, list[str]] = {}
    for path, _ in model.named_modules():
        if path and path in ran:
            members.setdefault(generalize(path), []).append(path)
    out = []
    for pattern, paths in members.items():
        saved = sum(layer.saved_bytes for layer in base.layers
                    if any(layer.name == p or layer.name.startswith(p + ".") for p in paths))
        if saved:
            out.append((pattern, tuple(paths), saved))
    return sorted(out, key=lambda g: -g[2])


def _nested(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    return any(x == y or x.startswith(y + ".") or y.startswith(x + ".") for x in a for y in b)


def plan(model: nn.Module, make_inputs: Callable[[int], Any], options: Options,
         memory_bytes: int, *, loss_fn=None, name: str | None = None,
         replays: _Replays | None = None) -> Plan:
    """The least-recompute set of modules to checkpoint for the step at `options.batch` to fit
    `memory_bytes`; when none fits, the plan of the smallest peak found (`Plan.fits` False)."""
    replays = replays or _Replays(model, make_inputs, options, loss_fn, name)
    start = len(replays.done)

    def run(paths) -> Report:
        return replays(paths, options.batch)

    base = run(())

    def done(paths, report, cands=()) -> Plan:
        patterns = _patterns(paths, cands)
        if patterns:  # the report says what to pass to --checkpoint, which names these paths
            report = replace(report, config={**report.config, "checkpoint": list(patterns)})
        return Plan(memory_bytes, patterns, base, report, tuple(cands),
                    len(replays.done) - start)

    if base.needed_bytes <= memory_bytes:
        return done((), base)
    cands = []
    for pattern, paths, saved in groups(model, base)[:CANDIDATES]:
        try:
            r = run(paths)
        except GraphcalcError:  # a module that cannot run under checkpoint: not a candidate
            continue
        if r.needed_bytes < base.needed_bytes:
            cands.append(Candidate(pattern, paths, saved, r.needed_bytes,
                                   r.totals.flops_recompute - base.totals.flops_recompute))

    def worth(c: Candidate) -> float:  # peak bytes saved per recomputed FLOP
        return (base.needed_bytes - c.peak_bytes) / max(c.recompute_flops, 1)

    def greedy(order) -> tuple[list[Candidate], Report]:
        chosen: list[Candidate] = []
        current = base
        for c in order:
            if any(_nested(c.paths, x.paths) for x in chosen):
                continue
            r = run(_paths(chosen + [c]))
            if r.needed_bytes >= current.needed_bytes:
                continue  # no gain beside the others
            chosen.append(c)
            current = r
            if r.needed_bytes <= memory_bytes:
                break
        return chosen, current

    # The cheapest savers first; if they cannot reach the budget together (a block's parts
    # save less than the block), the strongest savers first.
    chosen, current = greedy(sorted(cands, key=worth, reverse=True))
    if current.needed_bytes > memory_bytes:
        chosen, current = min((chosen, current),
                              greedy(sorted(cands, key=lambda c: c.peak_bytes)),
                              key=lambda cr: cr[1].needed_bytes)
    if current.needed_bytes > memory_bytes:
        return done(_paths(chosen), current, cands)
    # Drop earlier picks the later ones made unnecessary, the costliest first.
    for c in sorted(chosen[:-1], key=lambda c: -c.recompute_flops):
        trial = [x for x in chosen if x is not c]
        r = run(_paths(trial))
        if r.needed_bytes <= memory_bytes:
            chosen, current = trial, r
    # Of each group picked, the costliest first, the fewest members (the first ones: their saved
    # tensors live longest) that still fit beside the others.
    kept = {id(c): len(c.paths) for c in chosen}

    def picked() -> tuple[str, ...]:
        return tuple(p for c in chosen for p in c.paths[:kept[id(c)]])

    for c in sorted(chosen, key=lambda c: -c.recompute_flops):
        lo, hi = 0, len(c.paths)
        while hi - lo > 1:
            kept[id(c)] = mid = (lo + hi) // 2
            r = run(picked())
            if r.needed_bytes <= memory_bytes:
                hi, current = mid, r
            else:
                lo = mid
        kept[id(c)] = hi
    return done(picked(), run(picked()), cands)


def _paths(chosen) -> tuple[str, ...]:
    return tuple(p for c in chosen for p in c.paths)


def _patterns(paths, cands) -> tuple[str, ...]:
    """The paths as --checkpoint patterns: a whole group by its pattern, part of one by path."""
    rest, out = set(paths), []
    for c in cands:
        mine = [p for p in c.paths if p in rest]
        if len(c.paths) > 1 and len(mine) == len(c.paths):
            out.append(c.pattern)
        elif len(mine) > 1 and c.pattern.count("*") == 1:
            out += _runs(c.pattern, mine)
        else:
            continue
        rest -= set(mine)
    return tuple(out) + tuple(p for p in paths if p in rest)


def _runs(pattern: str, paths: list[str]) -> list[str]:
    """Members of a one-star group as patterns: a run of one-digit indices as `h.[0-7].mlp`,
    the others by path."""
    where = pattern.split(".").index("*")
    index = {int(p.split(".")[where]): p for p in paths}
    small = sorted(i for i in index if i < 10)
    out = []
    if len(small) > 1 and small == list(range(small[0], small[-1] + 1)):
        parts = pattern.split(".")
        parts[where] = f"[{small[0]}-{small[-1]}]"
        out.append(".".join(parts))
        index = {i: p for i, p in index.items() if i not in small}
    return out + [index[i] for i in sorted(index)]


@dataclass(frozen=True)
class PlannedFit:
    plan: Plan
    without: Fit  # the largest batch as the model runs
    with_plan: Fit  # the largest batch with the plan


def fit_with_plan(model: nn.Module, make_inputs, options: Options, memory_bytes: int, *,
                  batch: int | None = None, loss_fn=None, name=None) -> PlannedFit:
    """`fit --checkpoint auto`: the plan for `batch` (by default the largest batch any plan
    found reaches: the smallest-peak plan's), and the largest batch with and without it."""
    run = _Replays(model, make_inputs, options, loss_fn, name)
    without = fit(lambda b: run((), b).needed_bytes, memory_bytes)
    if batch is None:
        probe = max(1, without.batch)
        widest = plan(model, make_inputs, replace(options, batch=probe), 0, loss_fn=loss_fn,
                      name=name, replays=run)
        reach = fit(lambda b: run(widest.paths, b).needed_bytes, memory_bytes)
        batch = max(1, reach.batch)
    chosen = plan(model, make_inputs, replace(options, batch=batch), memory_bytes,
                  loss_fn=loss_fn, name=name, replays=run)
    with_plan = fit(lambda b: run(chosen.paths, b).needed_bytes, memory_bytes)
    return PlannedFit(chosen, without, with_plan)


def plan_text(p: Plan, *, fitted: PlannedFit | None = None) -> str:
    """The plan as the command line prints it."""
    from graphcalc.fake.checkpointing import apply_code
    from graphcalc.units import format_bytes, format_count

    cfg = p.base.config
    budget = format_bytes(p.memory_bytes)
    base_peak = p.base.needed_bytes
    lines = []
    if base_peak <= p.memory_bytes and not p.paths:
        lines.append(f"The step fits {budget} at batch {cfg['batch']} without checkpointing "
                     f"(peak {format_bytes(base_peak)}): nothing to recompute.")
    elif not p.fits:
        lines.append(f"Nothing fits {budget} at batch {cfg['batch']}, even with activation "
                     f"checkpointing: the smallest peak reachable is "
                     f"{format_bytes(p.report.needed_bytes)} (checkpointing "
                     f"{', '.join(p.patterns) or 'nothing'}; without: {format_bytes(base_peak)}).")
    else:
        m = p.report.memory
        lines += [
            f"Checkpoint plan for {budget} at batch {cfg['batch']}: "
            f"{' '.join('--checkpoint ' + x for x in p.patterns)} ({len(p.paths)} module"
            f"{'s' if len(p.paths) != 1 else ''})",
            f"  {'device total' if p.report.gpu is not None else 'peak'} "
            f"{format_bytes(base_peak)} -> {format_bytes(p.report.needed_bytes)} "
            f"({p.report.needed_bytes:,} B, replayed with the plan: step {m.peak_step} "
            f"{m.peak_phase} at "
            f"{m.peak_layer})",
            f"  recompute {format_count(p.recompute_flops)} FLOPs of forward re-run in backward: "
            f"+{p.overhead_percent:.1f}% of the step's {format_count(p.base.totals.flops)}",
        ]
    if fitted is not None:
        lines.append(f"  largest batch in {budget}: {fitted.without.batch} without, "
                     f"{fitted.with_plan.batch} with the plan "
                     f"(peak {format_bytes(fitted.with_plan.peak_bytes)})")
    if p.candidates:
        lines.append("  candidates, each alone (saved tensors, peak, recompute FLOPs):")
        for c in sorted(p.candidates, key=lambda c: c.peak_bytes):
            lines.append(f"    {c.pattern:<24} {format_bytes(c.saved_bytes):>10}  "
                         f"{format_bytes(c.peak_bytes):>10}  {format_count(c.recompute_flops):>8}")
    lines.append(f"  {p.replays} replay{'s' if p.replays != 1 else ''} of the step")
    if p.fits and p.paths:
        lines += ["Apply it (before building the optimizer):", "",
                  *(("    " + line).rstrip() for line in apply_code(p.patterns).splitlines()), ""]
    return "\n".join(lines) + "\n"

