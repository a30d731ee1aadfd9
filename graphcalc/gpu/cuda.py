"""The CUDA step, replayed on CPU fake tensors: what a real CUDA run does differently from the CPU.

`--device cuda` on a machine without CUDA (and, so that both print the same figures, on one with
it) replays the step on CPU fake tensors. Three things a CUDA run does that the CPU's kernels do
not, each from torch's source:

- **Attention** (`F.scaled_dot_product_attention`): CUDA picks flash, memory-efficient, cuDNN or
  the math kernel by GPU, dtype, head size, mask and dropout
  (aten/src/ATen/native/transformers/cuda/sdp_utils.cpp `select_sdp_backend`), and each saves its
  own tensors for backward (flash: the output and an fp32 logsumexp (B, H, L); memory-efficient:
  the output and an fp32 logsumexp padded to a multiple of 32 rows). `select_sdpa` follows those
  filters; `SdpaAsOnCuda` runs the chosen kernel's op, whose meta kernel gives its outputs.
  The CPU would run `_scaled_dot_product_flash_attention_for_cpu` in any float dtype.
- **Autocast**: CUDA's op lists (aten/src/ATen/autocast_mode.h: AT_FORALL_LOWER_PRECISION_FP,
  AT_FORALL_FP32, AT_FORALL_FP32_SET_OPT_DTYPE, AT_FORALL_PROMOTE) differ from the CPU's: under
  CUDA autocast layer_norm, group_norm, softmax, log_softmax, exp, pow, sum ... run in fp32,
  where the CPU keeps bf16. `cuda_autocast` registers CUDA's policies on the AutocastCPU key for
  the replay's duration (and lets the CPU-only entries fall through), so that the casts happen
  above autograd, as on CUDA, and autograd saves what it saves on CUDA.
- **The cuBLAS workspace** (aten/src/ATen/cuda/CublasHandlePool.cpp `setWorkspaceForHandle`):
  the first cuBLAS call of a thread on a stream allocates a workspace through the caching
  allocator (`getChosenWorkspaceSize`: 4096 KiB x 2 + 16 KiB x 8 = 8,519,680 B by default, 32 MiB
  on sm90 in torch 2.11; newer torch also on sm100-120), kept for the process's life. Autograd runs a CUDA backward on its own device
  thread, whose cuBLAS handle is another: a second workspace at the first matmul of backward.

What stays out: the private scratch some kernels take from the caching allocator while they run
(cuDNN convolution workspaces, memory-efficient attention's backward accumulators), which depends
on the algorithm cuDNN or CUTLASS picks at run time; the report lists it as a known gap.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensor
from torch.overrides import TorchFunctionMode

# ---- the GPU the step is for ------------------------------------------------------------------


@dataclass(frozen=True)
class CudaTarget:
    """What the replay needs to know of the GPU: its compute capability, and the cuBLAS
    workspace its handles take (graphcalc.gpu.gpus gives both for a named card)."""

    capability: tuple[int, int] = (8, 0)  # A100 unless a GPU is named
    name: str = "an sm80 GPU (A100-class)"
    workspace: int | None = None  # None: getChosenWorkspaceSize's default for the capability

    @property
    def cublas_workspace_bytes(self) -> int:
        """getChosenWorkspaceSize's default: 32 MiB on Hopper (sm90), else the `:4096:2:16:8`
        configuration, 4096 KiB x 2 + 16 KiB x 8."""
        if self.workspace is not None:
            return self.workspace
        if self.capability[0] == 9:
            return 4096 * 8 * 1024
        return 4096 * 1024 * 2 + 16 * 1024 * 8


DEFAULT_TARGET = CudaTarget()

# ---- scaled dot product attention -------------------------------------------------------------

FLASH, EFFICIENT, CUDNN, MATH = "flash", "efficient", "cudnn", "math"


def _sm(cap, lo, hi) -> bool:
    return lo <= cap <= hi


def _gemm_alignment(cap: tuple[int, int], is_half: bool) -> int:
    """sdp_utils.cpp minimum_gemm_alignment: tensor cores from sm80 (and sm7x in half), 128 bits
    a row; 4 from sm80 otherwise."""
    use_tc = cap[0] >= 8 or (cap[0] >= 7 and is_half)
    align = 4 if cap[0] >= 8 else 1
    if use_tc:
        align = max(align, 128 // (16 if is_half else 32))
    return align


def _heads_ok(q, k, v, enable_gqa: bool) -> bool:
    """check_batch_size_and_num_heads_dense (supports GQA/MQA): same batch; heads equal, or with
    enable_gqa q's heads a multiple of k's and k's equal v's."""
    if not (q.shape[0] == k.shape[0] == v.shape[0]):
        return False
    hq, hk, hv = q.shape[1], k.shape[1], v.shape[1]
    if hq == hk == hv:
        return True
    return enable_gqa and hk == hv and hk > 0 and hq % hk == 0


def select_sdpa(q, k, v, attn_mask=None, dropout_p: float = 0.0, is_causal: bool = False,
                enable_gqa: bool = False, target: CudaTarget = DEFAULT_TARGET,
                requires_grad: bool | None = None) -> str:
    """The backend `select_sdp_backend` picks on CUDA, in torch's default order flash,
    memory-efficient, math (cuDNN attention comes first only on sm90/sm100 with cuDNN newer than
    9.15, `check_prefer_cudnn_attention`, which graphcalc does not assume)."""
    cap = target.capability
    dense4 = all(isinstance(t, torch.Tensor) and t.dim() == 4 for t in (q, k, v))
    if not dense4:
        return MATH  # check_tensor_shapes: the fused kernels take (B, H, L, E) only
    if requires_grad is None:
        requires_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    nonzero = all(t.shape[-2] > 0 for t in (q, k, v))
    last_stride = all(t.stride(-1) == 1 or t.shape[-1] == 1 for t in (q, k, v))
    # check_last_dim_stride_equals_1_dense: on CUDA the mask's last stride must be 1 as well, or
    # no fused kernel runs (T5's permuted position bias, as transformers 5.17 passes it: math)
    if isinstance(attn_mask, torch.Tensor) and attn_mask.dim() > 0 and attn_mask.stride(-1) != 1:
        last_stride = False
    dq, dk, dv = q.shape[-1], k.shape[-1], v.shape[-1]
    backends = torch.backends.cuda
    # flash: can_use_flash_attention
    if (backends.flash_sdp_enabled() and attn_mask is None and dq == dk == dv and dq <= 256
            and _sm(cap, (8, 0), (12, 1))
            and not (requires_grad and (_sm(cap, (8, 6), (8, 9)) or _sm(cap, (12, 0), (12, 1)))
                     and not (dq <= 192 or (dropout_p == 0.0 and dq > 224)))
            and not (is_causal and q.shape[-2] != k.shape[-2])
            and q.dtype in (torch.float16, torch.bfloat16)
            and _heads_ok(q, k, v, enable_gqa) and nonzero and last_stride):
        return FLASH
    # memory-efficient: can_use_mem_efficient_attention
    is_half = q.dtype in (torch.float16, torch.bfloat16)
    align = _gemm_alignment(cap, is_half)
    dtypes = ((torch.float16, torch.float32, torch.bfloat16) if cap[0] >= 8
              else (torch.float16, torch.float32))
    if (backends.mem_efficient_sdp_enabled() and _sm(cap, (5, 0), (12, 1)) and dq == dk
            and dq % align == 0 and dv % align == 0 and dq > 0 and dv > 0
            and q.dtype in dtypes and _heads_ok(q, k, v, enable_gqa) and nonzero
            and last_stride):
        return EFFICIENT
    return MATH


def _bool_mask_to_float(mask, dtype):
    """attention.cpp convert_boolean_attn_mask: where(logical_not(mask), -inf, 0) in q's dtype."""
    if mask is None or mask.dtype != torch.bool:
        return mask
    return torch.where(mask.logical_not(), torch.tensor(-math.inf, dtype=dtype),
                       torch.tensor(0.0, dtype=dtype))


def _pad_last(t, multiple: int):
    """pad_last_dim<multiple, false>: a copy padded with zeros when the last dimension is not a
    multiple (flash's head size)."""
    d = t.shape[-1]
    if d % multiple == 0:
        return t
    return F.pad(t, (0, multiple - d % multiple))


def _efficient_mask(mask, q, k):
    """attention.cpp preprocess_mask: a bias whose strides are not multiples of 16 is padded
    (pad_bias: padded to 16 in the last dimension, then sliced back), then expanded to
    (B, H, L, S)."""
    align = 16
    aligned = all(s % align == 0 for s in mask.stride()[:-1]) and mask.stride(-1) in (0, 1)
    if not aligned:
        s = mask.shape[-1]
        pad = (align - s % align) % align
        mask = F.pad(mask, (0, pad))[..., :s]
    return mask.expand(q.shape[0], q.shape[1], q.shape[2], k.shape[2])


def run_sdpa(backend: str, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
             enable_gqa=False):
    """The ops CUDA's scaled_dot_product_attention runs for `backend` (attention.cpp)."""
    aten = torch.ops.aten
    attn_mask = _bool_mask_to_float(attn_mask, q.dtype)
    if backend == FLASH:
        og = q.shape[-1]
        sc = scale if scale is not None else 1.0 / math.sqrt(og)
        out = aten._scaled_dot_product_flash_attention(
            _pad_last(q, 8), _pad_last(k, 8), _pad_last(v, 8), dropout_p, is_causal, False,
            scale=sc)[0]
        return out[..., :og] if out.shape[-1] != og else out
    if backend == EFFICIENT:
        if enable_gqa and k.shape[1] != q.shape[1]:
            rep = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
        lse = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
        if attn_mask is not None:
            attn_mask = _efficient_mask(attn_mask, q, k)
        return aten._scaled_dot_product_efficient_attention(
            q, k, v, attn_mask, lse, dropout_p, is_causal, scale=scale)[0]
    return aten._scaled_dot_product_attention_math(
        q, k, v, attn_mask, dropout_p, is_causal, None, scale=scale, enable_gqa=enable_gqa)[0]


_SDPA_ARGS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale",
              "enable_gqa")


class SdpaAsOnCuda(TorchFunctionMode):
    """Runs every scaled_dot_product_attention with the kernel CUDA would pick; records the
    choices (backend -> calls) for the report. Calls reach it two ways: as the torch function a
    model calls (this mode), and through `torch.nn.functional`'s module attribute, which it
    replaces while active (nn.MultiheadAttention calls it from inside another torch function,
    where a mode does not see it)."""

    def __init__(self, target: CudaTarget = DEFAULT_TARGET):
        super().__init__()
        self.target = target
        self.chosen: dict[str, int] = {}
        self._original = None

    def __enter__(self):
        self._original = F.scaled_dot_product_attention
        F.scaled_dot_product_attention = self.sdpa
        return super().__enter__()

    def __exit__(self, *exc):
        F.scaled_dot_product_attention = self._original
        return super().__exit__(*exc)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is self._original or func is torch._C._nn.scaled_dot_product_attention:
            return self.sdpa(*args, **kwargs)
        return func(*args, **kwargs)

    def sdpa(self, *args, **kwargs):
        given = dict(zip(_SDPA_ARGS, args), **kwargs)
        q, k, v = given["query"], given["key"], given["value"]
        if not isinstance(q, FakeTensor):
            # Real tensors: an opaque layer's shape probes (graphcalc.fake.opaque) run a real copy
            # on the CPU, where CUDA's kernels do not exist; its shapes are the same.
            return self._original(*args, **kwargs)
        mask = given.get("attn_mask")
        dropout_p = float(given.get("dropout_p", 0.0))
        is_causal = bool(given.get("is_causal", False))
        gqa = bool(given.get("enable_gqa", False))
        if torch.is_autocast_enabled("cpu"):
            # Autocast casts SDPA's inputs to the low dtype before it picks a kernel (it is on
            # both devices' lower-precision lists).
            low = torch.get_autocast_dtype("cpu")
            q, k, v = (t.to(low) if t.is_floating_point() and t.dtype != torch.float64 else t
                       for t in (q, k, v))
            if mask is not None and mask.is_floating_point():
                mask = mask.to(low)
        backend = select_sdpa(q, k, v, mask, dropout_p, is_causal, gqa, self.target)
        self.chosen[backend] = self.chosen.get(backend, 0) + 1
        with torch.autocast("cpu", enabled=False):
            return run_sdpa(backend, q, k, v, mask, dropout_p, is_causal, given.get("scale"),
                            gqa)


# ---- dropout ----------------------------------------------------------------------------------


def _cuda_dropout(input, p, train):
    """aten/src/ATen/native/Dropout.cpp `dropout`: on CUDA (is_fused_kernel_acceptable: training,
    0 < p < 1, a non-empty input) it runs native_dropout, which saves a bool mask for backward;
    the CPU's _dropout_impl saves a noise tensor of the input's dtype (3 bytes an element more in
    fp32). Not training or p == 0: the input itself."""
    if train and 0 < p < 1 and input.numel() > 0:
        return torch.ops.aten.native_dropout(input, p, train)[0]
    if not train or p == 0 or input.numel() == 0:
        return input
    return input * torch.zeros((), dtype=input.dtype)  # p == 1


@contextlib.contextmanager
def cuda_dropout():
    """aten::dropout as CUDA runs it while the replay runs, also where C++ calls it (the math
    attention kernel); in-place, feature and alpha dropout take _dropout_impl on CUDA too."""
    lib = torch.library.Library("aten", "IMPL")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Overriding a previously registered kernel"
            lib.impl("dropout", _cuda_dropout, "CompositeImplicitAutograd")
        yield
    finally:
        lib._destroy()


# ---- autocast ---------------------------------------------------------------------------------

# aten/src/ATen/autocast_mode.h, the lists KERNEL_CUDA registers.
CUDA_LOWER = (
    "_convolution.deprecated", "_convolution", "conv1d", "conv2d", "conv3d", "conv_tbc",
    "conv_transpose1d", "conv_transpose2d.input", "conv_transpose3d.input", "convolution",
    "prelu", "addmm", "addmv", "addr", "matmul", "einsum", "mm", "mv", "linalg_vecdot", "linear",
    "addbmm", "baddbmm", "bmm", "chain_matmul", "linalg_multi_dot", "_thnn_fused_lstm_cell",
    "_thnn_fused_gru_cell", "lstm_cell", "gru_cell", "rnn_tanh_cell", "rnn_relu_cell",
    "_scaled_dot_product_flash_attention", "scaled_dot_product_attention")
CUDA_FP32 = (
    "acos", "asin", "cosh", "erfinv", "exp", "expm1", "log", "log10", "log2", "log1p",
    "reciprocal", "rsqrt", "sinh", "tan", "pow.Tensor_Scalar", "pow.Tensor_Tensor", "pow.Scalar",
    "softplus", "layer_norm", "native_layer_norm", "group_norm", "rms_norm",
    "frobenius_norm.dim",
    "nuclear_norm", "nuclear_norm.dim", "cosine_similarity", "poisson_nll_loss",
    "cosine_embedding_loss", "nll_loss", "nll_loss2d", "hinge_embedding_loss", "kl_div",
    "l1_loss", "smooth_l1_loss", "huber_loss", "mse_loss", "margin_ranking_loss",
    "multilabel_margin_loss", "soft_margin_loss", "triplet_margin_loss", "multi_margin_loss",
    "binary_cross_entropy_with_logits", "dist", "pdist", "cdist", "renorm", "logsumexp",
    "upsample_nearest1d", "_upsample_nearest_exact1d", "upsample_nearest2d",
    "_upsample_nearest_exact2d", "upsample_nearest3d", "_upsample_nearest_exact3d",
    "upsample_linear1d", "upsample_bilinear2d", "_upsample_bilinear2d_aa",
    "upsample_trilinear3d", "upsample_bicubic2d", "_upsample_bicubic2d_aa")
CUDA_FP32_SET_OPT_DTYPE = (
    "prod", "prod.dim_int", "softmax.int", "log_softmax.int", "cumprod", "cumsum",
    "linalg_vector_norm", "linalg_matrix_norm", "linalg_matrix_norm.str_ord", "sum",
    "sum.dim_IntList")
CUDA_PROMOTE = ("addcdiv", "addcmul", "atan2", "bilinear", "cross", "dot", "vdot", "grid_sampler",
                "index_put", "tensordot", "scatter_add")
# AutocastCPU entries (autocast_mode.cpp) CUDA does not have: they fall through under CUDA.
CPU_ONLY = (
    "conv1d.padding", "conv2d.padding", "conv3d.padding", "_addmm_activation", "mkldnn_rnn_layer",
    "_native_multi_head_attention", "avg_pool3d", "binary_cross_entropy", "polar", "quantile",
    "quantile.scalar", "nanquantile", "nanquantile.scalar", "stft", "stft.center",
    "grid_sampler_2d", "_grid_sampler_2d_cpu_fallback", "grid_sampler_3d", "trace",
    "view_as_complex", "max_pool3d", "max_unpool2d", "max_unpool3d", "adaptive_avg_pool3d",
    "reflection_pad1d", "reflection_pad2d", "replication_pad1d", "replication_pad2d",
    "replication_pad3d", "cross_entropy_loss", "ctc_loss.IntList", "ctc_loss.Tensor",
    "fractional_max_pool2d", "fractional_max_pool3d", "adaptive_max_pool3d", "stack", "cat",
    "index_copy")
_KEY = torch._C.DispatchKey.AutocastCPU


def _eligible(t) -> bool:
    """autocast_mode.h is_eligible: a defined floating tensor of the device, not float64."""
    return (isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != torch.float64
            and t.device.type == "cpu")


def _cast(x, dtype):
    if _eligible(x) and x.dtype != dtype:
        return x.to(dtype)
    if isinstance(x, (list, tuple)):
        return type(x)(_cast(y, dtype) for y in x)
    return x


def _op(name: str):
    base, _, overload = name.partition(".")
    packet = getattr(torch.ops.aten, base)
    return getattr(packet, overload or "default")


def _excluded():
    return torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(_KEY))


def _lower(op, low):
    def kernel(*args, **kwargs):
        with _excluded():
            return op(*_cast(args, low), **{k: _cast(v, low) for k, v in kwargs.items()})
    return kernel


def _fp32(op):
    def kernel(*args, **kwargs):
        with _excluded():
            return op(*_cast(args, torch.float32),
                      **{k: _cast(v, torch.float32) for k, v in kwargs.items()})
    return kernel


def _set_opt_dtype(op):
    """fp32_set_opt_dtype (autocast_mode.h): when the first argument is an eligible tensor, the
    op runs with its optional `dtype` set to float32 unless the caller gave one (set_opt_dtype
    keeps a given dtype); the inputs are not cast. The dtype may come positionally
    (`log_softmax(x, 1, None)` is how F.cross_entropy calls it) or as a keyword: the op's schema
    says where it sits."""
    names = [a.name for a in op._schema.arguments]
    at = names.index("dtype")

    def kernel(*args, **kwargs):
        with _excluded():
            if args and _eligible(args[0]):
                if len(args) > at:
                    if args[at] is None:
                        args = args[:at] + (torch.float32,) + args[at + 1:]
                elif kwargs.get("dtype") is None:
                    kwargs = dict(kwargs, dtype=torch.float32)
            return op(*args, **kwargs)
    return kernel


def _promote(op):
    def kernel(*args, **kwargs):
        tensors = [t for t in torch.utils._pytree.tree_leaves((args, kwargs)) if _eligible(t)]
        with _excluded():
            if tensors:
                widest = tensors[0].dtype
                for t in tensors[1:]:
                    widest = torch.promote_types(widest, t.dtype)
                args = _cast(args, widest)
                kwargs = {k: _cast(v, widest) for k, v in kwargs.items()}
            return op(*args, **kwargs)
    return kernel


@contextlib.contextmanager
def cuda_autocast(low: torch.dtype):
    """CUDA's autocast policies on the AutocastCPU key while the replay runs (torch.autocast('cpu')
    then casts as torch.autocast('cuda') would); the CPU's own come back on exit."""
    lib = torch.library.Library("aten", "IMPL")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Overriding a previously registered kernel"
            for name in CUDA_LOWER:
                lib.impl(name, _lower(_op(name), low), "AutocastCPU")
            for name in CUDA_FP32:
                lib.impl(name, _fp32(_op(name)), "AutocastCPU")
            for name in CUDA_FP32_SET_OPT_DTYPE:
                lib.impl(name, _set_opt_dtype(_op(name)), "AutocastCPU")
            for name in CUDA_PROMOTE:
                lib.impl(name, _promote(_op(name)), "AutocastCPU")
            for name in CPU_ONLY:
                lib.impl(name, torch.library.fallthrough_kernel, "AutocastCPU")
        yield
    finally:
        lib._destroy()


# ---- the cuBLAS workspace ---------------------------------------------------------------------

# Ops that call cuBLAS (at::cuda::blas gemm/gemv/dot): the first of each thread takes a workspace.
CUBLAS_OPS = frozenset({
    "aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addbmm", "aten::mv",
    "aten::addmv", "aten::addr", "aten::dot", "aten::vdot", "aten::_addmm_activation",
    "aten::_grouped_mm", "aten::_int_mm"})


def cublas_thread(phase: str) -> str:
    """The thread whose cuBLAS handle a phase's matmuls use: autograd's device thread in
    backward, the calling thread otherwise."""
    return "backward" if phase == "backward" else "main"


# ---- the cuBLASLt workspace -------------------------------------------------------------------

CUBLASLT_WORKSPACE_BYTES = 1024 * 1024  # CUBLASLT_WORKSPACE_SIZE's default, 1024 KiB


def uses_cublaslt(func, args, kwargs) -> bool:
    """Whether a CUDA op runs through cuBLASLt, which takes its own workspace (torch 2.11,
    aten/src/ATen/cuda/CUDABlas.cpp `CublasLtWorkspace`: gemm_and_bias, scaled_gemm): an addmm
    whose bias is one row of the result (Blas.cpp `isInputCompliesAddmmCudaLt`: beta 1, a 1-D
    contiguous bias of the output's width, a float type, both matrices larger than 1 in both
    dimensions), `_addmm_activation`, and `_scaled_mm`. Plain mm/bmm go to cuBLAS unless the
    preferred BLAS library is set to cuBLASLt, which graphcalc does not assume."""
    name = getattr(func, "_overloadpacket", None)
    name = name.__name__ if name is not None else ""
    if name in ("_addmm_activation", "_scaled_mm"):
        return True
    if name != "addmm" or len(args) < 3:
        return False
    bias, a, b = args[0], args[1], args[2]
    beta = kwargs.get("beta", args[3] if len(args) > 3 else 1)
    return (isinstance(bias, torch.Tensor) and isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor) and beta == 1 and bias.dim() == 1
            and bias.is_contiguous() and a.dim() == 2 and b.dim() == 2
            and bias.shape[0] == b.shape[1]
            and bias.dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16)
            and min(a.shape[0], a.shape[1], b.shape[1]) > 1)


# ---- cuDNN's convolution workspaces -----------------------------------------------------------

# ESTIMATED, not derived: cuDNN picks a convolution algorithm at run time (with
# torch.backends.cudnn.benchmark False, its heuristics' first choice) and allocates that
# algorithm's workspace through the caching allocator for the call, freeing it at once. Which
# algorithm it picks is not in torch's source. The rule below was fitted on 888 convolution calls
# of ResNet-18 and ResNet-50 (fp32 and bf16 autocast) and seed_cnn on an H200 with cuDNN 9.19
# (tests/data/h200/streams.tgz): the workspace holds reordered copies of the input, the output
# and (for kernels larger than 1x1) the weight, channels padded to 8 in half precision; the
# weight gradient adds a split-K accumulator. It is exact to the 512-byte block for 131 of 148
# forward and 145 of 148 backward-data calls, within 8.25 MiB for 145 of 148 weight-gradient
# calls; where it misses by more, it over-estimates (stems that pick a workspace-free algorithm),
# save one backward 1x1 convolution of ResNet-50 (46.5 MiB low). Other GPUs and cuDNN versions
# may pick other algorithms: the report says its figure rests on this estimate, and the verdict
# keeps a margin for it (graphcalc.gpu.gpu_fit).
SPLIT_K_CAP = 8.25 * 2**20


def _conv_parts(x_shape, w_shape, y_shape, dtype: torch.dtype):
    half = dtype in (torch.float16, torch.bfloat16)
    size = 2 if half else 4
    pad = (lambda c: -(-c // 8) * 8) if half else (lambda c: c)
    n, cin = x_shape[0], pad(x_shape[1])
    cout = pad(w_shape[0])
    kernel = math.prod(w_shape[2:])
    x = n * cin * math.prod(x_shape[2:]) * size
    y = n * cout * math.prod(y_shape[2:]) * size
    w = cout * cin * kernel * size
    acc = cout * cin * kernel * 4
    return half, x, y, w, acc, kernel


def _pointwise(w_shape, stride, y_shape, least: int) -> bool:
    """A 1x1 stride-1 convolution on a large enough output: cuDNN runs it as a GEMM on the
    tensors as they are (no workspace; a weight gradient of 64 fp32 weight-sized buffers)."""
    return (math.prod(w_shape[2:]) == 1 and all(s == 1 for s in stride)
            and min(y_shape[2:], default=0) >= least)


def conv_workspace(func, args, out) -> int:
    """The bytes of cuDNN's workspace a CUDA convolution call takes and frees (the estimate
    above); 0 for ops other than a 2-D or 3-D, non-transposed, ungrouped convolution."""
    name = getattr(func, "_overloadpacket", None)
    name = name.__name__ if name is not None else ""
    if name == "convolution":
        x, w = args[0], args[1]
        stride, transposed, groups = args[3], args[6], args[8]
        y = out
        if not isinstance(y, torch.Tensor) or transposed or groups != 1 or x.dim() < 4:
            return 0
        half, xb, yb, wb, _, kernel = _conv_parts(x.shape, w.shape, y.shape, x.dtype)
        if _pointwise(w.shape, stride, y.shape, 14):
            return 0
        return xb + yb + (wb if kernel > 1 else 0)
    if name == "convolution_backward":
        grad_out, x, w = args[0], args[1], args[2]
        stride, transposed, groups, mask = args[4], args[7], args[9], args[10]
        if transposed or groups != 1 or x.dim() < 4:
            return 0
        half, xb, yb, wb, acc, kernel = _conv_parts(x.shape, w.shape, grad_out.shape,
                                                    x.dtype)
        data = weight = 0
        if mask[0]:
            data = 0 if _pointwise(w.shape, stride, grad_out.shape, 14) \
                else xb + yb + (wb if kernel > 1 else 0)
        if mask[1]:
            if _pointwise(w.shape, stride, grad_out.shape, 28 if half else 14):
                weight = 64 * acc
            else:
                weight = xb + yb + (int(wb + min(14 * acc, SPLIT_K_CAP)) if kernel > 1 else 0)
        return max(data, weight)
    return 0
