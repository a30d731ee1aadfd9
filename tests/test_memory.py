"""Peak training memory predicted on fake tensors against a real CPU step, byte for byte.

The measurement (`graphcalc.commands.measure`) runs the real step on real tensors and counts the bytes of
live tensor storages as it runs; the prediction never allocates an activation or a weight.
"""

from __future__ import annotations

import pytest
import torch

from graphcalc.commands.analyze import analyze_module
from graphcalc.commands.measure import measure_step
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


# --- where a real storage is larger than the tensor, or a real kernel keeps more -----------------

class _Buffers(torch.nn.Module):
    """Buffers that do not own a storage of their size: torch.hann_window(n) is n + 1 values
    narrowed to n; a table sliced from a larger one; two halves of one tensor."""

    def __init__(self):
        super().__init__()
        self.register_buffer("window", torch.hann_window(16))
        self.register_buffer("table", torch.randn(64, 8)[:10])
        whole = torch.randn(2, 8)
        self.register_buffer("low", whole[0])
        self.register_buffer("high", whole[1])
        self.fc = torch.nn.Linear(16, 8)

    def forward(self, x):
        return self.fc(x * self.window) + self.table.sum(0) + self.low * self.high


@pytest.mark.parametrize("optim", ["sgd", "adam"])
def test_buffers_that_view_a_larger_storage_hold_all_of_it(optim):
    # window 17 x 4 B, table 64 x 8 x 4 B, low/high one 2 x 8 x 4 B storage: all held.
    def inputs(b):
        return torch.randn(b, 16)

    options = Options(batch=3, optimizer=optim)
    torch.manual_seed(0)
    predicted = analyze_module(_Buffers(), inputs, options).memory.peak_bytes
    torch.manual_seed(0)
    assert predicted == measure_step(_Buffers(), inputs, options).peak_bytes


LOSSES = {"mse_loss": torch.nn.functional.mse_loss,
          "smooth_l1_loss": torch.nn.functional.smooth_l1_loss,
          "soft_margin_loss": torch.nn.functional.soft_margin_loss,
          "binary_cross_entropy": lambda y, t, **kw: torch.nn.functional.binary_cross_entropy(
              torch.sigmoid(y), t, **kw),
          "l1_loss": torch.nn.functional.l1_loss}


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_a_loss_kernel_that_keeps_its_unreduced_buffer(loss, reduction):
    # The CPU kernels of mse_loss, smooth_l1_loss, soft_margin_loss and binary_cross_entropy
    # return the scalar loss as a view of the (8, 24) elementwise buffer: 768 B held to the end.
    def build():
        return torch.nn.Linear(16, 24)

    def inputs(b):
        return torch.randn(b, 16)

    def loss_fn(out, x):
        return LOSSES[loss](out, torch.full_like(out, 0.5), reduction=reduction)

    options = Options(batch=8, optimizer="sgd")
    torch.manual_seed(0)
    predicted = analyze_module(build(), inputs, options, loss_fn=loss_fn).memory.peak_bytes
    torch.manual_seed(0)
    assert predicted == measure_step(build(), inputs, options, loss_fn=loss_fn).peak_bytes


@pytest.mark.parametrize("optim", ["sgd", "adamw"])
def test_group_norm_under_bf16_autocast(optim):
    # With a bf16 input and fp32 weights the real CPU kernels return the saved mean and rstd in
    # fp32 (the fake ones in bf16) and the input's gradient in bf16 (the fake one in fp32).
    def build():
        return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.GroupNorm(4, 8),
                                   torch.nn.SiLU(), torch.nn.Conv2d(8, 4, 3))

    def inputs(b):
        return torch.randn(b, 3, 10, 10)

    options = Options(batch=4, optimizer=optim, amp="bf16")
    torch.manual_seed(0)
    memory = analyze_module(build(), inputs, options).memory
    torch.manual_seed(0)
    measured = measure_step(build(), inputs, options)
    assert memory.peak_bytes == measured.peak_bytes
    assert (memory.first_step_peak_bytes, memory.steady_step_peak_bytes) == measured.step_peaks


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("mode,padding_idx", [("sum", None), ("sum", 0), ("mean", None),
                                              ("max", None)])
def test_embedding_bag_offset2bag(mode, padding_idx, dtype):
    # The CPU kernel's offset2bag: none on the sum fast path (fp32/fp16/bf16, no padding_idx),
    # else 12 + 1 int64 entries for 12 indices; the fake kernel makes 12, and 12 for bf16 sums.
    def build():
        return torch.nn.Sequential(torch.nn.EmbeddingBag(40, 8, mode=mode,
                                                         padding_idx=padding_idx),
                                   torch.nn.Linear(8, 2))

    def inputs(b):
        return torch.randint(1, 40, (b, 3))

    options = Options(batch=4, optimizer="sgd", dtype=dtype)
    torch.manual_seed(0)
    predicted = analyze_module(build(), inputs, options).memory.peak_bytes
    torch.manual_seed(0)
    assert predicted == measure_step(build(), inputs, options).peak_bytes


def test_an_alias_of_a_storage_is_one_allocation_freed_when_both_die():
    """A real tensor written with fake values goes on as its fake conversion (another storage
    object, the same allocation): counted once, and held until both have died."""
    import gc

    from graphcalc.fake.tracking import LiveStorages

    tracker = LiveStorages()
    real, other = torch.empty(100), torch.empty(100)
    tracker.track(real)
    tracker.alias(other, real)
    assert tracker.track(other) == tracker.serial(real)
    assert tracker.current == 400
    del real
    gc.collect()
    assert tracker.current == 400  # the alias still holds it
    del other
    gc.collect()
    assert tracker.current == 0
    tracker.close()
