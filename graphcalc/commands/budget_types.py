"""A budget's records: the budget as the config gives it, the figures an analysis found, each
check and the outcome (graphcalc.commands.budget reads and checks them).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from graphcalc.options import Options

if sys.version_info >= (3, 11):
    pass
else:  # pragma: no cover - Python 3.10
    pass




CONFIG_NAMES = ("graphcalc.toml", "pyproject.toml")
DEFAULT_BASELINE = "graphcalc-baseline.json"
BASELINE_SCHEMA = 1
OPTION_KEYS = ("model", "name", "batch", "optim", "dtype", "amp", "device", "input", "gpu",
               "allow_incomplete")
LIMIT_KEYS = ("max_params", "max_flops", "max_peak_memory", "max_growth")
FIGURES = ("params", "flops", "peak_memory_bytes")  # the figures limits and growth apply to


@dataclass(frozen=True)
class Budget:
    """One [[budget]] entry, validated."""

    name: str                      # `name`, else the model as written; keys the baseline
    model: str                     # as written in the config
    model_path: Path               # absolute
    model_name: str | None         # the NAME of FILE:NAME
    options: Options
    inputs: tuple[str, ...]
    max_params: int | None
    max_flops: int | None
    max_peak_memory: int | None
    max_growth: float | None       # a fraction: 0.05 for "5%"
    allow_incomplete: bool = False  # judge figures graphcalc marks incomplete as if complete
    config_path: Path | None = None  # where it was read, and its place there (from 1; the worker's
    index: int = 0                   # way back to it)

    @property
    def spec(self) -> str:
        """FILE[:NAME] for the loader, with the absolute path."""
        return str(self.model_path) + (f":{self.model_name}" if self.model_name else "")

    def settings(self) -> dict:
        """What the figures depend on besides the files: recorded in the baseline and cache key."""
        return {**self.options.as_dict(), "input": list(self.inputs)}


@dataclass(frozen=True)
class Config:
    path: Path
    budgets: tuple[Budget, ...]
    baseline_path: Path

    @property
    def folder(self) -> Path:
        return self.path.parent


@dataclass(frozen=True)
class Figures:
    """What a budget is checked on, from one analysis (Report totals and memory)."""

    params: int
    flops_forward: int
    flops_backward: int
    peak_memory_bytes: int  # with a `gpu`: the device total (reserved + CUDA context)
    unknown_ops: tuple[str, ...] = ()
    opaque_layers: tuple[str, ...] = ()  # layers that read tensor values, analysed around
    gpu_required_bytes: int | None = None  # with a `gpu`: what the card must hold (GpuFit)
    gpu_capacity_bytes: int | None = None  # and what it has
    incomplete: tuple[str, ...] = ()  # why graphcalc cannot stand behind the figures (Report)

    @property
    def flops(self) -> int:
        return self.flops_forward + self.flops_backward

    def get(self, figure: str) -> int:
        return getattr(self, figure)

    def to_dict(self) -> dict:
        return {"params": self.params, "flops": self.flops, "flops_forward": self.flops_forward,
                "flops_backward": self.flops_backward,
                "peak_memory_bytes": self.peak_memory_bytes, "unknown_ops": list(self.unknown_ops),
                "opaque_layers": list(self.opaque_layers),
                "incomplete": list(self.incomplete)} \
            | ({"gpu_required_bytes": self.gpu_required_bytes,
                "gpu_capacity_bytes": self.gpu_capacity_bytes}
               if self.gpu_capacity_bytes is not None else {})

    @classmethod
    def from_dict(cls, d: dict) -> "Figures":
        return cls(params=int(d["params"]), flops_forward=int(d["flops_forward"]),
                   flops_backward=int(d["flops_backward"]),
                   peak_memory_bytes=int(d["peak_memory_bytes"]),
                   unknown_ops=tuple(d.get("unknown_ops", ())),
                   opaque_layers=tuple(d.get("opaque_layers", ())),
                   gpu_required_bytes=d.get("gpu_required_bytes"),
                   gpu_capacity_bytes=d.get("gpu_capacity_bytes"),
                   incomplete=tuple(d.get("incomplete", ())))


@dataclass(frozen=True)
class Check:
    """One line of the verdict: a figure against its limit, or its growth over the baseline."""

    figure: str                    # params | flops | peak_memory_bytes | gpu_fit
    kind: str                      # "limit" or "growth"
    value: float | None            # the figure; for growth the fraction (0.072), None: no baseline
    limit: float                   # the max_* value; for growth the fraction
    baseline: int | None = None    # growth: the baseline figure
    problem: str | None = None     # growth that cannot be computed: why (fails the check)

    @property
    def ok(self) -> bool:
        if self.problem is not None or self.value is None:
            return False
        if self.kind == "growth":  # fractions: 0.1 + 0.2 style rounding must not fail a budget
            return self.value <= self.limit + 1e-12
        return self.value <= self.limit

    @property
    def excess(self) -> float:
        """How far over: figure minus limit (or growth minus max_growth); 0 when within."""
        return 0 if self.ok or self.value is None else self.value - self.limit

    def to_dict(self) -> dict:
        return {"figure": self.figure, "kind": self.kind, "value": self.value,
                "limit": self.limit, "baseline": self.baseline, "ok": self.ok,
                "excess": self.excess, "problem": self.problem}


@dataclass(frozen=True)
class Outcome:
    budget: Budget
    figures: Figures | None  # None: the analysis failed (`error` says why)
    checks: tuple[Check, ...]
    cached: bool
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and all(c.ok for c in self.checks)

    def to_dict(self) -> dict:
        return {"name": self.budget.name, "model": self.budget.model,
                "config": self.budget.settings(), "cached": self.cached, "ok": self.ok,
                "error": self.error,
                "figures": self.figures.to_dict() if self.figures is not None else None,
                "checks": [c.to_dict() for c in self.checks]}

