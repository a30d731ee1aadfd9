"""Matrix products.

Counts: multiply-accumulates of the product; the `input` of addmm/baddbmm is a bias add.
Formula: mm (M,K)@(K,N) -> M*K*N MACs; bmm (B,M,K)@(B,K,N) -> B*M*K*N MACs.
Assumes: dense operands. Source: torch.utils.flop_counter (mm_flop, bmm_flop), 2 FLOPs per MAC.
"""

from __future__ import annotations

import torch

from . import OpCost, _shape, register


def _mm_macs(a, b) -> int:
    m, k = _shape(a)
    _, n = _shape(b)
    return m * k * n


def _bmm_macs(a, b) -> int:
    bs, m, k = _shape(a)
    _, _, n = _shape(b)
    return bs * m * k * n


def _bias_adds(bias, beta, out) -> int:
    # addmm(bias, a, b): one add per output element when a bias takes part (beta != 0).
    if isinstance(bias, torch.Tensor) and beta != 0:
        return out.numel()
    return 0


@register("aten::mm")
def mm(a, b, *, out=None, **_):
    return OpCost(_mm_macs(a, b))


@register("aten::addmm")
def addmm(bias, a, b, *, out=None, beta=1, alpha=1, **_):
    return OpCost(_mm_macs(a, b), _bias_adds(bias, beta, out))


@register("aten::bmm")
def bmm(a, b, *, out=None, **_):
    return OpCost(_bmm_macs(a, b))


@register("aten::baddbmm")
def baddbmm(bias, a, b, *, out=None, beta=1, alpha=1, **_):
    return OpCost(_bmm_macs(a, b), _bias_adds(bias, beta, out))


@register("aten::_scaled_mm")
def scaled_mm(a, b, *args, out=None, **_):
    return OpCost(_mm_macs(a, b))
