"""Human units, parsed and printed in one place.

Counts use decimal suffixes (K, M, G, T: 25M = 25,000,000). Bytes take binary suffixes with an i
(KiB, MiB, GiB, TiB: powers of 1024) or decimal ones (KB, MB, GB, TB: powers of 1000), as written.
"""

from __future__ import annotations

import math
import re
from decimal import ROUND_HALF_EVEN, Decimal

from graphcalc.errors import UsageError

_COUNT = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "B": 10**9, "T": 10**12, "P": 10**15}
_BYTES = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40, "K": 2**10, "M": 2**20,
          "G": 2**30, "T": 2**40}
_NUMBER = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*$")


def _parse(text, table: dict, what: str, exact: bool = False) -> int | float:
    """The number `text` says. `exact`: as written, a fraction kept (a limit of 1.5 or 1500.5
    is that, not 2 or 1500); else rounded to a whole number."""
    if isinstance(text, bool):
        raise UsageError(f"{what} '{text}' is not a number")
    if isinstance(text, (int, float)):
        if not math.isfinite(text):
            raise UsageError(f"{what} '{text}' is not a finite number")
        if text < 0:
            raise UsageError(f"{what} '{text}' is negative")
        value = Decimal(repr(text)) if isinstance(text, float) else Decimal(text)
    else:
        m = _NUMBER.match(str(text))
        if not m or m.group(2).upper() not in table:
            raise UsageError(f"{what} '{text}' does not parse: write e.g. "
                             + ("25M, 4.5G" if table is _COUNT else "16GiB, 512MB"))
        value = Decimal(m.group(1)) * table[m.group(2).upper()]
    if value == value.to_integral_value():
        return int(value)
    return float(value) if exact else int(value.to_integral_value(ROUND_HALF_EVEN))


def parse_count(text, exact: bool = False) -> int | float:
    """'25M' -> 25_000_000, '4.5G' -> 4_500_000_000; with `exact`, '1500.5' -> 1500.5."""
    return _parse(text, _COUNT, "count", exact)


def parse_bytes(text, exact: bool = False) -> int | float:
    """'16GiB' -> 17_179_869_184, '1.5 TB' -> 1_500_000_000_000, '512MB' -> 512_000_000."""
    return _parse(text, _BYTES, "size", exact)


def parse_percent(text) -> float:
    """'5%' -> 0.05, '7.5 %' -> 0.075. The % is required: a bare 5 could mean 5% or 500%."""
    m = re.match(r"^\s*([0-9]*\.?[0-9]+)\s*%\s*$", text) if isinstance(text, str) else None
    if not m:
        raise UsageError(f"percentage '{text}' does not parse: write e.g. 5%")
    return float(m.group(1)) / 100


def dtype_name(dtype) -> str:
    """`torch.bfloat16` -> `bfloat16`."""
    return str(dtype).replace("torch.", "")


def format_count(n: int | float, digits: int = 3) -> str:
    """26926 -> '26.9K', 11963392 -> '12.0M'; exact below 1000."""
    n = float(n)
    if abs(n) < 1000:
        return f"{int(n)}" if n == int(n) else f"{n:.2f}"
    for suffix, scale in (("K", 1e3), ("M", 1e6), ("G", 1e9), ("T", 1e12), ("P", 1e15)):
        text = f"{n / scale:.{_decimals(n / scale, digits)}f}"
        if abs(float(text)) < 1000 or suffix == "P":  # 999,600 is 1.00M, not 1000K
            return f"{text}{suffix}"
    raise AssertionError("unreachable")


_BYTE_UNITS = (("KiB", 2**10), ("MiB", 2**20), ("GiB", 2**30), ("TiB", 2**40), ("PiB", 2**50))


def format_bytes(n: int | float) -> str:
    """Binary units, three significant digits, never four digits before the point:
    1379224 -> '1.32 MiB', 1016 MiB -> '0.99 GiB', 999 -> '999 B'."""
    n = float(n)
    if abs(n) < 1000:
        return f"{int(n)} B"
    for suffix, scale in _BYTE_UNITS:
        text = f"{n / scale:.{_decimals(n / scale, 3)}f}"
        if abs(float(text)) < 1000 or suffix == "PiB":
            return f"{text} {suffix}"
    raise AssertionError("unreachable")


def format_seconds(s: float) -> str:
    """'0.8 ms', '412.3 ms', '19.4 s', '3 min 12 s': a time in the unit it reads best in."""
    if s < 1:
        return f"{s * 1000:.1f} ms"
    if s < 60:
        return f"{s:.1f} s"
    minutes, seconds = divmod(round(s), 60)
    return f"{minutes} min {seconds} s"


def format_percent(fraction: float, *, signed: bool = False) -> str:
    """0.072 -> '7.2%'; signed: '+7.2%', '-0.4%'."""
    return f"{fraction * 100:{'+' if signed else ''}.1f}%"


def _decimals(x: float, digits: int) -> int:
    x = abs(x)
    return max(0, digits - (1 if x < 10 else 2 if x < 100 else 3))
