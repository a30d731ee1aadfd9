"""Every sample, at two batch sizes, against a real CPU step of the same model.

- params equal sum(p.numel()) over the model's distinct parameters;
- forward and backward FLOPs equal FlopCounterMode's on the real step (with its two known gaps
  filled by torch's own formulas, see conftest.REFERENCE_CORRECTIONS);
- the per-layer rows sum to the totals, and no op is left without a formula.
"""

from __future__ import annotations

import pytest
import torch

from graphcalc.commands.analyze import analyze_module
from graphcalc.options import Options

from conftest import SAMPLES, real_model, reference_flops, sample, unique_param_count

# Big models at small batches: the real CPU step is the slow part of these tests.
ALL = sorted(p.stem for p in SAMPLES.glob("*.py") if not p.stem.startswith("_"))
BATCHES = {"resnet50": (1, 2), "vit_b16": (1, 2), "gpt2": (1, 2), "resnet18": (1, 3)}
# 5 s or more on 2 cores: make test runs them, make test-fast does not.
SLOW = {"gpt2", "llama", "vit_b16", "resnet50"}


def _slow(name):
    return [pytest.mark.slow] if name in SLOW else []


def cases():
    for name in ALL:
        for batch in BATCHES.get(name, (2, 5)):
            marks = _slow(name) if name == "gpt2" else []
            yield pytest.param(name, batch, id=f"{name}-b{batch}", marks=marks)


@pytest.mark.parametrize("name,batch", list(cases()))
def test_sample_matches_a_real_step(name, batch):
    src = sample(name)
    model = real_model(src)
    report = analyze_module(model, src.example_inputs, Options(batch=batch, optimizer="sgd"),
                            loss_fn=src.loss, name=name)
    assert report.totals.params == unique_param_count(model)

    torch.manual_seed(0)
    inputs = src.example_inputs(batch)
    forward, backward = reference_flops(model, inputs, src.loss)
    assert report.totals.flops_forward == forward
    assert report.totals.flops_backward == backward

    for field in ("params", "flops_forward", "flops_backward", "macs_forward"):
        assert sum(getattr(layer, field) for layer in report.layers) == getattr(report.totals, field)
    assert report.complete, report.unknown_ops


@pytest.mark.parametrize("name", [pytest.param(n, marks=_slow(n)) for n in ALL])
def test_flops_are_linear_in_batch(name):
    src = sample(name)
    model = real_model(src) if name not in ("llama",) else None
    if model is None:
        from graphcalc.sources import loader

        model = loader.build_model(src, device="meta")
    # Batch 2 and 8: BatchNorm refuses a batch of one in training, as it does for real.
    two = analyze_module(model, src.example_inputs, Options(batch=2), loss_fn=src.loss)
    eight = analyze_module(model, src.example_inputs, Options(batch=8), loss_fn=src.loss)
    assert eight.totals.flops_forward == 4 * two.totals.flops_forward
    assert eight.totals.flops_backward == 4 * two.totals.flops_backward
    assert eight.totals.params == two.totals.params
