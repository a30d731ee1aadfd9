"""FLOP formulas, one registry keyed by ATen op.

Every ATen op the step runs falls in exactly one of three cases (the fvcore rule):
counted by a formula registered here, declared zero on purpose (`zero.py`, with the reason), or
unknown, which the report lists with a count and never folds into the totals as zero.

Convention: FlopCounterMode's. A multiply-accumulate is 2 FLOPs; only matrix products,
convolutions and attention carry FLOPs; a bias add is not a FLOP but is tallied separately as
`bias_adds` so that torchinfo's bias-inclusive "mult-adds" can be shown beside MACs.

May import: the shared modules only (graphcalc.errors, units, ...): the formulas are pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

__all__ = ["OpCost", "register", "classify", "op_name", "cost_of"]


@dataclass(frozen=True)
class OpCost:
    macs: int
    bias_adds: int = 0

    @property
    def flops(self) -> int:
        return 2 * self.macs


_FORMULAS: dict[str, Callable[..., OpCost]] = {}


_NAMES: dict = {}


def op_name(func) -> str:
    """'aten::mm' for aten.mm.default: formulas are keyed by the op, not its overload."""
    name = _NAMES.get(func)
    if name is None:
        packet = getattr(func, "_overloadpacket", None)
        name = _NAMES[func] = packet._qualified_op_name if packet is not None else str(func)
    return name


def register(*names: str):
    """Register one formula for the ops named (e.g. 'aten::mm'); a second registration is a bug."""

    def deco(fn: Callable[..., OpCost]):
        for name in names:
            if name in _FORMULAS:
                raise RuntimeError(f"FLOP formula for {name} registered twice")
            _FORMULAS[name] = fn
        return fn

    return deco


def classify(func) -> str:
    """'counted', 'zero' or 'unknown'."""
    from .zero import is_declared_zero

    name = op_name(func)
    if name in _FORMULAS:
        return "counted"
    if is_declared_zero(func, name):
        return "zero"
    return "unknown"


def cost_of(func, args, kwargs, out) -> OpCost | None:
    """The cost of one op call; OpCost(0) for declared-zero ops, None for unknown ones."""
    name = op_name(func)
    formula = _FORMULAS.get(name)
    if formula is not None:
        return formula(*args, out=out, **kwargs)
    from .zero import is_declared_zero

    if is_declared_zero(func, name):
        return OpCost(0)
    return None


def _shape(t) -> tuple[int, ...]:
    return tuple(int(s) for s in t.shape)


# Importing the formula modules fills the registry.
from . import attention, conv, matmul, rnn  # noqa: E402,F401
