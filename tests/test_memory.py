"""Peak training memory predicted on fake tensors against a real CPU step, byte for byte.

The measurement (`graphcalc.measure`) runs the real step on real tensors and counts the bytes of
live tensor storages as it runs; the prediction never allocates an activation or a weight.
"""

from __future__ import annotations

import pytest

from graphcalc.analyze import analyze_module
from graphcalc.measure import measure_step
from graphcalc.options import Options

from conftest import real_model, sample

SMALL = ["mnist_mlp", "cifar_mlp", "seed_cnn", "seed_cnn_bn", "lenet_bn", "residual",
         "course_cnn", "conv_arith", pytest.param("llama", marks=pytest.mark.slow)]
SETTINGS = [("sgd", "fp32", None), ("adam", "fp32", None), ("momentum", "bf16", None),
            ("rmsprop", "fp32", None), ("adagrad", "fp32", None), ("sgd", "fp16", None),
            ("adamw", "fp32", "bf16"), ("sgd", "fp32", "bf16")]
# Known to differ: Adagrad on fp16 weights is predicted about 0.3% high. Held to 1% here.
NEAR = [("adagrad", "fp16", None)]


def _compare(name, batch, optim, dtype, amp, steps=2):
    src = sample(name)
    options = Options(batch=batch, optimizer=optim, dtype=dtype, amp=amp, steps=steps)
    model = real_model(src)
    predicted = analyze_module(model, src.example_inputs, options, loss_fn=src.loss)
    measured = measure_step(real_model(src), src.example_inputs, options, loss_fn=src.loss)
    return predicted.memory, measured


@pytest.mark.parametrize("optim,dtype,amp", SETTINGS, ids=lambda v: str(v))
@pytest.mark.parametrize("name", SMALL)
def test_peak_is_byte_exact_on_cpu(name, optim, dtype, amp):
    if dtype == "fp16" and name in ("llama",):
        pytest.skip("fp16 SDPA backward is not implemented on the CPU")
    memory, measured = _compare(name, 4, optim, dtype, amp)
    assert memory.peak_bytes == measured.peak_bytes
    assert (memory.first_step_peak_bytes, memory.steady_step_peak_bytes) == measured.step_peaks


@pytest.mark.parametrize("optim,dtype,amp", NEAR, ids=lambda v: str(v))
@pytest.mark.parametrize("name", SMALL)
def test_peak_is_within_one_percent_where_not_exact(name, optim, dtype, amp):
    if dtype == "fp16" and name in ("llama",):
        pytest.skip("fp16 SDPA backward is not implemented on the CPU")
    memory, measured = _compare(name, 4, optim, dtype, amp)
    assert abs(memory.peak_bytes - measured.peak_bytes) <= 0.01 * measured.peak_bytes


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "resnet50", "vit_b16", "gpt2"])
def test_peak_is_byte_exact_on_big_samples(name):
    memory, measured = _compare(name, 1 if name != "resnet18" else 2, "adam", "fp32", None)
    assert memory.peak_bytes == measured.peak_bytes


def test_breakdown_sums_to_the_peak():
    memory, _ = _compare("seed_cnn", 16, "adam", "fp32", None)
    assert memory.breakdown.total == memory.peak_bytes
