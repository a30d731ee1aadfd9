"""Property tests: random models and batch sizes against a real CPU step of the same model.

hypothesis draws a model (MLP; CNN with random kernel, stride, padding, dilation and groups;
residual blocks; attention blocks; norms; embeddings), a batch size and an optimizer. For each:
- the analysis does not crash;
- parameters equal sum(p.numel()) over the really built model;
- forward and backward FLOPs equal FlopCounterMode on a real CPU step of the same model;
- peak training memory equals the live tensor bytes of a real CPU step, byte for byte (the memory
  model's CPU claim; see tests/test_memory.py).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn

from graphcalc.commands.analyze import analyze_module
from graphcalc.commands.measure import measure_step
from graphcalc.options import Options

from conftest import reference_flops, unique_param_count

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU,
               "sigmoid": nn.Sigmoid}


def _check(build, make_inputs, batch: int, optim: str):
    """Analyse a fresh build, then run the same model for real, and compare every figure."""
    options = Options(batch=batch, optimizer=optim, steps=2)
    torch.manual_seed(0)
    report = analyze_module(build(), make_inputs, options)

    torch.manual_seed(0)
    model = build()
    assert report.totals.params == unique_param_count(model)

    torch.manual_seed(1)
    forward, backward = reference_flops(model, make_inputs(batch), None)
    assert report.totals.flops_forward == forward
    assert report.totals.flops_backward == backward
    assert not report.unknown_ops

    torch.manual_seed(0)
    measured = measure_step(build(), make_inputs, options)
    assert report.memory.peak_bytes == measured.peak_bytes


batches = st.integers(1, 6)
optims = st.sampled_from(["sgd", "adam", "momentum"])


# --- MLPs with norms and activations -------------------------------------------------------------

@st.composite
def mlps(draw):
    width_in = draw(st.integers(1, 48))
    widths = draw(st.lists(st.integers(1, 48), min_size=1, max_size=4))
    act = draw(st.sampled_from(sorted(ACTIVATIONS)))
    norm = draw(st.sampled_from([None, "layer", "batch"]))
    bias = draw(st.booleans())
    return width_in, widths, act, norm, bias


@pytest.mark.slow
@SETTINGS
@given(mlps(), batches, optims)
def test_random_mlps(plan, batch, optim):
    width_in, widths, act, norm, bias = plan
    assume(not (norm == "batch" and batch == 1))  # BatchNorm refuses one value per channel

    def build():
        layers, prev = [], width_in
        for w in widths:
            layers.append(nn.Linear(prev, w, bias=bias))
            if norm == "layer":
                layers.append(nn.LayerNorm(w))
            elif norm == "batch":
                layers.append(nn.BatchNorm1d(w))
            layers.append(ACTIVATIONS[act]())
            prev = w
        return nn.Sequential(*layers)

    _check(build, lambda b: torch.randn(b, width_in), batch, optim)


# --- CNNs: kernel, stride, padding, dilation, groups ---------------------------------------------

def _conv_out(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


@st.composite
def cnns(draw):
    channels = draw(st.integers(1, 4)) * draw(st.sampled_from([1, 2, 3]))
    size = draw(st.integers(6, 20))
    convs = []
    c, h = channels, size
    for _ in range(draw(st.integers(1, 3))):
        groups = draw(st.sampled_from([g for g in (1, 2, 3, 4) if c % g == 0]))
        out = groups * draw(st.integers(1, 4))
        k = draw(st.integers(1, 5))
        s = draw(st.integers(1, 3))
        p = draw(st.integers(0, 2))
        d = draw(st.integers(1, 2))
        h2 = _conv_out(h, k, s, p, d)
        assume(h2 >= 1)
        norm = draw(st.sampled_from([None, "batch", "group"]))
        pool = draw(st.sampled_from([None, "max", "avg"]))
        if pool and h2 < 2:
            pool = None
        convs.append((c, out, k, s, p, d, groups, norm, pool, draw(st.booleans())))
        c, h = out, (h2 // 2 if pool else h2)
    classes = draw(st.integers(1, 10))
    return channels, size, convs, classes, c * h * h


@pytest.mark.slow
@SETTINGS
@given(cnns(), batches, optims)
def test_random_cnns(plan, batch, optim):
    channels, size, convs, classes, flat = plan

    def build():
        layers = []
        for c_in, c_out, k, s, p, d, groups, norm, pool, bias in convs:
            layers.append(nn.Conv2d(c_in, c_out, k, stride=s, padding=p, dilation=d,
                                    groups=groups, bias=bias))
            if norm == "batch":
                layers.append(nn.BatchNorm2d(c_out))
            elif norm == "group":
                layers.append(nn.GroupNorm(1, c_out))
            layers.append(nn.ReLU())
            if pool == "max":
                layers.append(nn.MaxPool2d(2))
            elif pool == "avg":
                layers.append(nn.AvgPool2d(2))
        return nn.Sequential(*layers, nn.Flatten(), nn.Linear(flat, classes))

    needs_stats = any(norm == "batch" for *_, norm, _, _ in convs)
    _check(build, lambda b: torch.randn(b, channels, size, size),
           max(batch, 2) if needs_stats else batch, optim)


# --- residual blocks -----------------------------------------------------------------------------

class Residual(nn.Module):
    def __init__(self, channels, k, norm):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, k, padding=k // 2, bias=not norm)
        self.bn1 = nn.BatchNorm2d(channels) if norm else nn.Identity()
        self.conv2 = nn.Conv2d(channels, channels, k, padding=k // 2, bias=not norm)
        self.bn2 = nn.BatchNorm2d(channels) if norm else nn.Identity()

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(y)))


@pytest.mark.slow
@SETTINGS
@given(st.integers(1, 6), st.sampled_from([1, 3, 5]), st.booleans(), st.integers(1, 3),
       st.integers(4, 12), batches, optims)
def test_random_residual_stacks(channels, k, norm, blocks, size, batch, optim):
    def build():
        return nn.Sequential(*[Residual(channels, k, norm) for _ in range(blocks)],
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 3))

    _check(build, lambda b: torch.randn(b, channels, size, size), max(batch, 2), optim)


# --- attention blocks with embeddings ------------------------------------------------------------

class Block(nn.Module):
    def __init__(self, dim, heads, kind, norm):
        super().__init__()
        self.norm = nn.LayerNorm(dim) if norm == "layer" else nn.RMSNorm(dim)
        self.kind, self.heads = kind, heads
        if kind == "mha":
            self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        else:
            self.qkv = nn.Linear(dim, 3 * dim)
            self.proj = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        h = self.norm(x)
        if self.kind == "mha":
            a = self.attn(h, h, h, need_weights=False)[0]
        else:
            b, t, d = h.shape
            q, k, v = self.qkv(h).view(b, t, 3, self.heads, d // self.heads).transpose(1, 3) \
                .unbind(2)
            a = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=self.kind == "causal")
            a = self.proj(a.transpose(1, 2).reshape(b, t, d))
        x = x + a
        return x + self.mlp(x)


@pytest.mark.slow
@SETTINGS
@given(st.integers(2, 50), st.sampled_from([1, 2, 4]), st.integers(1, 4),
       st.sampled_from(["mha", "sdpa", "causal"]), st.sampled_from(["layer", "rms"]),
       st.integers(1, 2), st.integers(1, 12), st.booleans(), batches, optims)
def test_random_attention_models(vocab, heads, head_dim, kind, norm, depth, seq, tied, batch,
                                 optim):
    dim = heads * head_dim * 2

    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(vocab, dim)
            self.pos = nn.Embedding(seq, dim)
            self.blocks = nn.Sequential(*[Block(dim, heads, kind, norm) for _ in range(depth)])
            self.head = nn.Linear(dim, vocab, bias=False)
            if tied:
                self.head.weight = self.tok.weight

        def forward(self, idx):
            x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
            return self.head(self.blocks(x))

    _check(LM, lambda b: torch.randint(0, vocab, (b, seq)), batch, optim)
