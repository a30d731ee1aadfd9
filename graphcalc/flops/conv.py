"""Convolutions, forward and backward.

Counts: multiply-accumulates; a conv bias is tallied as one bias add per output element.
Formula (forward): N * prod(out_spatial) * C_out * (C_in / groups) * prod(kernel) MACs; for a
transposed conv the input's spatial size replaces the output's (each input point is scattered
through the kernel). The weight tensor already carries C_in / groups.
Backward: grad_input costs a (transposed) conv of grad_out with the weight; grad_weight costs as
many MACs as the forward conv.
Known difference: torch 2.13's FlopCounterMode counts grad_weight of a grouped conv `groups` times
too many (pytorch PR #183405 divides by groups); graphcalc counts it right.
Source: torch.utils.flop_counter (conv_flop_count, conv_backward_flop).
"""

from __future__ import annotations

from math import prod

from . import OpCost, _shape, register


def _conv_macs(x_shape, w_shape, out_shape, transposed: bool) -> int:
    batch = x_shape[0]
    positions = prod((x_shape if transposed else out_shape)[2:])
    c_out, c_in_per_group, *kernel = w_shape
    return batch * positions * c_out * c_in_per_group * prod(kernel)


@register("aten::convolution", "aten::_convolution", "aten::cudnn_convolution",
          "aten::convolution_overrideable", "aten::_slow_conv2d_forward",
          "aten::mkldnn_convolution")
def convolution(x, w, bias=None, stride=None, padding=None, dilation=None, transposed=False,
                *args, out=None, **_):
    transposed = bool(transposed) if isinstance(transposed, bool) else False
    macs = _conv_macs(_shape(x), _shape(w), _shape(out), transposed)
    bias_adds = out.numel() if bias is not None else 0
    return OpCost(macs, bias_adds)


@register("aten::convolution_backward")
def convolution_backward(grad_out, x, w, bias_sizes, stride, padding, dilation, transposed,
                         output_padding, groups, output_mask, *, out=None, **_):
    g, xs, ws = _shape(grad_out), _shape(x), _shape(w)
    macs = 0
    if output_mask[0]:
        # grad_input = conv_transpose(grad_out, w) for a conv (a conv for a transposed conv).
        macs += _conv_macs(g, ws, xs, not transposed)
    if output_mask[1]:
        # grad_weight: every forward multiply-accumulate is redone once against grad_out.
        macs += _conv_macs(xs, ws, g, transposed)
    return OpCost(macs)
