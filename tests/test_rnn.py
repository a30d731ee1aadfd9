"""nn.RNN, nn.LSTM and nn.GRU against real CPU steps: peak memory byte for byte, FLOPs by hand.

On the CPU, nn.LSTM runs oneDNN's kernel (`aten::mkldnn_rnn_layer`, one call per layer and
direction) whose workspace the fake kernel leaves empty; nn.GRU, nn.RNN and an LSTM with
proj_size run ATen's decomposition into mm/addmm and pointwise ops.
"""

from __future__ import annotations

import random
import sys

import pytest
import torch
from torch import nn

sys.path.insert(0, str(__import__("conftest").ROOT / "bench"))

import rnn_models  # noqa: E402

from graphcalc import fake_vs_real  # noqa: E402
from graphcalc.analyze import analyze_module  # noqa: E402
from graphcalc.kernels import lstm_workspace_bytes  # noqa: E402
from graphcalc.measure import measure_step  # noqa: E402
from graphcalc.options import Options  # noqa: E402


def _real_workspace(seq, batch, input_size, hidden, dtype):
    x = torch.randn(seq, batch, input_size, dtype=dtype)
    w_ih = torch.randn(4 * hidden, input_size, dtype=dtype)
    w_hh = torch.randn(4 * hidden, hidden, dtype=dtype)
    b = torch.zeros(4 * hidden, dtype=dtype)
    h = torch.zeros(batch, hidden, dtype=dtype)
    out = torch.ops.aten.mkldnn_rnn_layer(x, w_ih, w_hh, b, b, h, h.clone(), False, [], 2,
                                          hidden, 1, True, False, False, True)
    return out[3].untyped_storage().nbytes()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_lstm_workspace_rule_matches_the_real_kernel(dtype):
    """The oneDNN workspace rule (graphcalc.kernels) against what the real kernel returns, on
    random shapes: page rounding, the 64-byte leading dimensions, the 256-multiple bump."""
    try:
        _real_workspace(2, 2, 3, 4, dtype)
    except RuntimeError as e:  # a CPU without oneDNN bf16 support
        pytest.skip(f"mkldnn_rnn_layer in {dtype}: {e}")
    rng = random.Random(14)
    itemsize = torch.tensor([], dtype=dtype).element_size()
    for _ in range(25):
        seq, batch = rng.choice([1, 2, 7, 33]), rng.choice([1, 3, 16, 31])
        input_size, hidden = rng.choice([1, 5, 64, 250, 256]), rng.choice([1, 10, 64, 255])
        assert lstm_workspace_bytes(seq, batch, input_size, hidden, itemsize) == \
            _real_workspace(seq, batch, input_size, hidden, dtype), (seq, batch, input_size,
                                                                      hidden)


SETTINGS = [("sgd", "fp32", None), ("adam", "fp32", None), ("sgd", "fp32", "bf16"),
            ("adam", "bf16", None)]


def _compare(name, optim, dtype, amp, batch=3):
    options = Options(batch=batch, optimizer=optim, dtype=dtype, amp=amp)
    torch.manual_seed(0)
    _, model, make_inputs, loss_fn = rnn_models.build(name)
    report = analyze_module(model, make_inputs, options, loss_fn=loss_fn, name=name)
    torch.manual_seed(0)
    _, fresh, _, _ = rnn_models.build(name)
    return report, measure_step(fresh, make_inputs, options, loss_fn=loss_fn)


@pytest.mark.parametrize("name", rnn_models.SMALL)
def test_rnn_peak_is_byte_exact_on_cpu(name):
    for optim, dtype, amp in SETTINGS:
        report, measured = _compare(name, optim, dtype, amp)
        memory = report.memory
        assert memory.peak_bytes == measured.peak_bytes, (optim, dtype, amp)
        assert (memory.first_step_peak_bytes, memory.steady_step_peak_bytes) == \
            measured.step_peaks, (optim, dtype, amp)
        assert report.complete, report.incomplete_reasons


@pytest.mark.parametrize("name", ["lstm_bi2_bf", "gru_bi2_bf", "rnn_relu_bi2_bf",
                                  "lstm_proj_bi2"])
def test_fake_and_real_steps_return_the_same_storages(name):
    """Op by op, every storage the fake step returns has the real kernel's bytes (with the
    replay's corrections); without them the LSTM's workspace shows up as a difference."""
    _, _, make_inputs, loss_fn = rnn_models.build(name)

    def build():
        return rnn_models.build(name)[1]

    options = Options(batch=2, optimizer="adam", steps=1)
    assert fake_vs_real.compare(build, make_inputs, options, loss_fn) == []
    if name == "lstm_bi2_bf":
        raw = fake_vs_real.summarize(fake_vs_real.compare(build, make_inputs, options, loss_fn,
                                                          corrected=False))
        assert raw.get("aten::mkldnn_rnn_layer") == 4  # 2 layers x 2 directions


def test_rnn_on_cuda_is_marked_incomplete():
    """Without a GPU, --device cuda replays CPU kernels; cuDNN's reserve space is not known
    there, so the report must not pass as complete."""
    _, model, make_inputs, loss_fn = rnn_models.build("gru")
    report = analyze_module(model, make_inputs, Options(batch=2, device="cuda"),
                            loss_fn=loss_fn)
    assert not report.complete
    assert any("cuDNN's RNN reserve space is not modelled" in r
               for r in report.incomplete_reasons)
    assert report.to_dict()["memory_gaps"] == [
        {"where": "rnn", "reason": "cuDNN's RNN reserve space is not modelled"}]


def test_a_model_without_rnn_on_cuda_stays_complete():
    model = nn.Sequential(nn.Linear(4, 4))
    report = analyze_module(model, lambda b: torch.randn(b, 4), Options(batch=2, device="cuda"))
    assert report.complete and report.memory_gaps == ()
