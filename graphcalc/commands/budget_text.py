"""A budget check as text, in the units of graphcalc.units (`graphcalc check`'s table).
"""

from __future__ import annotations

import sys

from graphcalc.units import (format_bytes, format_count, format_percent)

if sys.version_info >= (3, 11):
    pass
else:  # pragma: no cover - Python 3.10
    pass

from graphcalc.commands.budget_types import Check, Outcome



LABELS = {"params": "params", "flops": "FLOPs", "peak_memory_bytes": "peak memory",
          "gpu_fit": "GPU memory", "complete": "figures"}


def amount(figure: str, value: float) -> str:
    return format_bytes(value) if figure in ("peak_memory_bytes", "gpu_fit") \
        else format_count(value)


def value_text(check: Check) -> str:
    """'26.9M'; growth: '+7.2% params'."""
    if check.kind == "complete":
        return "incomplete"
    if check.kind == "limit":
        return amount(check.figure, check.value)
    if check.value is None:  # a growth with no baseline to compare (the verdict says why)
        return "--"
    return f"{format_percent(check.value, signed=True)} {LABELS[check.figure]}"


def limit_text(check: Check) -> str:
    if check.kind == "complete":
        return "complete"
    if check.kind == "growth":
        return format_percent(check.limit, signed=True)
    return amount(check.figure, check.limit)


def verdict_text(check: Check) -> str:
    """'ok', 'OVER by 1.93M (+7.7%)', 'OVER (baseline 25.0M)', 'FAIL: no baseline: ...'."""
    if check.problem:
        return f"FAIL: {check.problem}"
    if check.kind == "growth":
        base = f"baseline {amount(check.figure, check.baseline)}"
        return f"ok ({base})" if check.ok else f"OVER ({base})"
    return "ok" if check.ok else f"OVER {_excess_text(check)}"


def _excess_text(check: Check) -> str:
    over = check.value - check.limit
    share = f" ({format_percent(over / check.limit, signed=True)})" if check.limit else ""
    return f"by {amount(check.figure, over)}{share}"


def failures_text(outcome: Outcome) -> str:
    """The budget's part of the closing sentence: "net: params over by 1.93M (+7.7%), +7.2%
    params"; "" when it holds."""
    if outcome.error is not None:
        return f"{outcome.budget.name}: not analysed: {outcome.error}"
    items: list[str] = []
    for check in outcome.checks:
        if check.ok:
            continue
        if check.kind == "complete":
            item = check.problem
        elif check.problem:
            item = f"{check.problem} (run `graphcalc check --update-baseline` and commit it)"
        elif check.kind == "growth":
            item = value_text(check)
        else:
            item = f"{LABELS[check.figure]} over {_excess_text(check)}"
        if item not in items:
            items.append(item)
    return f"{outcome.budget.name}: {', '.join(items)}" if items else ""
