"""Each FLOP formula against hand arithmetic, and the three-way rule: counted, zero, or unknown."""

import torch
from torch import nn

from graphcalc import flops
from graphcalc.commands.analyze import analyze_module
from graphcalc.options import Options


def _report(model, shape, batch=2, **kw):
    return analyze_module(model, lambda b: torch.randn(b, *shape), Options(batch=batch, **kw))


def test_linear_counts_two_flops_per_mac_and_bias_adds_separately():
    # Linear(784, 128) at batch 4: 4*784*128 = 401,408 MACs; 4*128 = 512 bias adds.
    r = _report(nn.Linear(784, 128), (784,), batch=4)
    assert r.totals.macs_forward == 401_408
    assert r.totals.flops_forward == 802_816
    assert r.totals.mult_adds_with_bias == 401_408 + 512


def test_grouped_conv_backward_counts_the_weight_gradient_once():
    # ANCHORS.md: Conv2d(8, 8, 3, groups=8) on (2, 8, 10, 10): 2*8*8*8*9 = 9,216 MACs forward,
    # 18,432 FLOPs; the weight gradient redoes each MAC once: 18,432 FLOPs (torch 2.13 says 147,456).
    # The input is the batch (no grad needed), so backward is the weight gradient alone.
    r = _report(nn.Conv2d(8, 8, 3, groups=8, bias=False), (8, 10, 10))
    assert r.totals.flops_forward == 18_432
    assert r.totals.flops_backward == 18_432


def test_attention_on_cpu_is_counted_not_zero():
    # SDPA (B=2, H=4, S=16, D=8): q@k^T and p@v, 2*4*16*16*8 MACs each = 16,384 -> 65,536 FLOPs.
    class Attn(nn.Module):
        def forward(self, x):
            return nn.functional.scaled_dot_product_attention(x, x, x)

    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(8, 8, bias=False)
            self.attn = Attn()

        def forward(self, x):
            return self.attn(self.proj(x))

    r = _report(Wrapped(), (4, 16, 8))
    attn = next(layer for layer in r.layers if layer.name == "attn")
    assert attn.flops_forward == 65_536
    # backward: five products of 8,192 MACs each -> 81,920 MACs = 163,840 FLOPs.
    assert attn.flops_backward == 163_840


def test_every_op_is_counted_zero_or_unknown():
    aten = torch.ops.aten
    assert flops.classify(aten.mm.default) == "counted"
    assert flops.classify(aten.relu.default) == "zero"
    assert flops.classify(aten.native_layer_norm.default) == "zero"
    assert flops.classify(aten.linalg_svd.default) == "unknown"


def test_an_op_without_formula_is_reported_unknown_not_zero():
    class Solve(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(4, 4))

        def forward(self, x):
            return torch.linalg.svd(x @ self.w).S

    r = _report(Solve(), (4, 4))
    assert not r.complete
    assert any("svd" in op for op, _ in r.unknown_ops)
    assert r.to_dict()["complete"] is False


def test_duplicate_registration_is_an_error():
    import pytest

    with pytest.raises(RuntimeError):
        flops.register("aten::mm")(lambda *a, **k: flops.OpCost(0))
