"""What checkpointing some modules would do to the step's peak, read off the step graph of the
step without it: the estimate `--checkpoint auto` (graphcalc.commands.recompute) chooses with,
before a replay confirms the choice.

Under `torch.utils.checkpoint` (use_reentrant=False) a module's forward keeps none of the
tensors its ops saved for backward; its backward first runs its forward again, which makes them
again, and they die where they died without checkpointing. So, on the graph's events: a storage
that an op inside the module made in the forward, that no op outside the module uses in the
forward (it is not what the module returns, or a view of it), and that lived until the module's
backward, dies when the module's forward ends and is made again when its backward begins.
What the module's forward was given (made before it) the checkpoint keeps for the recompute:
where it died before the module's backward (a module whose first op is a cast, under autocast,
saved only the cast), it now dies as that backward ends. Under autocast a cast of a trainable
parameter is cached until autocast exits, so checkpointed it dies there, not at the module's
end (where the graph shows the step's casts were cached: in the second step of a CUDA replay
with SGD's foreach update they are not). On a GPU the recompute runs in the backward's
thread: its first matmul through cuBLASLt takes that thread's cuBLASLt workspace where the
backward took none, and the simulated caching allocator runs over the events so changed.
What this leaves out, and the replay then measures: the recompute's own temporaries (freed as
it goes).
The recomputed FLOPs are the module's forward FLOPs up to the last op that makes a tensor one
of its ops saved (torch stops the recompute there), counted in the first step as the report
counts FLOPs.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.fx as fx

from graphcalc.fake.stepgraph import StepGraph, TensorValue
from graphcalc.gpu import cuda
from graphcalc.passes.graphpasses import _meta

USERS_IN_FORWARD = ("forward", "loss")


KEEP = -1  # an `extra` event's `when`: the node does not free the storage
_TO_COPY = torch.ops.aten._to_copy.default
_LT_OPS = {torch.ops.aten.addmm, torch.ops.aten._addmm_activation}
_LT_SERIAL = -1  # the recompute's cuBLASLt workspace (the tracker's serials are positive)


def _meta_tensor(v):
    """A meta tensor of a node's recorded value (shape, dtype, strides), for the checks that
    read a tensor; anything else as it is."""
    if isinstance(v, TensorValue) and v.stride:
        return torch.empty_strided(v.shape, v.stride, dtype=v.dtype, device="meta")
    return v


def _nodes_in(args) -> list[fx.Node]:
    out: list[fx.Node] = []
    for a in args:
        if isinstance(a, fx.Node):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            out += _nodes_in(a)
    return out


def _storage_of(node) -> tuple[int, int] | None:
    """(serial, bytes) of the storage a node's tensor is in: the op that made it, through the
    views, in-place ops and getitems that made none; None for a placeholder's or where the op
    made several and the part is not known."""
    for _ in range(256):
        if not isinstance(node, fx.Node) or node.op != "call_function":
            return None
        made = _meta(node, "allocated")
        if made:
            return tuple(made[0]) if len(made) == 1 else None
        if node.target is operator.getitem:
            base = node.args[0]
            made = _meta(base, "allocated") if isinstance(base, fx.Node) else ()
            val = base.meta.get("val") if isinstance(base, fx.Node) else None
            if made and isinstance(val, tuple) and len(made) == len(val):
                positions = base.meta.get("positions", tuple(range(len(val))))
                return tuple(made[positions.index(node.args[1])]) \
                    if node.args[1] in positions else None
            if made:
                return None
            node = base
            continue
        node = node.args[0] if node.args else None
    return None


def _parameter_of(node) -> str | None:
    """The placeholder name (`input`) a node's tensor is, through in-place ops, views and
    getitems of the optimizer's lists; None for a tensor an op made."""
    for _ in range(256):
        if not isinstance(node, fx.Node):
            return None
        if node.op == "placeholder":
            return node.meta.get("input")
        if node.op != "call_function":
            return None
        if node.target is operator.getitem:
            base = node.args[0]
            listed = base.args[0] if isinstance(base, fx.Node) and base.args else None
            node = listed[node.args[1]] if isinstance(listed, (list, tuple)) \
                and isinstance(node.args[1], int) and node.args[1] < len(listed) else base
            continue
        if _meta(node, "allocated"):
            return None
        node = node.args[0] if node.args else None
    return None


def _within(module: str | None, path: str) -> bool:
    return module is not None and (module == path or module.startswith(path + "."))


@dataclass(frozen=True)
class Estimate:
    peak_bytes: int  # the allocated peak, estimated (the tracker's count, as memory_walk's)
    reserved_bytes: int | None  # on a CUDA step: the simulated caching allocator's peak
    recompute_flops: int  # forward FLOPs re-run in backward (the first step's)


class CheckpointEstimator:
    """One step graph, read once; `estimate(paths)` for any set of module paths."""

    def __init__(self, sg: StepGraph, steps: int, autocast_cached: frozenset[str] = frozenset()):
        """`autocast_cached`: under autocast, the names of the trainable parameters (the
        placeholders' `input`): autocast keeps its casts of them until it exits."""
        self.sg, self.steps = sg, steps
        self.nodes = [n for n in sg.graph.nodes if n.op != "output"]
        self.freed_at: dict[int, int] = {}
        self.made_at: dict[int, int] = {}
        # (step, phase) -> (index, module) of its nodes, in order; no getitem (made where used)
        self.stretches: dict[tuple, list[tuple[int, str | None]]] = {}
        for i, n in enumerate(self.nodes):
            if n.target is not operator.getitem:
                self.stretches.setdefault((n.meta.get("step"), n.meta.get("phase")), []).append(
                    (i, n.meta.get("module")))
            for serial, _ in _meta(n, "allocated"):
                self.made_at.setdefault(serial, i)
            for serial, _ in _meta(n, "freed"):
                self.freed_at[serial] = i
        # Under autocast, a cast of a trainable parameter is cached until autocast exits (the
        # forward and loss of each step, `graphcalc.fake.step.training_step`): checkpointed, it
        # dies there, not where its module's forward ends.
        self.cached: set[int] = set()
        self.autocast_exit: dict[int, int] = {}
        if autocast_cached:
            for (step, phase), stretch in self.stretches.items():
                if phase in USERS_IN_FORWARD and stretch:
                    self.autocast_exit[step] = max(self.autocast_exit.get(step, -1),
                                                   stretch[-1][0])
            casts: dict[int, list[int]] = {}
            for i, n in enumerate(self.nodes):
                if n.target is _TO_COPY and n.args and n.meta.get("phase") == "forward" \
                        and _parameter_of(n.args[0]) in autocast_cached:
                    casts.setdefault(n.meta.get("step"), []).append(i)
            # Whether autocast cached a step's casts shows in the graph: its casts that nothing
            # saved (a bias's) die as autocast exits where it did, at their last use where not
            # (the second step of a CUDA replay with SGD's foreach update); with none such,
            # autocast's rule.
            for step, found in casts.items():
                exit_ = self.autocast_exit.get(step, -1)
                transient = [self.freed_at.get(serial) for i in found
                             for serial, _ in _meta(self.nodes[i], "allocated")
                             if self.freed_at.get(serial, exit_ + 1) <= exit_]
                if all(died == exit_ for died in transient):
                    self.cached.update(found)
        self._lt_memo: dict[int, bool] = {}
        self.base = self.estimate(())

    def events(self, extra: dict[int, list[tuple[int, int, int]]]):
        """(serial, delta) of the step in order, as tracking.LiveStorages records them, with
        `extra` ones: node index -> [(when, serial, delta)], `when` 0 before the node's own
        events, 1 after them, KEEP: the node's free of that storage left out."""
        yield from ((serial, b) for serial, b in self.sg.start_storages)
        for i, n in enumerate(self.nodes):
            more = extra.get(i, ())
            yield from ((serial, d) for when, serial, d in more if when == 0)
            yield from _meta(n, "allocated")
            kept = {serial for when, serial, _ in more if when == KEEP}
            yield from (e for e in _meta(n, "freed") if e[0] not in kept)
            yield from ((serial, d) for when, serial, d in more if when == 1)

    def _peaks(self, extra) -> tuple[int, int | None]:
        """(the allocated peak, and on a CUDA step the simulated caching allocator's reserved
        peak) of the events with `extra`."""
        level = peak = 0
        for _, delta in self.events(extra):
            level += delta
            peak = max(peak, level)
        reserved = None
        if self.sg.device == "cuda":
            from graphcalc.gpu.allocator import simulate

            reserved = simulate(self.events(extra)).peak_reserved_bytes
        return peak, reserved

    def _escapes(self, node: fx.Node, path: str, memo: dict) -> bool:
        """The module hands this node's tensor (or a view of it, made by no allocation) to an op
        outside it in the forward or the loss."""
        if node in memo:
            return memo[node]
        memo[node] = False
        out = False
        for u in node.users:
            if u.op == "output":
                continue
            phase = u.meta.get("phase")
            if phase not in USERS_IN_FORWARD:
                continue
            if not _within(u.meta.get("module"), path) or phase != "forward":
                out = True
            elif not _meta(u, "allocated") and self._escapes(u, path, memo):
                out = True
            if out:
                break
        memo[node] = out
        return out

    def _leaving(self, node: fx.Node, path: str, memo: dict) -> set[int]:
        """The storages of the node's outputs that leave the module in the forward: of a
        multi-output op (a layer norm's output, mean and rstd), part by part where each part is
        one storage the op made, else all of them when any part leaves."""
        made = [serial for serial, _ in _meta(node, "allocated")]
        val = node.meta.get("val")
        users = [u for u in node.users if u.op != "output"]
        if isinstance(val, tuple) and len(made) == len(val) \
                and all(u.target is operator.getitem for u in users):
            positions = node.meta.get("positions", tuple(range(len(val))))
            return {made[positions.index(u.args[1])] for u in users
                    if self._escapes(u, path, memo)}
        return set(made) if self._escapes(node, path, memo) else set()

    def estimate(self, paths) -> Estimate:
        extra: dict[int, list[tuple[int, int, int]]] = {}
        held: dict[int, tuple[int, int, int]] = {}  # an input: serial -> (died, bytes, until)
        recomputing: list[tuple[int, list[int]]] = []  # step 1: (backward begins, nodes re-run)
        flops = 0
        for path in paths:
            for step in range(1, self.steps + 1):
                fwd, bwd = ([i for i, module in self.stretches.get((step, phase), ())
                             if _within(module, path)] for phase in ("forward", "backward"))
                if not fwd:
                    continue
                if step == 1:
                    flops += self._recompute_flops(fwd, path)
                if not bwd:
                    continue
                end, begin, memo = fwd[-1], bwd[0], {}
                if step == 1:
                    recomputing.append((begin, self._recomputed(fwd, path)))
                for i in fwd:
                    node = self.nodes[i]
                    made = _meta(node, "allocated")
                    if not made:
                        continue
                    leaving = self._leaving(node, path, memo)
                    for serial, delta in made:
                        if serial in leaving:
                            continue
                        died = self.freed_at.get(serial)
                        if died is None or died < begin or self.made_at.get(serial) != i:
                            continue  # lives on, or dies before the module's backward
                        dies = self.autocast_exit.get(step, end) if i in self.cached else end
                        extra.setdefault(dies, []).append((1, serial, -delta))
                        extra.setdefault(begin, []).append((0, serial, delta))
                # What the module's forward was given, the checkpoint keeps for the recompute:
                # an input that died before the module's backward now dies as it ends.
                for serial, delta in self._inputs(fwd):
                    died = self.freed_at.get(serial)
                    if died is not None and fwd[0] <= died < begin:
                        until = max(bwd[-1], held.get(serial, (0, 0, -1))[2])
                        held[serial] = (died, delta, until)
        for serial, (died, delta, until) in held.items():
            extra.setdefault(died, []).append((KEEP, serial, 0))
            extra.setdefault(until, []).append((1, serial, -delta))
        self._lt_workspace(recomputing, extra)
        return Estimate(*self._peaks(extra), flops)

    def _inputs(self, fwd: list[int]) -> set[tuple[int, int]]:
        """(serial, bytes) of the storages the module's ops read in its forward that were made
        before it began (the batch and parameters aside: they live through the step)."""
        out = set()
        for i in fwd:
            for a in _nodes_in(self.nodes[i].args):
                found = _storage_of(a)
                if found is not None and self.made_at.get(found[0], fwd[0]) < fwd[0]:
                    out.add(found)
        return out

    def _recomputed(self, fwd: list[int], path: str) -> list[int]:
        """The forward's nodes the recompute re-runs: it stops once every tensor the module's
        ops saved is made again, so it runs the module's ops up to the last that makes one (an
        op that saves only what it was given, a Linear's input and weight, stops it before its
        own kernel runs)."""
        inside = set(fwd)
        made = [self.made_at.get(serial) for i in fwd
                for saver, serial, _ in self.nodes[i].meta.get("saves", ())
                if _within(saver, path)]
        last = max((i for i in made if i in inside), default=-1)
        return [i for i in fwd if i <= last]

    def _recompute_flops(self, fwd: list[int], path: str) -> int:
        """The forward FLOPs the recompute re-runs, counted in the first step as the report
        counts them."""
        return sum(_meta(self.nodes[i], "flops") or 0 for i in self._recomputed(fwd, path))

    def _lt_workspace(self, recomputing: list[tuple[int, list[int]]], extra) -> None:
        """On a CUDA step: the backward's first cuBLASLt matmul takes that thread's cuBLASLt
        workspace, kept for good (graphcalc.fake.replay, graphcalc.gpu.cuda.uses_cublaslt). A
        recompute runs in backward: where it runs one and the step's backward had none, the
        workspace is taken as the first such recompute begins."""
        if self.sg.device != "cuda" or any(self._is_lt(i) for i, _ in self.stretches.get(
                (1, "backward"), ())):
            return
        begins = [begin for begin, nodes in recomputing if any(self._is_lt(i) for i in nodes)]
        if begins:
            extra.setdefault(min(begins), []).append((0, _LT_SERIAL, cuda.CUBLASLT_WORKSPACE_BYTES))

    def _is_lt(self, i: int) -> bool:
        n = self.nodes[i]
        if getattr(n.target, "_overloadpacket", None) not in _LT_OPS:
            return False
        if i not in self._lt_memo:
            args = tuple(_meta_tensor(a.meta.get("val")) if isinstance(a, fx.Node) else a
                         for a in n.args)
            self._lt_memo[i] = cuda.uses_cublaslt(n.target, args, dict(n.kwargs))
        return self._lt_memo[i]
