"""Ops whose fake kernel allocates differently from the real CPU kernel, and what the real one does.

The replay counts the storages each op returns (`tracking.LiveStorages`). A fake kernel (a meta
registration) returns tensors of the right shapes, but a few real kernels return more: a
workspace the meta kernel leaves empty, statistics in a wider dtype, a second storage where the
meta kernel returns one tensor twice. `real_outputs` corrects those, one rule per op, each with
its source; `bench/fake_vs_real.py` (via `graphcalc.fake.fake_vs_real`) finds them by running a step on
real and on fake tensors and comparing every op's returned storages.

Where the real kernel is known to differ and no rule models it (`unmodelled`), the report says
so (`Report.memory_gaps`) instead of printing a figure that is silently low.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from graphcalc.flops import op_name

_LOW = (torch.bfloat16, torch.float16)
PAGE = 4096  # oneDNN's RNN workspace aligns each of its parts to a page


def _mixed_norm(positions: tuple[int, ...]):
    def rule(args, out, kwargs):
        """Under autocast a norm gets a bf16/fp16 input with fp32 weights; the real CPU kernels
        then return the saved mean and inverse std in fp32, the fake kernels in the input's dtype
        (half the bytes). Outputs 1 and 2 of native_layer_norm / native_batch_norm are those
        statistics (native_group_norm's too)."""
        x = args[0] if args else None
        params = [args[i] for i in positions if i < len(args) and isinstance(args[i], torch.Tensor)]
        if not (isinstance(x, torch.Tensor) and x.device.type == "cpu" and x.dtype in _LOW
                and any(p.dtype == torch.float32 for p in params)):
            return out, None
        return out, {i: t.numel() * 4 for i, t in enumerate(out[:3]) if i in (1, 2)
                     and isinstance(t, torch.Tensor) and t.dtype in _LOW}
    return rule


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _good_ld(dim: int, itemsize: int) -> int:
    """oneDNN rnn_utils::get_good_ld: a leading dimension rounded up to 64 bytes, plus 64 bytes
    more when it is a multiple of 256 elements (to avoid 4K aliasing)."""
    ld = _round_up(dim, 64 // itemsize)
    return ld + 64 // itemsize if ld % 256 == 0 else ld


LSTM_MODE = 2  # ideep::rnn_kind: RNN_RELU 0, RNN_TANH 1, LSTM 2, GRU 3


def lstm_workspace_bytes(seq: int, batch: int, input_size: int, hidden: int,
                         itemsize: int) -> int:
    """Bytes of the workspace `mkldnn_rnn_layer` returns in training (one layer, one direction).

    PyTorch (aten/src/ATen/native/mkldnn/RNN.cpp, mkldnn_rnn_layer) allocates
    `pd.workspace_desc().get_size()` bytes for oneDNN's LSTM forward-training primitive, whose
    size oneDNN computes in src/cpu/rnn/rnn_utils.hpp (set_workspace_sizes) and
    rnn_utils.cpp (set_offsets). With one layer and one direction (L = D = 1), T steps, batch N,
    input I, hidden H, 4 gates, element size s (4 fp32, 2 bf16) and fp32 accumulators:

        gates          T * N * good_ld(4H, s) * s            (gates_t is the data type)
        ht             T * N * good_ld(H, s) * s
        states_layer   (L+1) * (T+1) * N * good_ld(max(I, H), s) * s
        states_iter_c  (L+1) * (T+1) * N * H * s             (the c state's dtype: cx's)
        diff_states_layer, diff_states_iter
                       (L+1) * (T+1) * N * good_ld(max(I, H), 4) * 4   each
        diff_states_iter_c
                       (L+1) * (T+1) * N * H * 4
        grid_comp      0 (only for linear-before-reset GRU)

    Each part starts on a 4096-byte page (set_offsets' register_space rounds the running offset
    up before adding a part), and the last, empty part rounds the total up to a page. states_iter
    aliases states_layer (dst_iter == dst_layer for every cell oneDNN supports) and takes no
    space of its own in the bundled oneDNN (v3.12): tests/test_rnn.py checks this rule against
    the real kernel on random shapes in fp32 and bf16.
    """
    s = itemsize
    width = max(input_size, hidden)
    steps1 = 2 * (seq + 1) * batch  # (L+1) * (T+1) * N with L = 1
    parts = [seq * batch * _good_ld(4 * hidden, s) * s,
             seq * batch * _good_ld(hidden, s) * s,
             steps1 * _good_ld(width, s) * s,
             steps1 * hidden * s,
             steps1 * _good_ld(width, 4) * 4,
             steps1 * _good_ld(width, 4) * 4,
             steps1 * hidden * 4,
             0]
    offset = 0
    for part in parts:
        offset = _round_up(offset, PAGE) + part
    return offset


def _mkldnn_rnn_layer(args, out, kwargs):
    """The real kernel returns oneDNN's workspace (`lstm_workspace_bytes`) as output 3, a uint8
    tensor that autograd saves for backward; the meta kernel returns an empty one."""
    x, mode, train = args[0], args[9], args[15]
    ws = out[3]
    if not (train and torch.is_grad_enabled() and mode == LSTM_MODE and x.device.type == "cpu"
            and isinstance(ws, torch.Tensor)):
        return out, None
    seq, batch, input_size = (int(d) for d in x.shape)  # time-major: mkldnn_rnn transposes first
    return out, {3: lstm_workspace_bytes(seq, batch, input_size, int(args[10]),
                                         x.element_size())}


def _mkldnn_rnn_layer_backward(args, out, kwargs):
    """The real kernel returns the bias gradient twice, the second a clone (`diff_b2_ =
    at::clone(diff_b_)`), one for bias_ih and one for bias_hh; the meta kernel returns the same
    tensor twice. Give output 4 its own storage, as the real one has."""
    if not (isinstance(out, tuple) and len(out) > 4 and isinstance(out[3], torch.Tensor)
            and isinstance(out[4], torch.Tensor) and _same_storage(out[3], out[4])):
        return out, None
    return (*out[:4], torch.empty_like(out[4]), *out[5:]), None


def _group_norm_backward(args, out, kwargs):
    """The real CPU kernel of native_group_norm_backward returns a bf16/fp16 input's gradient in
    the input's dtype when the weight is fp32 (autocast); the fake one returns it in fp32, twice
    the bytes, which autograd then copies down. Cast as the real kernel returns it."""
    if len(args) < 2:
        return out, None
    x, grad_input = args[1], out[0]
    if (isinstance(grad_input, torch.Tensor) and isinstance(x, torch.Tensor)
            and x.device.type == "cpu" and x.dtype in _LOW and grad_input.dtype != x.dtype):
        return (grad_input.to(x.dtype), *out[1:]), None
    return out, None


def _losses_keeping_their_buffer() -> dict[str, int]:
    """Loss ops (-> position of their reduction argument) whose real CPU kernel returns the
    reduced loss as a 0-d view of the unreduced elementwise buffer, so that the scalar holds
    input-sized memory until it dies; their fake kernels return a 4-byte scalar. Probed on the
    torch running (torch 2.13: mse_loss, smooth_l1_loss, soft_margin_loss, binary_cross_entropy)
    rather than listed, since a kernel may change that between releases."""
    aten = torch.ops.aten
    x, y = torch.full((2, 3), 0.5), torch.full((2, 3), 0.25)
    probes = {"aten::mse_loss": (lambda: aten.mse_loss(x, y, 1), 2),
              "aten::smooth_l1_loss": (lambda: aten.smooth_l1_loss(x, y, 1), 2),
              "aten::soft_margin_loss": (lambda: aten.soft_margin_loss(x, y, 1), 2),
              "aten::binary_cross_entropy": (lambda: aten.binary_cross_entropy(x, y, None, 1), 3)}
    found = {}
    for name, (probe, position) in probes.items():
        try:
            with torch.no_grad():
                if probe().untyped_storage().nbytes() == x.numel() * x.element_size():
                    found[name] = position
        except Exception:  # an op this torch lacks keeps the fake's size
            pass
    return found


_BUFFERED_LOSSES = _losses_keeping_their_buffer()


def _loss_buffer_size(name: str, args, kwargs, out) -> dict[int, int] | None:
    position = _BUFFERED_LOSSES.get(name)
    if position is None or not isinstance(out, torch.Tensor) or out.dim() != 0:
        return None
    reduction = kwargs.get("reduction", args[position] if len(args) > position else 1)
    x, target = args[0], args[1]
    if reduction == 0 or x.device.type != "cpu":
        return None
    shape = torch.broadcast_shapes(x.shape, target.shape)
    return {0: math.prod(shape) * out.element_size()}


_EMBEDDING_BAGS = ("aten::_embedding_bag", "aten::_embedding_bag_forward_only")
_BAG_FAST_SUM = (torch.float32, torch.float16, torch.bfloat16)


def _offset2bag_size(args, kwargs) -> dict[int, int] | None:
    """Output 1 of the CPU embedding-bag kernel (offset2bag, int64): none on its fast path (mode
    sum, a float/half/bf16 weight, no padding_idx), else indices + 1 entries (it is made one
    longer, then resized down). The fake kernel makes `indices` entries, and also for bf16 sums."""
    names = ("weight", "indices", "offsets", "scale_grad_by_freq", "mode", "sparse",
             "per_sample_weights", "include_last_offset", "padding_idx")
    given = dict(zip(names, args), **kwargs)
    weight, indices = given["weight"], given["indices"]
    if weight.device.type != "cpu":
        return None
    mode, padding_idx = given.get("mode", 0), given.get("padding_idx", -1)
    padding_idx = -1 if padding_idx is None else padding_idx
    fast = mode == 0 and weight.dtype in _BAG_FAST_SUM and padding_idx < 0
    return {1: 0 if fast else (indices.numel() + 1) * 8}


def _buffered_loss(name: str):
    def rule(args, out, kwargs):
        return out, _loss_buffer_size(name, args, kwargs, out)
    return rule


def _embedding_bag(args, out, kwargs):
    return out, _offset2bag_size(args, kwargs)


def _layer_norm_backward(args, out, kwargs):
    """aten::native_layer_norm_backward: the CPU and CUDA kernels make grad_input as
    `at::native::empty_like(*X, ..., MemoryFormat::Contiguous)` of the contiguous input
    (layer_norm.cpp layer_norm_backward_cpu, layer_norm_kernel.cu), whatever grad_out's strides;
    the fake kernel follows grad_out's, so a transposed grad_out (Swin's window attention) made a
    grad_input that the next `view` had to copy. Same bytes, other strides: replaced by a
    contiguous one."""
    dx = out[0] if isinstance(out, (tuple, list)) and out else None
    if isinstance(dx, torch.Tensor) and not dx.is_contiguous():
        out = (torch.empty_like(dx, memory_format=torch.contiguous_format), *out[1:])
    return out, None


def _same_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage()._cdata == b.untyped_storage()._cdata


# op -> rule(args, out, kwargs) -> (out, {output leaf index: real bytes} or None)
_RULES: dict[str, Callable[[tuple, Any, dict], tuple[Any, dict[int, int] | None]]] = {
    "aten::native_group_norm": _mixed_norm((1, 2)),
    "aten::native_group_norm_backward": _group_norm_backward,
    **{name: _buffered_loss(name) for name in _BUFFERED_LOSSES},
    **dict.fromkeys(_EMBEDDING_BAGS, _embedding_bag),
    "aten::native_layer_norm": _mixed_norm((2, 3)),
    "aten::native_layer_norm_backward": _layer_norm_backward,
    "aten::native_batch_norm": _mixed_norm((1, 2, 3, 4)),
    "aten::_native_batch_norm_legit": _mixed_norm((1, 2, 3, 4)),
    "aten::_native_batch_norm_legit_functional": _mixed_norm((1, 2, 3, 4)),
    "aten::mkldnn_rnn_layer": _mkldnn_rnn_layer,
    "aten::mkldnn_rnn_layer_backward": _mkldnn_rnn_layer_backward,
}


def real_outputs(func, args, out, kwargs=None) -> tuple[Any, dict[int, int] | None]:
    """`out` as the real kernel returns it (a distinct tensor where it returns a distinct
    storage), and the bytes of output leaves whose real storage differs from the fake one."""
    rule = _RULES.get(op_name(func))
    if rule is None:
        return out, None
    return rule(args, out, kwargs or {})


CUDNN_RNN = "cuDNN's RNN reserve space is not modelled"


def unmodelled(func, args, device: str) -> str | None:
    """Why this op's real memory is not what the replay counts, when no rule models it."""
    name = op_name(func)
    if name in ("aten::_cudnn_rnn", "aten::_cudnn_rnn_backward", "aten::miopen_rnn",
                "aten::miopen_rnn_backward"):
        return CUDNN_RNN
    if name == "aten::mkldnn_rnn_layer" and len(args) > 9 and args[9] != LSTM_MODE:
        return "the oneDNN workspace of a non-LSTM cell is not modelled"
    return None
