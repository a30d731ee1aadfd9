"""The CUDA step replayed on CPU fake tensors (graphcalc.gpu.cuda), each rule from torch's source and
its figure derived by hand: which attention kernel CUDA picks and what it saves, CUDA's autocast
lists, the cuBLAS workspaces, the fused optimizer. (Real-GPU figures: bench/accuracy.py
--device cuda, on a machine with one.)"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from graphcalc.gpu import cuda
from graphcalc.commands.analyze import analyze_module
from graphcalc.options import Options

A100, T4, RTX3090, H100 = (cuda.CudaTarget((8, 0), "A100"), cuda.CudaTarget((7, 5), "T4"),
                           cuda.CudaTarget((8, 6), "RTX 3090"), cuda.CudaTarget((9, 0), "H100"))


def _qkv(b=2, h=4, lq=16, lk=16, d=64, dtype=torch.bfloat16, grad=True, hk=None):
    q = torch.randn(b, h, lq, d, dtype=dtype, requires_grad=grad)
    k = torch.randn(b, hk or h, lk, d, dtype=dtype, requires_grad=grad)
    v = torch.randn(b, hk or h, lk, d, dtype=dtype, requires_grad=grad)
    return q, k, v


@pytest.mark.parametrize("case,target,expected", [
    (dict(), A100, "flash"),  # bf16, no mask, head 64: flash on sm80-sm121
    (dict(dtype=torch.float32), A100, "efficient"),  # flash takes fp16/bf16 only
    (dict(), T4, "math"),  # sm75: no flash; memory-efficient below sm80 takes fp16/fp32 only
    (dict(dtype=torch.float16), T4, "efficient"),
    (dict(mask=True), A100, "efficient"),  # check_for_attn_mask: flash takes no mask
    (dict(causal=True, lq=8), A100, "efficient"),  # flash: no causal with Lq != Lk
    (dict(d=200), RTX3090, "efficient"),  # sm86 training, head in (192, 224]: not flash
    (dict(d=200), A100, "flash"),
    (dict(d=260, dtype=torch.float16), A100, "math"),  # > 256 for flash; 260 % 8 for efficient
    (dict(d=260, dtype=torch.float32), A100, "efficient"),  # fp32 alignment is 4
    (dict(hk=2), A100, "math"),  # heads differ without enable_gqa
    (dict(hk=2, gqa=True), A100, "flash"),
])
def test_attention_kernel_chosen_as_cuda_chooses(case, target, expected):
    """sdp_utils.cpp select_sdp_backend: flash, then memory-efficient, then math."""
    with FakeTensorMode():
        q, k, v = _qkv(lq=case.get("lq", 16), d=case.get("d", 64),
                       dtype=case.get("dtype", torch.bfloat16), hk=case.get("hk"))
        mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool) if case.get("mask") else None
        got = cuda.select_sdpa(q, k, v, mask, 0.0, case.get("causal", False),
                               case.get("gqa", False), target)
    assert got == expected


def _saved_bytes(fn, *tensors) -> int:
    """Bytes of the distinct storages autograd saves for backward while fn runs, less inputs."""
    inputs = {t.untyped_storage()._cdata for t in tensors}
    seen = {}

    def pack(t):
        st = t.untyped_storage()
        if st._cdata not in inputs:
            seen[st._cdata] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(seen.values())


def test_what_each_attention_kernel_saves():
    """Flash saves its output and an fp32 logsumexp (B, H, L); memory-efficient its output and an
    fp32 logsumexp padded to a multiple of 32 rows (kAlignLSE, _meta_registrations.py
    meta__scaled_dot_product_efficient_attention). B=2, H=4, L=40, E=64."""
    with FakeTensorMode():
        q, k, v = _qkv(lq=40, lk=40)
        mode = cuda.SdpaAsOnCuda(A100)
        with mode:
            _, flash = _saved_bytes(lambda: F.scaled_dot_product_attention(q, k, v), q, k, v)
        assert mode.chosen == {"flash": 1}
        # output 2*4*40*64 bf16 = 40,960 B; logsumexp 2*4*40 fp32 = 1,280 B; the philox seed
        # (2 x uint64) and offset (a uint64 scalar)
        assert flash == 40_960 + 1_280 + 16 + 8
        q, k, v = _qkv(lq=40, lk=40, dtype=torch.float32)
        with cuda.SdpaAsOnCuda(A100):
            _, eff = _saved_bytes(lambda: F.scaled_dot_product_attention(q, k, v), q, k, v)
        # output 2*4*40*64 fp32 = 81,920 B; logsumexp 2*4*64 (40 -> 64 rows) fp32 = 2,048 B; seed
        # and offset (int64 scalars)
        assert eff == 81_920 + 2_048 + 16


def test_cuda_autocast_lists_replace_the_cpus():
    """Under CUDA autocast layer_norm and softmax run in fp32 (AT_FORALL_FP32,
    AT_FORALL_FP32_SET_OPT_DTYPE); under the CPU's they stay bf16. Linear is bf16 on both. The CPU's
    lists come back after."""
    def dtypes():
        with FakeTensorMode():
            lin, ln = nn.Linear(8, 8), nn.LayerNorm(8)
            x = torch.randn(4, 8)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                y = lin(x)
                return y.dtype, ln(y).dtype, torch.softmax(y, -1).dtype, y.exp().dtype

    bf, fp = torch.bfloat16, torch.float32
    assert dtypes() == (bf, bf, bf, bf)
    with cuda.cuda_autocast(torch.bfloat16):
        assert dtypes() == (bf, fp, fp, fp)
    assert dtypes() == (bf, bf, bf, bf)


class _MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(64, 256), nn.Linear(256, 10)

    def forward(self, x, y=None):
        return self.fc2(torch.relu(self.fc1(x)))


def _mlp_inputs(b):
    return torch.randn(b, 64), torch.randint(0, 10, (b,))


def _peak(options):
    torch.manual_seed(0)
    return analyze_module(_MLP(), _mlp_inputs, options,
                          loss_fn=lambda out, x, y: F.cross_entropy(out, y)).memory


@pytest.mark.parametrize("optim", ["sgd", "adam"])
def test_cublas_workspaces_are_in_a_cuda_peak(optim):
    """The first matmul of the forward thread and the first of autograd's backward thread each
    take a workspace of getChosenWorkspaceSize() bytes (CublasHandlePool.cpp): 8,519,680 B on an
    sm80 GPU; both are held at a peak in backward or the optimizer step."""
    m = _peak(Options(batch=4, optimizer=optim, device="cuda"))
    # plus the cuBLASLt workspace (1 MiB) of the forward thread's first biased Linear
    assert m.breakdown.workspace == 2 * 8_519_680 + 2**20
    assert m.breakdown.total == m.peak_bytes
    assert m.attention_kernels == ()
    assert _peak(Options(batch=4, optimizer=optim)).breakdown.workspace == 0


def test_cuda_workspace_size_by_gpu():
    assert A100.cublas_workspace_bytes == 4096 * 1024 * 2 + 16 * 1024 * 8 == 8_519_680
    assert H100.cublas_workspace_bytes == 32 * 1024 * 1024


def test_fused_optimizer_has_no_foreach_temporaries():
    """Adam's foreach step makes temporaries the size of the parameters (the denominators, the
    bias-corrected step); the fused kernel updates in place: its peak in step() is lower."""
    foreach = _peak(Options(batch=4, optimizer="adam", device="cuda"))
    fused = _peak(Options(batch=4, optimizer="adam", device="cuda", fused=True))
    assert fused.optimizer_temporary_bytes < foreach.optimizer_temporary_bytes


def test_a_transformer_under_cuda_autocast_runs_flash():
    """nn.TransformerEncoderLayer's attention goes through scaled_dot_product_attention (no
    weights asked): under bf16 autocast on an sm80 GPU it runs flash; in fp32 memory-efficient."""
    layer = nn.TransformerEncoderLayer(64, 4, 128, batch_first=True, dropout=0.0)

    def inputs(b):
        return (torch.randn(b, 16, 64),)

    bf16 = analyze_module(layer, inputs, Options(batch=2, device="cuda", amp="bf16"))
    fp32 = analyze_module(layer, inputs, Options(batch=2, device="cuda"))
    assert bf16.memory.attention_kernels == ("flash",)
    assert fp32.memory.attention_kernels == ("efficient",)
    assert "attention by flash" in str(bf16)


def test_fused_on_the_command_line(tmp_path):
    """`--fused` reaches the options (the JSON config says so); a fused RMSprop does not exist."""
    import json

    from typer.testing import CliRunner

    from conftest import ROOT
    from graphcalc_cli.app import app

    sample = str(ROOT / "samples" / "mnist_mlp.py")
    out = CliRunner().invoke(app, ["analyze", sample, "--fused", "--format", "json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["config"]["fused"] is True
    bad = CliRunner().invoke(app, ["analyze", sample, "--fused", "--optim", "rmsprop"])
    assert bad.exit_code != 0 and "no fused rmsprop" in bad.output


def test_adam_step_counters_are_cpu_tensors_on_cuda():
    """torch.optim.Adam (foreach, not capturable) keeps each parameter's `step` as
    `torch.tensor(0.0)`, a CPU tensor, on a CUDA run (adam.py _init_group): not in the GPU's
    memory. Four parameter tensors: their four 512-byte blocks are not counted; the fused kernels
    keep them on the device (`torch.zeros((), device=p.device)`), counted."""
    cpu_steps = _peak(Options(batch=4, optimizer="adam", device="cuda")).optimizer_state_bytes
    moments = 2 * sum(-(-n * 4 // 512) * 512 for n in (64 * 256, 256, 256 * 10, 10))
    assert cpu_steps == moments
    fused = _peak(Options(batch=4, optimizer="adam", device="cuda", fused=True))
    assert fused.optimizer_state_bytes == moments + 4 * 512


def test_autocast_lists_are_the_installed_torch_s():
    """graphcalc.gpu.cuda's CUDA autocast lists equal aten/src/ATen/autocast_mode.h's macros as the
    installed torch ships them (a `vdot` missing from the promote list broke spectral norm)."""
    import re
    from pathlib import Path

    header = Path(torch.__file__).parent / "include" / "ATen" / "autocast_mode.h"
    if not header.exists():
        pytest.skip("this torch ships no ATen headers")
    text = header.read_text()

    def macro(name):
        body = re.search(r"#define " + name + r"\(_\)(.*?)\n\n", text, re.S).group(1)
        names = set()
        for item in re.findall(r"_\(([^)]*)\)", body):
            parts = [p.strip() for p in item.split(",")]
            names.add(parts[0] if len(parts) == 1 or not parts[1] else f"{parts[0]}.{parts[1]}")
        return names

    assert macro("AT_FORALL_LOWER_PRECISION_FP") == set(cuda.CUDA_LOWER)
    assert macro("AT_FORALL_FP32") == set(cuda.CUDA_FP32)
    assert macro("AT_FORALL_FP32_SET_OPT_DTYPE") == set(cuda.CUDA_FP32_SET_OPT_DTYPE)
    assert macro("AT_FORALL_PROMOTE") == set(cuda.CUDA_PROMOTE)
