"""Per-rank memory of data-parallel training: DDP, ZeRO-1/2 and FSDP over `world_size` ranks.

Every rank runs the same step on its own part of the batch, so the per-rank timeline is the
single-device replay at the per-rank batch (`replay.replay`), with what the strategy changes
applied where it happens, and the peak taken over that adjusted timeline:

- ddp (`DistributedDataParallel`, its defaults): the reducer's flat gradient buckets, one copy of
  every trainable gradient (`gradient_as_bucket_view=False`), made when the model is wrapped and
  held for good.
- fsdp (FSDP2 `fully_shard` on every unit of `shard_units`, then on the root), as
  torch/distributed/fsdp/_fully_shard runs it: each parameter sharded on dim 0, padded to a
  multiple of the world size; optimizer state and its temporaries follow the shards. Forward:
  a unit's flat all-gather output and its unsharded parameters from the unit's first op; the
  parameters freed after its last op (the root's kept until the end of backward), the flat
  output freed when the next unit's all-gather lands. Backward: a unit's parameters unsharded
  again at its first backward op, with the next unit's all-gather prefetched; at its last op its
  full gradients are copied into a flat reduce-scatter input (held until the next unit's
  reduce-scatter), freed (the unit's last one only after the reduce-scatter: foreach_reduce's
  loop variable holds it), and replaced by the sharded gradients, which live until zero_grad. A
  unit whose inputs need no gradient, and the root, reduce in FSDP's final callback, inside
  `loss.backward()`. On the CPU (gloo): the reduce-scatter copies its whole input for the
  collective (freed as it returns; in some real runs a few ops later, a race), and the device mesh's rank map, 4 B per rank, is
  held from wrapping on; under cuda NCCL's scratch and the rank map (host memory) are not
  device memory.
- zero1 / zero2: parameters replicated; optimizer state (and its temporaries) sharded; zero1
  keeps DDP's buckets, zero2 reduce-scatters each unit's gradients where FSDP does. These two are
  modelled from the same rules, not measured against a real engine here.

The bytes each rank sends per step (ring collectives, N ranks, P parameter and G gradient bytes,
padded where FSDP pads): ddp all-reduce 2(N-1)/N G; zero1/zero2 reduce-scatter (N-1)/N G and
all-gather of the updated parameters (N-1)/N P; fsdp all-gather in forward (N-1)/N P, again in
backward for every unit but the root, and reduce-scatter (N-1)/N G.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, replace

from torch import nn

from graphcalc.passes import timeline
from graphcalc.passes.timeline import kernels as timeline_kernels, step_timeline
from graphcalc.options import Options
from graphcalc.fake.replay import LOSS, OPTIMIZER, SETUP, Replay
from graphcalc.report import ROOT, Breakdown, Memory

DDP_BUCKET_MIB = 25  # DistributedDataParallel's bucket_cap_mb default
ROOT_UNIT = ""


@dataclass(frozen=True)
class Communication:
    """Bytes each rank sends per step, by collective."""

    all_reduce_bytes: int = 0
    all_gather_bytes: int = 0
    reduce_scatter_bytes: int = 0

    @property
    def total_bytes(self) -> int:
        return self.all_reduce_bytes + self.all_gather_bytes + self.reduce_scatter_bytes


@dataclass(frozen=True)
class Distributed:
    world_size: int
    shard: str
    per_rank_batch: int
    global_batch: int
    units: int  # FSDP units (the root not counted)
    bucket_bytes: int  # DDP / ZeRO-1 gradient buckets
    communication: Communication

    def to_dict(self) -> dict:
        return {"world_size": self.world_size, "shard": self.shard,
                "per_rank_batch": self.per_rank_batch, "global_batch": self.global_batch,
                "units": self.units, "bucket_bytes": self.bucket_bytes,
                "communicated_bytes_per_step": self.communication.total_bytes,
                "all_reduce_bytes": self.communication.all_reduce_bytes,
                "all_gather_bytes": self.communication.all_gather_bytes,
                "reduce_scatter_bytes": self.communication.reduce_scatter_bytes}


def shard_units(model: nn.Module) -> list[str]:
    """The modules FSDP shards one by one (each gets its own `fully_shard`, then the root): the
    repeated blocks, as users wrap transformer layers. A unit is a child of an nn.ModuleList or
    nn.Sequential whose type occurs at least twice among its siblings and that holds parameters;
    the outermost such modules are taken. Parameters outside every unit stay with the root."""
    units: list[str] = []

    def visit(path: str, mod: nn.Module) -> None:
        if isinstance(mod, (nn.ModuleList, nn.Sequential)):
            kinds = Counter(type(c) for c in mod.children())
            for name, child in mod.named_children():
                p = f"{path}.{name}" if path else name
                if kinds[type(child)] >= 2 and any(True for _ in child.parameters()):
                    units.append(p)
                else:
                    visit(p, child)
            return
        for name, child in mod.named_children():
            visit(f"{path}.{name}" if path else name, child)

    visit("", model)
    return units


def _unit_of(path: str, units: list[str]) -> str:
    best = ROOT_UNIT
    for u in units:
        if (path == u or path.startswith(u + ".")) and len(u) > len(best):
            best = u
    return best


@dataclass
class _Param:
    name: str
    unit: str
    full_bytes: int
    shard_bytes: int  # rank 0's: ceil(dim0 / N) rows, as FSDP pads
    trainable: bool

    def padded_full(self, n: int) -> int:
        return self.shard_bytes * n


def _params(model: nn.Module, rp: Replay, units: list[str], n: int) -> dict[int, _Param]:
    """Distinct parameters by the id of their fake tensor."""
    out: dict[int, _Param] = {}
    owners = dict(model.named_parameters(remove_duplicate=False))
    for name, f in rp.fake_params.items():
        if name not in owners or id(f) in out:
            continue
        rows = f.shape[0] if f.dim() else 1
        per_row = f.numel() // rows if rows else 0
        shard = math.ceil(rows / n) * per_row * f.element_size()
        out[id(f)] = _Param(name, _unit_of(name.rpartition(".")[0], units),
                            f.numel() * f.element_size(), shard, f.requires_grad)
    return out


@dataclass
class _Plan:
    """Edits of the single-device event list: new sizes per serial, events dropped, inserts."""

    size: dict[int, int]
    dropped: set[int]  # event indices
    inserts: dict[int, list[tuple[int, str]]]  # event index -> [(delta, category)], before it

    def add(self, pos: int, delta: int, category: str) -> None:
        if delta:
            self.inserts.setdefault(pos, []).append((delta, category))


class _Steps:
    """Where each step's phases and each unit's forward and backward start and end."""

    def __init__(self, rp: Replay, units: list[str]):
        rec = rp.recorder
        self.n_events = len(rec.tracker.events)
        self.starts = rp.step_events
        marks = rec.marks
        self.phase_start: dict[tuple[int, str], int] = {}
        self.model_backward: dict[int, int] = {}
        self.model_backward_end: dict[int, int] = {}  # end of the last backward op of a module
        # (step, phase, unit) -> [first event, end event)
        self.span: dict[tuple[int, str, str], list[int]] = {}
        self.order: dict[tuple[int, str], list[str]] = defaultdict(list)
        for i, m in enumerate(marks):
            end = marks[i + 1].event if i + 1 < len(marks) else self.n_events
            self.phase_start.setdefault((m.step, m.phase), m.event)
            if m.phase == "backward" and m.owner not in (LOSS, SETUP):
                self.model_backward.setdefault(m.step, m.event)
                self.model_backward_end[m.step] = end
            if m.phase not in ("forward", "backward") or m.owner in (LOSS, SETUP, OPTIMIZER):
                continue
            unit = _unit_of(m.owner, units)
            if unit == ROOT_UNIT:
                continue
            key = (m.step, m.phase, unit)
            if key not in self.span:
                self.span[key] = [m.event, end]
                self.order[(m.step, m.phase)].append(unit)
            else:
                self.span[key][1] = end

    def step_of(self, event: int) -> int:
        s = 0
        while s + 1 < len(self.starts) and self.starts[s + 1] <= event:
            s += 1
        return s


def _fsdp_edits(plan: _Plan, params: dict[int, _Param], grad_unit: dict[int, tuple[str, int]],
                events, alloc: dict[int, int], steps: _Steps, n: int, shard_params: bool,
                gloo: bool = False) -> None:
    """FSDP's (shard_params) or ZeRO-2's gradient and parameter traffic, step by step. `gloo`:
    the collectives run on gloo (CPU), whose reduce-scatter holds a copy of its whole input.
    `grad_unit`: each gradient serial's unit and its parameter's place in the model's order."""
    full = defaultdict(int)  # unit -> padded unsharded parameter bytes
    shard = defaultdict(int)  # unit -> sharded gradient bytes
    for p in params.values():
        full[p.unit] += p.padded_full(n)
        if p.trainable:
            shard[p.unit] += p.shard_bytes
    rs = {u: shard[u] * n for u in shard}
    # Where each gradient serial's allocation and free fall.
    alloc_at, free_at = {}, {}
    for i, (serial, delta) in enumerate(events):
        if serial in grad_unit:
            if delta > 0:
                alloc_at.setdefault(serial, i)
            else:
                free_at[serial] = i
    grads_by = defaultdict(list)  # (step, unit) -> [serial]
    for serial, (unit, _) in grad_unit.items():
        if serial in alloc_at:
            grads_by[(steps.step_of(alloc_at[serial]), unit)].append(serial)

    for step in range(len(steps.starts) - 1):
        fwd = steps.phase_start.get((step, "forward"))
        loss = steps.phase_start.get((step, "loss"))
        opt = steps.phase_start.get((step, "optimizer"))
        if fwd is None or loss is None or opt is None:
            continue
        order = steps.order[(step, "forward")]
        has_root = full.get(ROOT_UNIT, 0) > 0
        if shard_params:
            held = None  # the flat all-gather output kept until the next unit's lands
            if has_root:
                plan.add(fwd, full[ROOT_UNIT], "parameters")
                plan.add(fwd, full[ROOT_UNIT], "parameters")
                held = ROOT_UNIT
            for u in order:
                first, end = steps.span[(step, "forward", u)]
                plan.add(first, full[u], "parameters")
                if held is not None:
                    plan.add(first, -full[held], "parameters")
                plan.add(first, full[u], "parameters")
                held = u
                plan.add(end, -full[u], "parameters")
            if held is not None:
                plan.add(loss, -full[held], "parameters")
        # Backward, in the order the units' backward ran.
        back = sorted(steps.order[(step, "backward")],
                      key=lambda u: steps.span[(step, "backward", u)][0])
        prefetched = set()
        if shard_params and order:
            plan.add(steps.model_backward.get(step, loss), full[order[-1]], "parameters")
            prefetched.add(order[-1])
        rs_held = None

        def reduce(at: int, u: str) -> None:
            nonlocal rs_held
            if rs_held is not None:
                plan.add(at, -rs[rs_held], "gradients")
            plan.add(at, rs.get(u, 0), "gradients")
            grads = sorted(grads_by.get((step, u), ()), key=lambda s: grad_unit[s][1])
            for serial in grads:
                if serial in free_at and free_at[serial] > at:
                    plan.dropped.add(free_at[serial])
            # foreach_reduce frees the full gradients once copied in, all but the last
            # parameter's: its loop over them (`for ..., unsharded_grad in ...`) leaves that one
            # bound until it returns, after the reduce-scatter.
            for serial in grads[:-1]:
                plan.add(at, -alloc[serial], "gradients")
            plan.add(at, shard.get(u, 0), "gradients")
            if gloo:  # ProcessGroupGloo's _reduce_scatter_base_: a copy of the input, freed
                # once this rank's chunk is copied out
                plan.add(at, rs.get(u, 0), "gradients")
                plan.add(at, -rs.get(u, 0), "gradients")
            for serial in grads[-1:]:
                plan.add(at, -alloc[serial], "gradients")
            if step + 1 < len(steps.starts) - 1:
                plan.add(steps.starts[step + 1], -shard.get(u, 0), "gradients")
            rs_held = u if rs.get(u) else rs_held

        # A unit's post-backward hook fires when the gradient of its inputs is computed; when
        # nothing runs after it in backward, its inputs needed none (the batch), and FSDP's
        # final callback runs it after the backward, with the root's.
        last_backward = steps.phase_start.get((step, "optimizer"), 0)
        deferred = []
        for u in back:
            first, end = steps.span[(step, "backward", u)]
            if shard_params:
                if u not in prefetched:
                    plan.add(first, full[u], "parameters")
                plan.add(first, full[u], "parameters")
                plan.add(first, -full[u], "parameters")
                i = order.index(u) if u in order else -1
                if i > 0:
                    plan.add(first, full[order[i - 1]], "parameters")
                    prefetched.add(order[i - 1])
            if end >= last_backward and steps.model_backward_end.get(step, end) <= end:
                deferred.append(u)
                continue
            if shard_params:
                plan.add(end, -full[u], "parameters")
            reduce(end, u)
        # The final callback runs inside `loss.backward()`, before it returns and drops the
        # gradient it seeded the backward with (ones_like(loss), the backward's first tensor).
        final = opt
        seed_serial, seed_delta = events[steps.phase_start.get((step, "backward"), opt)]
        if seed_delta > 0:
            for i in range(steps.model_backward.get(step, opt), opt):
                if events[i] == (seed_serial, -seed_delta):
                    final = i
                    break
        for u in ([ROOT_UNIT] if full.get(ROOT_UNIT) or shard.get(ROOT_UNIT) else []) + deferred:
            if shard_params:
                plan.add(final, -full[u], "parameters")
            reduce(final, u)
        if rs_held is not None:
            plan.add(final, -rs[rs_held], "gradients")


def _apply(events, plan: _Plan, cats: dict[int, str]):
    """The adjusted timeline: (levels after each original event, breakdown at the peak, peak)."""
    level = 0
    peak = -1
    peak_at = 0
    by_cat = Counter()
    at_peak = Counter()
    levels = []
    for i in range(len(events) + 1):
        for delta, cat in plan.inserts.get(i, ()):
            level += delta
            by_cat[cat] += delta
            if level > peak:
                peak, peak_at, at_peak = level, i, by_cat.copy()
        if i == len(events):
            break
        serial, delta = events[i]
        if i not in plan.dropped:
            size = plan.size.get(serial)
            d = delta if size is None else (size if delta > 0 else -size)
            level += d
            by_cat[cats.get(serial, "activations")] += d
            if level > peak:
                peak, peak_at, at_peak = level, i + 1, by_cat.copy()
        levels.append(level)
    return levels, peak, peak_at, at_peak


def _stack(rp: Replay, events, plan: _Plan, cats: dict[int, str], levels, peak_at: int,
           at_peak: Counter):
    """The per-rank stacked timeline (graphcalc.passes.timeline): the changes of `_apply`, by category;
    the peak's point from `_apply` itself (a peak between two events, at an insert)."""
    start, end = rp.step_events[0], rp.step_events[-1]

    def changes():
        for i in range(end):
            for delta, cat in plan.inserts.get(i, ()):
                yield i + 1, cat, delta
            if i not in plan.dropped:
                serial, delta = events[i]
                size = plan.size.get(serial)
                yield (i + 1, cats.get(serial, "activations"),
                       delta if size is None else (size if delta > 0 else -size))

    keep = timeline.chosen_events(levels, start, end, peak_at, timeline.MAX_POINTS)
    where = timeline.Where(rp.recorder.marks)
    override = {peak_at: at_peak} if start <= peak_at <= end else None
    return timeline.stack(changes(), keep, where.at, override), where.spans(start, end)


def rank_memory(model: nn.Module, rp: Replay, options: Options) -> tuple[Memory, Distributed]:
    """The per-rank memory of `options.shard` over `options.world_size` ranks, from the replay of
    one rank's step (the replay ran at the per-rank batch, `options.batch`)."""
    n, shard = options.world_size, options.shard
    rec = rp.recorder
    events = rec.tracker.events
    units = shard_units(model) if shard in ("fsdp", "zero2") else []
    params = _params(model, rp, units, n)
    cats = rp.categories()
    plan = _Plan(size={}, dropped=set(), inserts={})
    alloc = {}
    for s, d in events:
        if d > 0:
            alloc.setdefault(s, d)
    serial_of = {id(f): rec.tracker.serial(f) for f in rp.fake_params.values()}
    by_name = {p.name: p for p in params.values()}
    full_name = {name: by_name.get(name) for name in rp.fake_params}
    for name, f in rp.fake_params.items():  # tied names point at the first owner
        if full_name[name] is None and id(f) in params:
            full_name[name] = params[id(f)]
    trainable_full = sum(p.full_bytes for p in params.values() if p.trainable)
    trainable_shard = sum(p.shard_bytes for p in params.values() if p.trainable)

    if shard == "fsdp":  # the parameters live sharded
        for key, p in params.items():
            if serial_of.get(key) is not None:
                plan.size[serial_of[key]] = p.shard_bytes
    if shard in ("zero1", "zero2", "fsdp"):  # optimizer state follows its parameter's shard
        for serial, name in rp.param_of_serial.items():
            p = full_name.get(name)
            if serial in rp.state_serials and p is not None:
                nbytes = alloc.get(serial, 0)
                if nbytes == p.full_bytes:
                    plan.size[serial] = p.shard_bytes
        ratio = trainable_shard / trainable_full if trainable_full else 1.0
        for serial, c in cats.items():
            if c == "optimizer_temporaries":
                nbytes = alloc.get(serial, 0)
                if nbytes:
                    plan.size[serial] = math.ceil(nbytes * ratio)
    bucket = 0
    if shard in ("ddp", "zero1"):
        bucket = trainable_full
        plan.add(0, bucket, "gradients")
    if shard in ("zero2", "fsdp"):
        place = {id(p): i for i, p in enumerate(params.values())}
        grad_unit = {s: (full_name[name].unit, place[id(full_name[name])])
                     for s, name in rp.param_of_serial.items()
                     if s in rp.grad_serials and full_name.get(name) is not None}
        _fsdp_edits(plan, params, grad_unit, events, alloc, _Steps(rp, units), n,
                    shard_params=shard == "fsdp", gloo=options.device == "cpu")
    if shard == "fsdp" and options.device == "cpu":
        # init_device_mesh's rank map, torch.arange(N, dtype=torch.int), always on the CPU: held
        # for good by the mesh every sharded parameter refers to (host memory under cuda).
        plan.add(0, 4 * n, "parameters")

    levels, peak, peak_at, at_peak = _apply(events, plan, cats)
    memory = _memory(rp, options, levels, peak, peak_at, at_peak, plan, alloc)
    points, phases = _stack(rp, events, plan, cats, levels, peak_at, at_peak)
    memory = replace(memory, timeline_stack=points, timeline_phases=phases)
    return memory, Distributed(n, shard, options.batch, options.batch * n,
                               len(units) if shard == "fsdp" else 0, bucket,
                               communication(params, n, shard))


def _device_total(rp: Replay, options: Options, memory: Memory) -> int:
    """What one rank's GPU holds (graphcalc.gpu.gpu_fit): the simulated reserved peak plus the CUDA
    context on one device, the peak allocated plus the context for a sharded rank."""
    from graphcalc.gpu.gpu_fit import gpu_fit, gpu_fit_unsimulated

    if options.distributed:
        return gpu_fit_unsimulated(memory.peak_bytes, options).device_total_bytes
    return gpu_fit(rp.recorder.tracker.events, rp.recorder.marks, options).device_total_bytes


def communication(params: dict[int, _Param], n: int, shard: str) -> Communication:
    """Bytes one rank sends per step (ring algorithms)."""
    frac = (n - 1) / n
    grads = sum(p.full_bytes for p in params.values() if p.trainable)
    if shard == "ddp":
        return Communication(all_reduce_bytes=round(2 * frac * grads))
    if shard in ("zero1", "zero2"):
        return Communication(all_gather_bytes=round(frac * grads),
                             reduce_scatter_bytes=round(frac * grads))
    if shard == "fsdp":
        padded = sum(p.padded_full(n) for p in params.values())
        non_root = sum(p.padded_full(n) for p in params.values() if p.unit != ROOT_UNIT)
        padded_grads = sum(p.padded_full(n) for p in params.values() if p.trainable)
        return Communication(all_gather_bytes=round(frac * (padded + non_root)),
                             reduce_scatter_bytes=round(frac * padded_grads))
    return Communication()


def _memory(rp: Replay, options: Options, levels, peak, peak_at, at_peak, plan: _Plan,
            alloc: dict[int, int]) -> Memory:
    rec = rp.recorder
    starts = rp.step_events
    step_peaks, timeline = step_timeline(rp, levels)
    # Where the adjusted peak falls: the (step, phase, layer) stretch that holds its event.
    marks = [m for m in rec.marks if m.phase in ("forward", "loss", "backward", "optimizer", "end")]
    where = (0, "setup", SETUP)
    for i, m in enumerate(marks):
        end = marks[i + 1].event if i + 1 < len(marks) else starts[-1]
        if m.event < peak_at <= max(end, m.event + 1):
            where = (m.step, m.phase, m.owner)
    step, phase, owner = where
    breakdown = Breakdown.of(at_peak)
    state_bytes = rp.state_bytes
    if plan.size:
        state_bytes = sum(plan.size.get(s, alloc.get(s, 0))
                          for s in rp.state_serials if s in rec.tracker._bytes_of)
    return Memory(
        device=options.device, peak_bytes=peak, inference_peak_bytes=rp.inference_peak,
        breakdown=breakdown, first_step_peak_bytes=step_peaks[0] if step_peaks else 0,
        steady_step_peak_bytes=step_peaks[-1] if step_peaks else 0,
        peak_step=step + 1, peak_phase=phase,
        peak_layer=(ROOT if owner == "" else owner) if owner != OPTIMIZER else OPTIMIZER,
        optimizer_state_bytes=state_bytes,
        optimizer_temporary_bytes=at_peak["optimizer_temporaries"], timeline=tuple(timeline),
        **timeline_kernels(rp, options))


# --- plan: a table over world sizes and strategies ------------------------------------------------

STRATEGIES = ("ddp", "zero1", "zero2", "fsdp")
WORLD_SIZES = (1, 2, 4, 8, 16, 32, 64)


@dataclass(frozen=True)
class PlanRow:
    world_size: int
    shard: str
    per_rank_batch: int
    peak_bytes: int
    fits: bool
    communicated_bytes: int  # sent by each rank per step
    # with a GPU named (options.gpu): what the rank's device holds, reserved (simulated on one
    # device; peak allocated for a sharded rank) plus the CUDA context; `fits` judges this
    device_total_bytes: int | None = None


def plan(model: nn.Module, make_inputs, options: Options, *, global_batch: int, memory_bytes: int,
         world_sizes=None, shards=STRATEGIES, loss_fn=None, on_replay=None,
         lines: bool = True) -> tuple[PlanRow, ...]:
    """Per-rank peak of every (world size, strategy) for `global_batch`, every strategy computed
    from the replay of one rank's step at its per-rank batch. Over three per-rank batches, three
    replays (the smallest, the largest and one between; a fourth, the next smallest, where the
    smallest runs other kernels, as batch 1 may) and the others read off their lines
    (graphcalc.fake.lines) where every storage's bytes are affine in the batch; else (or with
    `lines=False`) one replay each. `on_replay(batch, k, n)` is called before each replay (k of
    at most n), and with k=0 for a batch read off the lines. Default world sizes: those of
    WORLD_SIZES that divide the batch; a given world size that does not divide it is an error."""
    from dataclasses import replace

    from graphcalc.passes.timeline import step_memory as _memory
    from graphcalc.errors import UsageError
    from graphcalc.fake.lines import Lines
    from graphcalc.fake.replay import replay

    if global_batch < 1:
        raise UsageError(f"batch must be at least 1, got {global_batch}")
    if memory_bytes <= 0:
        raise UsageError(f"memory budget must be positive, got {memory_bytes}")
    if world_sizes is None:
        world_sizes = [w for w in WORLD_SIZES if global_batch % w == 0]
    for w in world_sizes:
        if w < 1:
            raise UsageError(f"world size must be at least 1, got {w}")
        if global_batch % w:
            raise UsageError(f"batch {global_batch} does not split evenly over {w} ranks")
    for s in shards:
        if s not in STRATEGIES:
            raise UsageError(f"unknown shard '{s}': choose among {', '.join(STRATEGIES)}")
    gpu = options.gpu is not None or options.gpu_memory is not None
    batches = sorted({global_batch // w for w in world_sizes})
    replays: dict = {}

    def run(batch: int, k: int, n: int):
        if on_replay is not None:
            on_replay(batch, k, n)
        replays[batch] = replay(model, make_inputs, loss_fn,
                                replace(options, batch=batch, world_size=1, shard="none"))

    if lines and len(batches) > 3:
        mid, hi = batches[len(batches) // 2], batches[-1]
        for k, b in enumerate((batches[0], mid, hi), 1):
            run(b, k, len(batches))
        found = Lines.of(replays)
        if found is None and len(batches) > 4 and batches[1] < mid:
            # the smallest batch may run other kernels than the rest (at batch 1 a linear layer
            # is a matrix-vector product): the lines from the next one up
            run(batches[1], 4, len(batches))
            found = Lines.of({b: replays[b] for b in (batches[1], mid, hi)})
        for b in batches:
            if b in replays:
                continue
            if found is not None and b > found.lo:
                if on_replay is not None:
                    on_replay(b, 0, len(batches))
                replays[b] = found.at(b)
            else:  # not affine in the batch: one replay each
                run(b, len(replays) + 1, len(batches))
    for b in batches:
        if b not in replays:
            run(b, len(replays) + 1, len(batches))
    rows = []
    for w in sorted(set(world_sizes)):
        one = replace(options, batch=global_batch // w, world_size=1, shard="none")
        rp = replays[one.batch]
        if w == 1:
            memory = _memory(rp, one)
            total = _device_total(rp, one, memory) if gpu else None
            rows.append(PlanRow(1, "none", one.batch, memory.peak_bytes,
                                (total if gpu else memory.peak_bytes) <= memory_bytes, 0, total))
            continue
        for s in shards:
            sharded = replace(one, world_size=w, shard=s)
            memory, dist = rank_memory(model, rp, sharded)
            total = _device_total(rp, sharded, memory) if gpu else None
            rows.append(PlanRow(w, s, one.batch, memory.peak_bytes,
                                (total if gpu else memory.peak_bytes) <= memory_bytes,
                                dist.communication.total_bytes, total))
    return tuple(rows)
