"""Mixture-of-experts routing, as the static analysis assumes it and as a real step can be forced.

A router picks each token's experts with `torch.topk` over the router's scores; which experts it
picks depends on values a static analysis does not have. Where a model reads that choice (the
eager experts loop of transformers' MoE layers: `nonzero()` over the experts hit, `where()` over
each expert's tokens), the sizes of each expert's batch follow it. graphcalc assumes a routing
and states it in the report:

- balanced: token row r picks experts (r*k + j) mod E for j < k, so every expert gets
  rows*k/E tokens (the load a router's balancing loss aims for);
- worst: every token picks experts 0..k-1, so k experts get every token and the rest none (the
  most an expert can be handed);
- capacity:C: no expert gets more than C times the balanced load, ceil(C * rows * k / E)
  tokens (the capacity factor of Switch Transformer and GShard routers, or a bound on the
  imbalance a balancing loss leaves), filled as unevenly as that allows: experts 0, 1, ... take
  their full capacity in turn. capacity:1 is balanced; from C = E/k on it is worst.

`ForcedRouting` makes a real step route the same way (for verify and the tests): it replaces the
indices of every `topk` over the last dimension, and gathers the values at those indices.
"""

from __future__ import annotations

import math

import torch
from torch.utils._python_dispatch import TorchDispatchMode

ROUTINGS = ("balanced", "worst")  # and capacity:C, C >= 1 (`parse`)
CAPACITY = "capacity:"


def parse(text) -> str:
    """A routing as the user names it, normalised ('capacity=1.25' -> 'capacity:1.25'); a
    ValueError with the choices otherwise."""
    v = str(text).strip().lower().replace("=", ":")
    if v in ROUTINGS:
        return v
    if v.startswith(CAPACITY):
        try:
            c = float(v[len(CAPACITY):])
        except ValueError:
            c = float("nan")
        if not c >= 1 or c == float("inf"):
            raise ValueError(f"the capacity factor must be a number of at least 1, got "
                             f"'{v[len(CAPACITY):]}'")
        return f"{CAPACITY}{c:g}"
    raise ValueError(f"unknown routing '{text}': choose balanced, worst or capacity:C "
                     "(C >= 1, e.g. capacity:1.25)")


def capacity_factor(routing: str) -> float | None:
    return float(routing[len(CAPACITY):]) if routing.startswith(CAPACITY) else None


def assigned(shape: tuple[int, ...], experts: int, routing: str,
             device: torch.device | str = "cpu") -> torch.Tensor:
    """The experts each token picks: an int64 tensor of `shape` (..., k), values < `experts`."""
    k = shape[-1]
    rows = 1
    for s in shape[:-1]:
        rows *= s
    j = torch.arange(k, device=device)
    factor = capacity_factor(routing)
    if factor is not None:
        cap = math.ceil(factor * rows * k / experts)
        if cap >= rows:
            routing = "worst"
        else:
            # Slot j * rows + r (token r's j-th choice) goes to expert slot // cap: expert e
            # takes cap consecutive slots; a token's k slots are rows >= cap apart, so its k
            # experts are distinct.
            r = torch.arange(rows, device=device).unsqueeze(1)
            idx = (j * rows + r) // cap
            return idx.reshape(shape).contiguous()
    if routing == "worst":
        idx = j.expand(rows, k)
    else:
        r = torch.arange(rows, device=device).unsqueeze(1)
        idx = (r * k + j) % experts
    return idx.reshape(shape).contiguous()


def is_routing(func, args, kwargs) -> bool:
    """A topk over the last dimension: how routers choose experts."""
    if getattr(func, "_overloadpacket", None) is not torch.ops.aten.topk:
        return False
    x = args[0]
    dim = args[2] if len(args) > 2 else kwargs.get("dim", -1)
    return isinstance(x, torch.Tensor) and x.dim() >= 1 and dim in (-1, x.dim() - 1)


class ForcedRouting(TorchDispatchMode):
    """A real step whose routers pick the experts `assigned` picks."""

    def __init__(self, routing: str = "balanced"):
        super().__init__()
        self.routing = routing

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if not is_routing(func, args, kwargs):
            return out
        values, indices = out
        idx = assigned(tuple(indices.shape), args[0].shape[-1], self.routing, indices.device)
        return torch.gather(args[0], -1, idx), idx
