"""Ops declared zero on purpose, and why.

FlopCounterMode's convention counts matrix products, convolutions and attention only. An op is
declared zero here when it does no such work:
- elementwise ops (ATen's `pointwise` tag): activations and their backward, arithmetic, the
  optimizers' update math;
- views and ops that only move, create or copy data, with the in-place forms of views
  (transpose_, t_, squeeze_: they change a tensor's metadata only) and unsafe_split /
  unsafe_chunk (split without view tracking, used by the GRU and LSTM cells);
- the fused RNN-cell kernels (_thnn_fused_lstm_cell, _thnn_fused_gru_cell and their backward):
  they take the gate pre-activations that mm/addmm computed and apply the gates elementwise;
- reductions, softmax, normalisation, pooling, losses, embedding lookups, dropout.
The whole-RNN kernels (mkldnn_rnn_layer, _cudnn_rnn) have formulas (rnn.py). Anything else
(linear algebra, FFT, custom ops) is unknown: it may hide real matrix
work, so it is reported, never folded in as zero.
"""

from __future__ import annotations

import torch

_DATA = """
empty empty_like empty_strided zeros zeros_like ones ones_like full full_like new_empty new_zeros
new_ones new_full new_empty_strided scalar_tensor arange linspace copy copy_ _to_copy clone
contiguous detach lift_fresh lift_fresh_copy cat stack split split_with_sizes chunk unbind index
index_put index_put_ _index_put_impl_ index_select index_add index_add_ index_copy index_copy_
gather scatter scatter_ scatter_add scatter_add_ scatter_reduce slice_scatter select_scatter
diagonal_scatter as_strided_scatter masked_fill masked_fill_ masked_scatter masked_select
where constant_pad_nd fill fill_ zero zero_ repeat repeat_interleave roll flip tril triu tril_
triu_ _local_scalar_dense item bernoulli bernoulli_ native_dropout native_dropout_backward rand
randn randint randperm rand_like randn_like randint_like uniform_ normal_ random_ exponential_
set_ resize_ resize_as_ _unsafe_view view reshape alias expand expand_as permute transpose t
squeeze unsqueeze flatten unflatten narrow select slice as_strided unfold diagonal split_copy
_reshape_alias _unsafe_index _unsafe_index_put embedding embedding_dense_backward
_embedding_bag_backward sort topk argsort _pin_memory nonzero unique _unique2 bucketize
searchsorted one_hot is_same_size _has_compatible_shallow_copy_type sym_size sym_stride
sym_numel sym_storage_offset is_contiguous _assert_async _assert_tensor_metadata
_functional_assert_async _assert_scalar equal is_nonzero allclose isin histc bincount
upsample_nearest1d upsample_nearest2d upsample_nearest3d upsample_nearest1d_backward
upsample_nearest2d_backward upsample_nearest3d_backward upsample_bilinear2d
upsample_bilinear2d_backward upsample_linear1d upsample_linear1d_backward upsample_bicubic2d
upsample_bicubic2d_backward reflection_pad1d reflection_pad2d reflection_pad3d
reflection_pad1d_backward reflection_pad2d_backward replication_pad1d replication_pad2d
replication_pad1d_backward replication_pad2d_backward pixel_shuffle pixel_unshuffle
channel_shuffle im2col col2im _efficientzerotensor _to_dense _conj _neg_view _resolve_conj
_resolve_neg resolve_conj resolve_neg view_as_real view_as_complex complex polar slice_backward select_backward
diagonal_backward unfold_backward index_select_backward narrow_copy expand_copy permute_copy
view_copy transpose_copy t_copy unsqueeze_copy squeeze_copy slice_copy select_copy
embedding_backward repeat_interleave _unsafe_masked_index _unsafe_masked_index_put_accumulate
unsafe_split unsafe_split_with_sizes unsafe_chunk transpose_ t_ squeeze_ unsqueeze_ as_strided_
swapaxes_ swapdims_ detach_
_thnn_fused_lstm_cell _thnn_fused_lstm_cell_backward _thnn_fused_lstm_cell_backward_impl
_thnn_fused_gru_cell _thnn_fused_gru_cell_backward
_pack_padded_sequence _pack_padded_sequence_backward _pad_packed_sequence
max_unpool2d max_unpool3d
"""

_REDUCTIONS = """
sum mean amax amin max min aminmax var var_mean std std_mean prod argmax argmin any all cumsum
cumprod cummax cummin logsumexp logcumsumexp norm linalg_vector_norm _softmax _log_softmax
_softmax_backward_data _log_softmax_backward_data _safe_softmax native_batch_norm
native_batch_norm_backward _native_batch_norm_legit _native_batch_norm_legit_no_training
_native_batch_norm_legit_functional batch_norm_stats batch_norm_elemt
batch_norm_gather_stats_with_counts batch_norm_backward_reduce batch_norm_backward_elemt
cudnn_batch_norm cudnn_batch_norm_backward miopen_batch_norm miopen_batch_norm_backward
_batch_norm_with_update _batch_norm_with_update_functional _batch_norm_no_update
batch_norm_backward native_layer_norm native_layer_norm_backward native_group_norm
native_group_norm_backward _fused_rms_norm _fused_rms_norm_backward rms_norm
max_pool1d max_pool2d max_pool3d max_pool1d_with_indices max_pool2d_with_indices
max_pool3d_with_indices max_pool2d_with_indices_backward max_pool3d_with_indices_backward
max_pool2d_backward avg_pool1d avg_pool2d avg_pool3d avg_pool2d_backward avg_pool3d_backward
_adaptive_avg_pool2d _adaptive_avg_pool2d_backward _adaptive_avg_pool3d
_adaptive_avg_pool3d_backward adaptive_max_pool2d adaptive_max_pool2d_backward
adaptive_max_pool3d adaptive_max_pool3d_backward adaptive_avg_pool1d mkldnn_max_pool2d
nll_loss_forward nll_loss_backward nll_loss2d_forward nll_loss2d_backward mse_loss
mse_loss_backward l1_loss smooth_l1_loss smooth_l1_loss_backward huber_loss huber_loss_backward
binary_cross_entropy binary_cross_entropy_backward binary_cross_entropy_with_logits
soft_margin_loss soft_margin_loss_backward kl_div multilabel_margin_loss_forward
_ctc_loss _ctc_loss_backward _embedding_bag _embedding_bag_forward_only
_embedding_bag_dense_backward _embedding_bag_per_sample_weights_backward
"""

# Elementwise ops that ATen does not tag `pointwise`: integer division, and the backward of
# activations (each one multiply per element, no matrix work).
_ELEMENTWISE = """
floor_divide floor_divide_ remainder softplus_backward leaky_relu_backward elu_backward
hardtanh_backward hardswish_backward hardsigmoid_backward gelu_backward silu_backward
mish_backward threshold_backward sigmoid_backward tanh_backward log_sigmoid_backward
log_sigmoid_forward rrelu_with_noise_backward prelu _prelu_kernel _prelu_kernel_backward
glu glu_backward hardswish hardswish_ hardsigmoid hardsigmoid_ hardtanh hardtanh_
"""

# Sampling, normalisation of weights, and sparse bookkeeping: gathers and per-element arithmetic,
# no matrix products (FlopCounterMode counts them as 0 too).
_OTHER = """
grid_sampler_2d grid_sampler_2d_backward grid_sampler_3d grid_sampler_3d_backward
_weight_norm_interface
_weight_norm_interface_backward embedding_renorm_ _sparse_coo_tensor_with_dims_and_tensors
_coalesce coalesce _indices _values indices values _nnz sparse_dim dense_dim
"""

_NAMES = frozenset(
    "aten::" + n for n in (_DATA + _REDUCTIONS + _ELEMENTWISE + _OTHER).split()
)


def is_declared_zero(func, name: str) -> bool:
    if name in _NAMES:
        return True
    if not name.startswith("aten::"):
        # prim::device, prim::layout and other metadata queries do no arithmetic, nor do the
        # profiler's record_function markers (profiler::_record_function_enter_new, HF models).
        return name.startswith(("prim::", "profiler::"))
    tags = getattr(func, "tags", ())
    if torch.Tag.pointwise in tags:
        return True
    if name.startswith("aten::_foreach_"):
        return True  # the optimizers' elementwise updates, batched over parameters
    if getattr(func, "is_view", False):
        return True
    return False
