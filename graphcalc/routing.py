"""Mixture-of-experts routing, as the static analysis assumes it and as a real step can be forced.

A router picks each token's experts with `torch.topk` over the router's scores; which experts it
picks depends on values a static analysis does not have. Where a model reads that choice (the
eager experts loop of transformers' MoE layers: `nonzero()` over the experts hit, `where()` over
each expert's tokens), the sizes of each expert's batch follow it. graphcalc assumes a routing
and states it in the report:

- balanced: token row r picks experts (r*k + j) mod E for j < k, so every expert gets
  rows*k/E tokens (the load a router's balancing loss aims for);
- worst: every token picks experts 0..k-1, so k experts get every token and the rest none (the
  most an expert can be handed).

`ForcedRouting` makes a real step route the same way (for verify and the tests): it replaces the
indices of every `topk` over the last dimension, and gathers the values at those indices.
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

ROUTINGS = ("balanced", "worst")


def assigned(shape: tuple[int, ...], experts: int, routing: str,
             device: torch.device | str = "cpu") -> torch.Tensor:
    """The experts each token picks: an int64 tensor of `shape` (..., k), values < `experts`."""
    k = shape[-1]
    rows = 1
    for s in shape[:-1]:
        rows *= s
    j = torch.arange(k, device=device)
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
