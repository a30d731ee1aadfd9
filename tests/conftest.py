"""Shared helpers: load a sample, and the references figures are checked against.

The references are independent of graphcalc's own arithmetic: parameter counts from
`sum(p.numel())` over a really built model, FLOPs from `torch.utils.flop_counter.FlopCounterMode`
on a real CPU step, memory from a real CPU step (`graphcalc.measure`).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from graphcalc import loader
from graphcalc.measure import REFERENCE_CORRECTIONS
from graphcalc.replay import call_model, compute_loss

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"


def sample(name: str, factory: str | None = None) -> loader.ModelSource:
    spec = str(SAMPLES / f"{name}.py") + (f":{factory}" if factory else "")
    return loader.load(spec)


def real_model(src: loader.ModelSource, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return loader.build_model(src, device=None)


def unique_param_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def reference_flops(model, inputs, loss_fn, corrected: bool = True) -> tuple[int, int]:
    """(forward+loss FLOPs, backward FLOPs) of a real CPU step, by FlopCounterMode."""
    model.train()
    from torch.utils.flop_counter import FlopCounterMode

    mapping = REFERENCE_CORRECTIONS if corrected else None
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        output = call_model(model, inputs)
        loss = compute_loss(loss_fn, output, inputs)
        forward = counter.get_total_flops()
        loss.backward()
    return forward, counter.get_total_flops() - forward


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
