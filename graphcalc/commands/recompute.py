"""`--checkpoint auto`: which modules to checkpoint so that the step fits a memory budget, at the
least recompute.

Candidates are the model's modules grouped by pattern (`h.*`, `h.*.mlp`, `lm_head`: a repeated
block's members go together). Each group's effect on the peak and the forward FLOPs it re-runs
are read off the step graph of the step without checkpointing (graphcalc.passes.recompute: its
saved tensors die when its forward ends and are made again when its backward begins; its input
stays saved). The plan is a greedy pick by peak bytes saved per recomputed FLOP (then, if those
cannot reach the budget, by the peak each reaches alone) until the peak fits; then picks no
longer needed are dropped, and of each group only as many members as needed are kept (the
first ones: their saved tensors live longest), found by bisection. The plan is then replayed,
so the peak printed is the step's: two replays in all; where the replay finds the estimate low
(a recompute's temporaries, a GPU's segments), a third for the plan chosen against the budget
less the difference; where that misses too, every candidate and pick is replayed, as the plan
did before it read the graph. `torch.distributed._tools.sac_milp` solves a MILP over per-op
estimates; this plan replays its answer instead.
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
from graphcalc.passes.recompute import CheckpointEstimator

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
    estimated: bool = False  # candidates and picks read off the step graph, the plan replayed

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
    """The step with a set of paths checkpointed, each set replayed once; the step graphs of the
    last few replays kept (the estimates read them)."""

    KEEP_GRAPHS = 3

    def __init__(self, model, make_inputs, options: Options, loss_fn, name,
                 say: Callable[[str], None] | None = None):
        self.model, self.make_inputs, self.loss_fn, self.name = model, make_inputs, loss_fn, name
        self.options = replace(options, checkpoint=())
        self.done: dict[tuple[int, frozenset], Report] = {}
        self.kept: dict[tuple[int, frozenset], Any] = {}  # the last replays themselves
        self.count = 0  # replays run
        self.say = say  # progress: what each replay is (the CLI's spinner)
        self.stage = ""  # what the replays are for, said with each

    def __call__(self, paths, batch: int | None = None) -> Report:
        batch = self.options.batch if batch is None else batch
        key = (batch, frozenset(paths))
        if key not in self.done:
            self._replay(key, paths, batch)
        return self.done[key]

    def _replay(self, key, paths, batch: int) -> None:
        if self.say is not None:
            what = (f"{len(paths)} module{'s' if len(paths) != 1 else ''} checkpointed"
                    if paths else "as the model runs")
            self.say(f"checkpoint auto: replay {self.count + 1}, batch {batch}, {what}"
                     + (f" ({self.stage})" if self.stage else ""))
        kept = []
        opts = replace(self.options, batch=batch, checkpoint=tuple(paths))
        self.done[key] = analyze_module(self.model, self.make_inputs, opts,
                                        loss_fn=self.loss_fn, name=self.name,
                                        on_replay=kept.append)
        self.count += 1
        if kept:
            self.kept[key] = kept[-1]
            while len(self.kept) > self.KEEP_GRAPHS:
                del self.kept[next(iter(self.kept))]

    def with_graph(self, paths, batch: int):
        """(the replay's report, its step graph or None), replaying again for a graph let go."""
        key = (batch, frozenset(paths))
        if key not in self.done or key not in self.kept:
            self._replay(key, paths, batch)
        rp = self.kept.get(key)
        return self.done[key], rp.step_graph if rp is not None else None


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
         replays: _Replays | None = None, estimate: bool = True,
         say: Callable[[str], None] | None = None) -> Plan:
    """The least-recompute set of modules to checkpoint for the step at `options.batch` to fit
    `memory_bytes`; when none fits, the plan of the smallest peak found (`Plan.fits` False).

    The search runs on estimates read off the step graph of the step without checkpointing
    (graphcalc.passes.recompute): one replay for the graph, one to confirm the choice, and, where
    the replay finds the estimate low, a third for the choice made against the budget less the
    difference. Where that misses too, every candidate and pick is replayed (`Plan.estimated`
    False), as the search did before it had the estimates (and as `estimate=False` asks)."""
    replays = replays or _Replays(model, make_inputs, options, loss_fn, name, say)

    def run(paths) -> Report:
        return replays(paths, options.batch)

    start = replays.count
    replays.stage = "the step graph the plan is chosen on"
    base, sg = replays.with_graph((), options.batch)

    def done(paths, report, cands=(), estimated=False) -> Plan:
        patterns = _patterns(paths, cands)
        if patterns:  # the report says what to pass to --checkpoint, which names these paths
            report = replace(report, config={**report.config, "checkpoint": list(patterns)})
        return Plan(memory_bytes, patterns, base, report, tuple(cands),
                    replays.count - start, estimated)

    if base.needed_bytes <= memory_bytes:
        return done((), base)
    if sg is not None and estimate:
        estimated = _estimates(model, options, base, sg)
        budget, tried = memory_bytes, None
        for _ in range(2):
            cands = _candidates(model, base, estimated, every=True)
            paths, guess = _search(cands, base, estimated, budget)
            if paths == tried:
                break
            tried = paths
            replays.stage = "the plan chosen, confirmed" if budget == memory_bytes else \
                "the plan chosen again, the estimate being low"
            report = run(paths)
            if report.needed_bytes <= memory_bytes:
                return done(paths, report, cands, estimated=True)
            if guess > budget:  # nothing reaches the budget: the smallest peak, replayed
                return done(paths, report, cands, estimated=True)
            budget -= report.needed_bytes - guess  # the estimate was low by that much
    # Every candidate, pick and bisection replayed.
    replays.stage = "each candidate and pick replayed"

    def replayed(paths) -> tuple[int, int]:
        r = run(paths)
        return r.needed_bytes, r.totals.flops_recompute - base.totals.flops_recompute

    cands = _candidates(model, base, replayed)
    paths, _ = _search(cands, base, replayed, memory_bytes)
    return done(paths, run(paths), cands)


def _estimates(model: nn.Module, options: Options, base: Report,
               sg) -> Callable[[Any], tuple[int, int]]:
    """paths -> (the step's peak with them checkpointed, the FLOPs they recompute), read off the
    step graph of the step without checkpointing (graphcalc.passes.recompute); on a GPU the
    device total, which moves with the simulated allocator's reserved peak."""
    cached = frozenset(name for name, p in model.named_parameters(remove_duplicate=False)
                       if p.requires_grad) if options.amp else frozenset()
    est = CheckpointEstimator(sg, options.steps, cached)
    gpu = base.gpu is not None

    def figure(e) -> int:
        return e.reserved_bytes if gpu else e.peak_bytes

    shift = base.needed_bytes - figure(est.base)

    def estimated(paths) -> tuple[int, int]:
        e = est.estimate(paths)
        return figure(e) + shift, e.recompute_flops

    return estimated


def _smallest_peak(model, run: _Replays, batch: int) -> tuple[str, ...]:
    """The paths of the smallest-peak plan at `batch` (what `plan` chooses for a budget of 0),
    chosen on the estimates and not replayed: the search for its largest batch replays it."""
    run.stage = "the step graph the plan is chosen on"
    base, sg = run.with_graph((), batch)
    if sg is None:
        return plan(model, run.make_inputs, replace(run.options, batch=batch), 0,
                    loss_fn=run.loss_fn, name=run.name, replays=run).paths
    estimated = _estimates(model, run.options, base, sg)
    return _search(_candidates(model, base, estimated, every=True), base, estimated, 0)[0]


def _candidates(model, base: Report, evaluate, every: bool = False) -> list[Candidate]:
    """The groups that lower the peak alone, with their peak and recompute: every group where
    `evaluate` is an estimate, the CANDIDATES largest savers where it replays."""
    cands = []
    found = groups(model, base)
    for pattern, paths, saved in found if every else found[:CANDIDATES]:
        try:
            peak, recompute = evaluate(paths)
        except GraphcalcError:  # a module that cannot run under checkpoint: not a candidate
            continue
        if peak < base.needed_bytes:
            cands.append(Candidate(pattern, paths, saved, peak, recompute))
    return cands


def _search(cands: list[Candidate], base: Report, evaluate,
            memory_bytes: int) -> tuple[tuple[str, ...], int]:
    """The paths to checkpoint, and their peak by `evaluate` (paths -> (peak, recompute))."""

    def worth(c: Candidate) -> float:  # peak bytes saved per recomputed FLOP
        return (base.needed_bytes - c.peak_bytes) / max(c.recompute_flops, 1)

    def greedy(order) -> tuple[list[Candidate], int]:
        chosen: list[Candidate] = []
        current = base.needed_bytes
        for c in order:
            if any(_nested(c.paths, x.paths) for x in chosen):
                continue
            peak = evaluate(_paths(chosen + [c]))[0]
            if peak >= current:
                continue  # no gain beside the others
            chosen.append(c)
            current = peak
            if peak <= memory_bytes:
                break
        return chosen, current

    # The cheapest savers first; if they cannot reach the budget together (a block's parts
    # save less than the block), the strongest savers first.
    chosen, current = greedy(sorted(cands, key=worth, reverse=True))
    if current > memory_bytes:
        chosen, current = min((chosen, current),
                              greedy(sorted(cands, key=lambda c: c.peak_bytes)),
                              key=lambda cr: (cr[1], -sum(c.saved_bytes for c in cr[0])))
        # (of equal peaks, the one dropping more saved tensors: a GPU's device total moves in
        # whole segments, which an estimate may not see it cross)
    if current > memory_bytes:
        return _paths(chosen), current
    # Drop earlier picks the later ones made unnecessary, the costliest first.
    for c in sorted(chosen[:-1], key=lambda c: -c.recompute_flops):
        trial = [x for x in chosen if x is not c]
        peak = evaluate(_paths(trial))[0]
        if peak <= memory_bytes:
            chosen, current = trial, peak
    # Of each group picked, the costliest first, the fewest members (the first ones: their saved
    # tensors live longest) that still fit beside the others.
    kept = {id(c): len(c.paths) for c in chosen}

    def picked() -> tuple[str, ...]:
        return tuple(p for c in chosen for p in c.paths[:kept[id(c)]])

    for c in sorted(chosen, key=lambda c: -c.recompute_flops):
        lo, hi = 0, len(c.paths)
        while hi - lo > 1:
            kept[id(c)] = mid = (lo + hi) // 2
            if evaluate(picked())[0] <= memory_bytes:
                hi = mid
            else:
                lo = mid
        kept[id(c)] = hi
    return picked(), evaluate(picked())[0]


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
    replays: int = 0  # of the step, in all


def fit_with_plan(model: nn.Module, make_inputs, options: Options, memory_bytes: int, *,
                  batch: int | None = None, loss_fn=None, name=None,
                  say: Callable[[str], None] | None = None) -> PlannedFit:
    """`fit --checkpoint auto`: the plan for `batch` (by default the largest batch any plan
    found reaches: the smallest-peak plan's), and the largest batch with and without it. Each
    largest batch is found as `fit` finds it (graphcalc.commands.verify.fit: three replays
    where the step is affine in the batch), each plan as `plan` chooses it."""
    run = _Replays(model, make_inputs, options, loss_fn, name, say)
    run.stage = "the largest batch without checkpointing"
    without = _fit(run, (), memory_bytes)
    batch_given = batch
    if batch is None:
        widest = _smallest_peak(model, run, max(1, without.batch))
        run.stage = "the largest batch with the plan of the smallest peak"
        reach = _fit(run, widest, memory_bytes)
        batch = max(1, reach.batch)
    chosen = plan(model, make_inputs, replace(options, batch=batch), memory_bytes,
                  loss_fn=loss_fn, name=name, replays=run)
    run.stage = "the largest batch with the plan"
    with_plan = reach if batch_given is None and set(chosen.paths) == set(widest) \
        else _fit(run, chosen.paths, memory_bytes)  # the same plan: the same search
    return PlannedFit(chosen, without, with_plan, run.count)


def _fit(run: _Replays, paths, memory_bytes: int) -> Fit:
    """The largest batch with `paths` checkpointed, reading the replays' lines (as fit_source
    does: the live levels on the CPU, the storages' lines through the allocator on a GPU)."""
    from graphcalc.commands.verify import line_readers

    levels, lines, keep = line_readers(run.options)

    def peak_at(b: int) -> int:
        report = run(paths, b)
        key = (b, frozenset(paths))
        if key in run.kept:
            keep(b, run.kept[key])
        return report.needed_bytes

    return fit(peak_at, memory_bytes, levels, lines)


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
        lines.append(f"  {fitted.replays} replays of the step in all: the largest batch "
                     f"without the plan ({fitted.without.evaluations} analyses) and with it "
                     f"({fitted.with_plan.evaluations}), and the plans")
    if p.candidates:
        lines.append("  candidates, each alone (saved tensors, peak, recompute FLOPs"
                     + ("; peak and recompute read off the step graph" if p.estimated else "")
                     + "):")
        for c in sorted(p.candidates, key=lambda c: c.peak_bytes):
            lines.append(f"    {c.pattern:<24} {format_bytes(c.saved_bytes):>10}  "
                         f"{format_bytes(c.peak_bytes):>10}  {format_count(c.recompute_flops):>8}")
    lines.append(f"  {p.replays} replay{'s' if p.replays != 1 else ''} of the step"
                 + (" (the plan chosen on the first's graph, then replayed)" if p.estimated
                    else " (each candidate and pick replayed)" if p.candidates else ""))
    if p.fits and p.paths:
        lines += ["Apply it (before building the optimizer):", "",
                  *(("    " + line).rstrip() for line in apply_code(p.patterns).splitlines()), ""]
    return "\n".join(lines) + "\n"

