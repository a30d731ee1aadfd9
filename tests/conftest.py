"""Shared helpers: load a sample, and the references figures are checked against.

The references are independent of graphcalc's own arithmetic: parameter counts from
`sum(p.numel())` over a really built model, FLOPs from `torch.utils.flop_counter.FlopCounterMode`
on a real CPU step, memory from a real CPU step (`graphcalc.commands.measure`).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from graphcalc.sources import loader
from graphcalc.commands.measure import REFERENCE_CORRECTIONS
from graphcalc.fake.step import call_model, compute_loss

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


_BF16_LSTM: list[bool] = []


def bf16_lstm_runs() -> bool:
    """Whether this CPU's oneDNN runs an LSTM under bf16 autocast at all (some CPUs without
    bf16 instructions refuse: "could not create a primitive descriptor for the LSTM forward
    propagation primitive"): a real step to compare against exists only where it does."""
    if not _BF16_LSTM:
        try:
            lstm = torch.nn.LSTM(4, 4)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                lstm(torch.randn(2, 1, 4))
            _BF16_LSTM.append(True)
        except RuntimeError:
            _BF16_LSTM.append(False)
    return _BF16_LSTM[0]


def skip_without_bf16_lstm(uses_lstm: bool, amp) -> None:
    if uses_lstm and amp == "bf16" and not bf16_lstm_runs():
        pytest.skip("this CPU's oneDNN has no bf16 LSTM: the real step cannot run here")


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
