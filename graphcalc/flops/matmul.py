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


@register("aten::_grouped_mm")
def grouped_mm(a, b, offs=None, bias=None, out_dtype=None, *, out=None, **_):
    """Mixture-of-experts products (transformers' grouped_mm experts), one group per expert.

    The groups split one dimension (`offs`, cumulative ends); every row or column is in exactly one
    group, so the count does not depend on how the tokens were routed:
    - a (M, K) @ b (G, K, N), offs over M (each token row through its expert): M*K*N MACs;
    - a (M, K) @ b (G?, ...) 2D @ 2D (K_total, N), offs over K (the weight gradient, one
      (M, N) block per group over its K_g rows): G blocks of M*K_g*N = M*K_total*N MACs;
    - a (G, M, K) @ b (K, N_total), offs over N: M*K*N_total MACs;
    - a (G, M, K) @ b (G, K, N), no offs (batched): G*M*K*N MACs.
    FlopCounterMode has no formula for it (torch 2.13): the tests add this count to its total."""
    sa, sb = _shape(a), _shape(b)
    if len(sa) == 2 and len(sb) == 3:
        return OpCost(sa[0] * sa[1] * sb[2])
    if len(sa) == 2 and len(sb) == 2:
        return OpCost(sa[0] * sa[1] * sb[1])
    if len(sa) == 3 and len(sb) == 2:
        return OpCost(sa[1] * sa[2] * sb[1])
    return OpCost(sa[0] * sa[1] * sa[2] * sb[2])
