"""Shared helpers: load a sample, and the references figures are checked against.

The references are independent of graphcalc's own arithmetic: parameter counts from
`sum(p.numel())` over a really built model, FLOPs from `torch.utils.flop_counter.FlopCounterMode`
on a real CPU step, memory from a real CPU step (`graphcalc.measure`).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.utils.flop_counter as fc

from graphcalc import loader
from graphcalc.replay import call_model, compute_loss

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
aten = torch.ops.aten


def sample(name: str, factory: str | None = None) -> loader.ModelSource:
    spec = str(SAMPLES / f"{name}.py") + (f":{factory}" if factory else "")
    return loader.load(spec)


def real_model(src: loader.ModelSource, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return loader.build_model(src, device=None)


def unique_param_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def _raw(f):
    """Hand FlopCounterMode one of its own (already shape-wrapped) formulas as it is."""

    def g(*args, out_val=None, **kwargs):
        return f(*args, out_val=out_val, **kwargs)

    g._get_raw = True
    return g


@_raw
def _conv_backward_fixed(grad_out, x, w, bias, stride, padding, dilation, transposed,
                         output_padding, groups, output_mask, out_val=None):
    """torch's own conv backward formula with pytorch PR #183405 applied: torch 2.13 counts the
    weight gradient of a grouped convolution `groups` times too many (see ANCHORS.md)."""
    args = (grad_out, x, w, bias, stride, padding, dilation, transposed, output_padding, groups)
    grad_input = fc.conv_backward_flop(*args, [output_mask[0], False, False], out_val=out_val)
    grad_weight = fc.conv_backward_flop(*args, [False, output_mask[1], False], out_val=out_val)
    return grad_input + grad_weight // groups


# FlopCounterMode's known gaps, filled with torch's own formulas: the CPU SDPA kernels have no
# entry in torch 2.13's registry (pytorch #195460), and grouped conv backward is over-counted.
REFERENCE_CORRECTIONS = {
    aten._scaled_dot_product_flash_attention_for_cpu: _raw(fc.sdpa_flop),
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _raw(fc.sdpa_backward_flop),
    aten.convolution_backward: _conv_backward_fixed,
}


def reference_flops(model, inputs, loss_fn, corrected: bool = True) -> tuple[int, int]:
    """(forward+loss FLOPs, backward FLOPs) of a real CPU step, by FlopCounterMode."""
    model.train()
    mapping = REFERENCE_CORRECTIONS if corrected else None
    with fc.FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        output = call_model(model, inputs)
        loss = compute_loss(loss_fn, output, inputs)
        forward = counter.get_total_flops()
        loss.backward()
    return forward, counter.get_total_flops() - forward


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
