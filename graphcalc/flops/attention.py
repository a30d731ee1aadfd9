"""Scaled dot-product attention kernels.

Counts: the two batched products of attention, q@k^T and p@v; softmax, scaling and masking are
elementwise (zero by convention). Causal masking is not halved (as FlopCounterMode).
Formula (forward): B*H*Sq*Sk*D + B*H*Sq*Sk*Dv MACs. Backward: five products (recomputed scores,
grad_p, grad_v, grad_q, grad_k): B*H*(Sq*Sk*D + Sq*Dv*Sk + Sk*Sq*Dv + Sq*Sk*D + D*Sq*Sk) MACs.
Grouped-query attention: K/V heads are broadcast to the query's H.
Known difference: torch 2.13's FlopCounterMode has no formula for the CPU kernels
(`_scaled_dot_product_flash_attention_for_cpu` and its backward) and counts them 0 (pytorch
#195460); graphcalc counts them with the same formula as the CUDA kernels.
Source: torch.utils.flop_counter (sdpa_flop_count, sdpa_backward_flop_count).
"""

from __future__ import annotations

from . import OpCost, _shape, register


def _fwd_macs(q, k, v) -> int:
    b, h, sq, d = _shape(q)
    sk = _shape(k)[2]
    dv = _shape(v)[3]
    return b * h * sq * sk * d + b * h * sq * sk * dv


def _bwd_macs(grad_out, q, k, v) -> int:
    b, h, sq, d = _shape(q)
    sk = _shape(k)[2]
    dv = _shape(v)[3]
    return b * h * (sq * d * sk + sq * dv * sk + sk * sq * dv + sq * sk * d + d * sq * sk)


@register("aten::_scaled_dot_product_flash_attention",
          "aten::_scaled_dot_product_efficient_attention",
          "aten::_scaled_dot_product_cudnn_attention",
          "aten::_scaled_dot_product_flash_attention_for_cpu")
def sdpa_forward(q, k, v, *args, out=None, **_):
    # All four take (B, H, S, D) operands.
    return OpCost(_fwd_macs(q, k, v))


@register("aten::_scaled_dot_product_flash_attention_backward",
          "aten::_scaled_dot_product_efficient_attention_backward",
          "aten::_scaled_dot_product_cudnn_attention_backward",
          "aten::_scaled_dot_product_flash_attention_for_cpu_backward")
def sdpa_backward(grad_out, q, k, v, *args, out=None, **_):
    return OpCost(_bwd_macs(grad_out, q, k, v))
