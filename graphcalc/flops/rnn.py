"""Recurrent kernels: oneDNN's LSTM layer (CPU), cuDNN's and MIOpen's whole-RNN kernels (GPU).

Counts: the matrix products of the cell. Each step of each layer and direction multiplies the
layer's input x_t by W_ih (G*H x I) and the previous hidden state h_{t-1} by W_hh (G*H x P), with
G gates (LSTM 4, GRU 3, RNN 1), hidden size H, P = proj_size or H; an LSTM with proj_size also
multiplies h_t by W_hr (P x H). Gate nonlinearities and the state updates are elementwise (zero
by convention).
Formula (forward), per layer and direction, over T steps of batch N:
    T * N * G*H * (I + P)  [+ T * N * P*H with proj_size]  MACs,
which is T * N times the elements of the layer's 2-D weight matrices; the kernels below sum it
over every 2-D weight they are given (a packed sequence has sum(batch_sizes) tokens in place of
T * N). Layer l > 0 takes I = D * P, D the number of directions.
Backward: for each product y = W x, the input gradient W^T dy and the weight gradient dy x^T each
cost what the forward product did: 2x the forward MACs (cuDNN's backward without the weight
gradient, output_mask[3] false, costs 1x).
Bias adds: one add per bias element per token (b_ih and b_hh), tallied apart from MACs.
The CPU decompositions (nn.GRU, nn.RNN and an LSTM with proj_size on CPU) run as mm/addmm and are
counted by matmul.py; FlopCounterMode has no formula for these fused kernels (it counts 0).
"""

from __future__ import annotations

import torch

from . import OpCost, register


def _matrices(weights) -> tuple[int, int]:
    """(elements of the 2-D weight matrices, elements of the 1-D biases)."""
    mats = biases = 0
    for w in weights:
        if isinstance(w, torch.Tensor):
            if w.dim() == 2:
                mats += w.numel()
            elif w.dim() == 1:
                biases += w.numel()
    return mats, biases


def _tokens(x: torch.Tensor, batch_sizes) -> int:
    if batch_sizes is not None and len(batch_sizes) > 0:
        return int(sum(int(b) for b in batch_sizes))  # packed: (sum(batch_sizes), I)
    return int(x.shape[0]) * int(x.shape[1])


@register("aten::mkldnn_rnn_layer")
def mkldnn_rnn_layer(x, w_ih, w_hh, b_ih, b_hh, hx, cx, reverse, batch_sizes, mode, hidden_size,
                     num_layers, has_biases, *args, out=None, **_):
    # One layer and one direction; x is (T, N, I) (mkldnn_rnn makes it time-major first).
    tokens = _tokens(x, batch_sizes)
    mats, biases = _matrices((w_ih, w_hh) + ((b_ih, b_hh) if has_biases else ()))
    return OpCost(tokens * mats, tokens * biases)


@register("aten::mkldnn_rnn_layer_backward")
def mkldnn_rnn_layer_backward(x, w_ih, w_hh, b_ih, b_hh, hx, cx, output, hy, cy, grad_output,
                              grad_hy, grad_cy, reverse, mode, hidden_size, num_layers,
                              has_biases, train, bidirectional, batch_sizes, *args, out=None,
                              **_):
    # oneDNN's backward returns the input, state and weight gradients together: 2x forward.
    mats, _ = _matrices((w_ih, w_hh))
    return OpCost(2 * _tokens(x, batch_sizes) * mats)


def _gpu_tokens(x, batch_first: bool, batch_sizes) -> int:
    if batch_sizes is not None and len(batch_sizes) > 0:
        return int(sum(int(b) for b in batch_sizes))
    return int(x.shape[0]) * int(x.shape[1])  # (T, N, I) or (N, T, I): T * N either way


@register("aten::_cudnn_rnn")
def cudnn_rnn(x, weight, weight_stride0, weight_buf, hx, cx, mode, hidden_size, proj_size,
              num_layers, batch_first, dropout, train, bidirectional, batch_sizes, *args,
              out=None, **_):
    # `weight` holds every layer and direction's W_ih, W_hh[, b_ih, b_hh][, W_hr].
    tokens = _gpu_tokens(x, batch_first, batch_sizes)
    mats, biases = _matrices(weight)
    return OpCost(tokens * mats, tokens * biases)


@register("aten::miopen_rnn")
def miopen_rnn(x, weight, weight_stride0, hx, cx, mode, hidden_size, num_layers, batch_first,
               dropout, train, bidirectional, batch_sizes, *args, out=None, **_):
    tokens = _gpu_tokens(x, batch_first, batch_sizes)
    mats, biases = _matrices(weight)
    return OpCost(tokens * mats, tokens * biases)


def _gpu_backward(x, weight, batch_first, batch_sizes, output_mask) -> OpCost:
    passes = 1 + (1 if output_mask is None or output_mask[3] else 0)
    mats, _ = _matrices(weight)
    return OpCost(passes * _gpu_tokens(x, batch_first, batch_sizes) * mats)


@register("aten::_cudnn_rnn_backward")
def cudnn_rnn_backward(x, weight, weight_stride0, weight_buf, hx, cx, output, grad_output,
                       grad_hy, grad_cy, mode, hidden_size, proj_size, num_layers, batch_first,
                       dropout, train, bidirectional, batch_sizes, dropout_state, reserve,
                       output_mask, *args, out=None, **_):
    return _gpu_backward(x, weight, batch_first, batch_sizes, output_mask)


@register("aten::miopen_rnn_backward")
def miopen_rnn_backward(x, weight, weight_stride0, weight_buf, hx, cx, output, grad_output,
                        grad_hy, grad_cy, mode, hidden_size, num_layers, batch_first, dropout,
                        train, bidirectional, batch_sizes, dropout_state, reserve, output_mask,
                        *args, out=None, **_):
    return _gpu_backward(x, weight, batch_first, batch_sizes, output_mask)
