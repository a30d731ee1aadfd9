"""What checkpointing some modules would do to the step's peak, read off the step graph of the
step without it: the estimate `--checkpoint auto` (graphcalc.commands.recompute) chooses with,
before a replay confirms the choice.

Under `torch.utils.checkpoint` (use_reentrant=False) a module's forward keeps none of the
tensors its ops saved for backward; its backward first runs its forward again, which makes them
again, and they die where they died without checkpointing. So, on the graph's events: a storage
that an op inside the module made in the forward, that no op outside the module uses in the
forward (it is not what the module returns, or a view of it), and that lived until the module's
backward, dies when the module's forward ends and is made again when its backward begins. What
this leaves out, and the replay then measures: the recompute's own temporaries (freed as it
goes), a recompute that stops early, and on a GPU the caching allocator's rounding and segments.
The recomputed FLOPs are the module's forward FLOPs up to the last op that makes a tensor one
of its ops saved (torch stops the recompute there), counted in the first step as the report
counts FLOPs.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch.fx as fx

from graphcalc.fake.stepgraph import StepGraph
from graphcalc.passes.graphpasses import _meta

USERS_IN_FORWARD = ("forward", "loss")


def _within(module: str | None, path: str) -> bool:
    return module is not None and (module == path or module.startswith(path + "."))


@dataclass(frozen=True)
class Estimate:
    peak_bytes: int  # the allocated peak, estimated (the tracker's count, as memory_walk's)
    reserved_bytes: int | None  # on a CUDA step: the simulated caching allocator's peak
    recompute_flops: int  # forward FLOPs re-run in backward (the first step's)


class CheckpointEstimator:
    """One step graph, read once; `estimate(paths)` for any set of module paths."""

    def __init__(self, sg: StepGraph, steps: int):
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
        self.base = self.estimate(())

    def events(self, extra: dict[int, list[tuple[int, int, int]]]):
        """(serial, delta) of the step in order, as tracking.LiveStorages records them, with
        `extra` ones: node index -> [(when, serial, delta)], `when` 0 before the node's own
        events, 1 after them."""
        yield from ((serial, b) for serial, b in self.sg.start_storages)
        for i, n in enumerate(self.nodes):
            more = extra.get(i, ())
            yield from ((serial, d) for when, serial, d in more if when == 0)
            yield from _meta(n, "allocated")
            yield from _meta(n, "freed")
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
                        extra.setdefault(end, []).append((1, serial, -delta))
                        extra.setdefault(begin, []).append((0, serial, delta))
        return Estimate(*self._peaks(extra), flops)

    def _recompute_flops(self, fwd: list[int], path: str) -> int:
        """The forward FLOPs the recompute re-runs (counted in the first step, as the report
        counts them): it stops once every tensor the module's ops saved is made again, so it
        runs the module's ops up to the last that makes one (an op that saves only what it was
        given, a Linear's input and weight, stops it before its own kernel runs)."""
        inside = set(fwd)
        made = [self.made_at.get(serial) for i in fwd
                for saver, serial, _ in self.nodes[i].meta.get("saves", ())
                if _within(saver, path)]
        last = max((i for i in made if i in inside), default=-1)
        return sum(_meta(self.nodes[i], "flops") or 0 for i in fwd if i <= last)
