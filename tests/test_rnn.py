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

from graphcalc.fake import fake_vs_real  # noqa: E402
from graphcalc.commands.analyze import analyze_module  # noqa: E402
from graphcalc.fake.kernels import lstm_workspace_bytes  # noqa: E402
from graphcalc.commands.measure import measure_step  # noqa: E402
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
    """The oneDNN workspace rule (graphcalc.fake.kernels) against what the real kernel returns, on
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


# The bf16 settings (11 models each) are slow-marked: make test runs them, make test-fast not.
SETTINGS = [("sgd", "fp32", None), ("adam", "fp32", None),
            pytest.param("sgd", "fp32", "bf16", marks=pytest.mark.slow),
            pytest.param("adam", "bf16", None, marks=pytest.mark.slow)]


def _compare(name, optim, dtype, amp, batch=3):
    options = Options(batch=batch, optimizer=optim, dtype=dtype, amp=amp)
    torch.manual_seed(0)
    _, model, make_inputs, loss_fn = rnn_models.build(name)
    report = analyze_module(model, make_inputs, options, loss_fn=loss_fn, name=name)
    torch.manual_seed(0)
    _, fresh, _, _ = rnn_models.build(name)
    return report, measure_step(fresh, make_inputs, options, loss_fn=loss_fn)


@pytest.mark.parametrize("optim,dtype,amp", SETTINGS, ids=str)
@pytest.mark.parametrize("name", rnn_models.SMALL)
def test_rnn_peak_is_byte_exact_on_cpu(name, optim, dtype, amp):
    from conftest import skip_without_bf16_lstm

    skip_without_bf16_lstm("lstm" in name, amp)
    report, measured = _compare(name, optim, dtype, amp)
    memory = report.memory
    assert memory.peak_bytes == measured.peak_bytes
    assert (memory.first_step_peak_bytes, memory.steady_step_peak_bytes) == measured.step_peaks
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


def _uncorrected_reference(name, batch=3):
    """FlopCounterMode on a real step without graphcalc's corrections: it counts the mm/addmm of
    the CPU decompositions (GRU, RNN, LSTM with proj_size) and 0 for oneDNN's LSTM kernel."""
    from conftest import reference_flops

    torch.manual_seed(0)
    _, model, make_inputs, loss_fn = rnn_models.build(name)
    return reference_flops(model, make_inputs(batch), loss_fn, corrected=False)


def _report(name, batch=3):
    torch.manual_seed(0)
    _, model, make_inputs, loss_fn = rnn_models.build(name)
    return analyze_module(model, make_inputs, Options(batch=batch), loss_fn=loss_fn)


def test_lstm_flops_by_hand():
    """lstm_bi2_bf: T=7 steps, N=3, input 6, hidden 10, 4 gates, 2 layers x 2 directions, then a
    Linear(20, 3) head on all 21 tokens. FlopCounterMode has no formula for oneDNN's LSTM
    kernel (it counts the head only), so the reference is its figure plus the LSTM by hand."""
    tokens = 7 * 3
    layer0 = tokens * 4 * 10 * (6 + 10)  # W_ih (40x6) and W_hh (40x10) per token: 13,440 MACs
    layer1 = tokens * 4 * 10 * (20 + 10)  # layer 1 reads both directions (20): 25,200 MACs
    lstm_flops = 2 * (2 * layer0 + 2 * layer1)  # 2 directions, 2 FLOPs per MAC: 154,560
    assert lstm_flops == 154_560
    forward, backward = _uncorrected_reference("lstm_bi2_bf")
    assert forward == 2 * tokens * 20 * 3  # the head alone: 2,520
    report = _report("lstm_bi2_bf")
    assert report.totals.flops_forward == forward + lstm_flops
    # backward: input and weight gradients, each the forward's products again
    assert report.totals.flops_backward == backward + 2 * lstm_flops
    assert report.complete, report.incomplete_reasons


@pytest.mark.parametrize("name,gates", [("gru_bi2_bf", 3), ("rnn_relu_bi2_bf", 1)])
def test_gru_and_rnn_flops_by_hand(name, gates):
    """On the CPU these run as mm/addmm, which FlopCounterMode counts: graphcalc must agree with
    it, and both with the count by hand (2 layers x 2 directions, hidden 10)."""
    tokens = 7 * 3
    macs = 2 * tokens * gates * 10 * (6 + 10) + 2 * tokens * gates * 10 * (20 + 10)
    head = tokens * 20 * 3
    forward, backward = _uncorrected_reference(name)
    assert forward == 2 * (macs + head)
    report = _report(name)
    assert (report.totals.flops_forward, report.totals.flops_backward) == (forward, backward)
    assert report.complete, report.incomplete_reasons


def test_cudnn_rnn_formula_by_hand():
    """_cudnn_rnn (never run here: no GPU) for a 2-layer bidirectional LSTM with proj_size 4:
    per token and direction, layer 0 has W_ih 40x6, W_hh 40x4, W_hr 4x10; layer 1 reads 2*4."""
    from graphcalc import flops

    hidden, proj, tokens = 10, 4, 7 * 3
    weights = []
    for layer_input in (6, 6, 8, 8):
        weights += [torch.empty(40, layer_input, device="meta"), torch.empty(40, proj,
                    device="meta"), torch.empty(40, device="meta"), torch.empty(40, device="meta"),
                    torch.empty(proj, hidden, device="meta")]
    x = torch.empty(7, 3, 6, device="meta")
    hx = torch.empty(4, 3, proj, device="meta")
    cx = torch.empty(4, 3, hidden, device="meta")
    args = (x, weights, 5, None, hx, cx, 2, hidden, proj, 2, False, 0.0, True, True, [], None)
    cost = flops.cost_of(torch.ops.aten._cudnn_rnn.default, args, {}, None)
    per_token = 2 * (40 * 6 + 40 * 4 + 4 * 10) + 2 * (40 * 8 + 40 * 4 + 4 * 10)  # 1,920
    assert cost.macs == tokens * per_token == 40_320
    assert cost.bias_adds == tokens * 4 * 2 * 40  # b_ih and b_hh of 4 layer-directions
    grad_args = (x, weights, 5, None, hx, cx, None, None, None, None, 2, hidden, proj, 2, False,
                 0.0, True, True, [], None, None)
    back = flops.cost_of(torch.ops.aten._cudnn_rnn_backward.default,
                         grad_args + ([True, True, True, True],), {}, None)
    assert back.macs == 2 * 40_320
    frozen = flops.cost_of(torch.ops.aten._cudnn_rnn_backward.default,
                           grad_args + ([True, True, True, False],), {}, None)
    assert frozen.macs == 40_320  # no weight gradient: the input gradients alone


GRU_FILE = '''
import torch
from torch import nn


class Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(8, 16, num_layers=2, bidirectional=True, batch_first=True)
        self.fc = nn.Linear(32, 2)

    def forward(self, x):
        y, _ = self.gru(x)
        return self.fc(y[:, -1])


def example_inputs(batch_size):
    return torch.randn(batch_size, 5, 8)
'''


def test_gru_under_strict_exits_0_on_cpu_and_1_for_cuda(tmp_path):
    """The issue's case: a GRU under --strict exited 1 with "no FLOP formula for
    aten::transpose_, aten::unsafe_split". On CPU it is complete now; for --device cuda the
    cuDNN reserve space is not known, and --strict says so."""
    from typer.testing import CliRunner

    from graphcalc_cli.app import app

    path = tmp_path / "gru_tagger.py"
    path.write_text(GRU_FILE)
    runner = CliRunner()
    ok = runner.invoke(app, ["analyze", str(path), "--batch", "4", "--strict"])
    assert ok.exit_code == 0, ok.output
    cuda = runner.invoke(app, ["analyze", str(path), "--batch", "4", "--strict",
                               "--device", "cuda"])
    assert cuda.exit_code == 1
    assert "cuDNN's RNN reserve space is not modelled" in cuda.output


def test_a_stale_storage_is_forgotten_when_it_dies():
    """Known values: a real tensor written with fake values is stale for as long as its storage
    lives (a view of it too); a new tensor the allocator puts at a dead one's address is not
    (keyed by address alone, step 2's packed batch sizes of the zoo's packed GRU were once taken
    for stale, now and then, and the GRU analysed around)."""
    from graphcalc.fake.values import StaleStorages

    stale = StaleStorages()
    t = torch.zeros(8, dtype=torch.int64)
    stale.add(t)
    assert t in stale and t[2:] in stale and torch.zeros(8, dtype=torch.int64) not in stale
    address = t.untyped_storage()._cdata
    del t
    reused = 0
    for _ in range(200):
        u = torch.ones(8, dtype=torch.int64)
        reused += u.untyped_storage()._cdata == address
        assert u not in stale
    assert len(stale) == 0
