"""The per-layer columns add up to the totals, and the Saved column matches what autograd really
saves in a real CPU step.

The reference is a real step on real tensors with `torch.autograd.graph.saved_tensors_hooks`:
every storage autograd saves that the forward made (not a weight, not the batch), counted once, at
the innermost module running when it was first saved. The prediction never sees those tensors.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from graphcalc.commands.analyze import analyze_module
from graphcalc.options import Options
from graphcalc.fake.step import call_model, compute_loss
from graphcalc.report import ROOT

from conftest import real_model, sample


class ReusedPool(nn.Module):
    """One MaxPool2d called three times, a ReLU whose output the pooling saves again."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(4 * 2 * 2, 5)

    def forward(self, x):
        x = self.pool(self.act(self.conv(x)))
        x = self.pool(self.pool(x))
        return self.head(x.flatten(1))


def _reused_inputs(batch):
    return torch.randn(batch, 3, 16, 16)


def _real_saved(model: nn.Module, inputs, loss_fn) -> dict[str, int]:
    """Bytes autograd saves in a real forward + loss, per first saving module path."""
    paths = {id(m): p for p, m in model.named_modules()}
    stack: list[str] = []
    hooks = []

    def enter(mod, args):
        stack.append(paths[id(mod)])

    def leave(mod, args, output):
        stack.pop()

    for m in model.modules():
        hooks.append(m.register_forward_pre_hook(enter))
        hooks.append(m.register_forward_hook(leave))
    excluded = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    excluded |= {t.untyped_storage().data_ptr() for t in
                 (inputs if isinstance(inputs, (tuple, list)) else [inputs])
                 if isinstance(t, torch.Tensor)}
    first: dict[int, tuple[str, int]] = {}
    keep = []

    def pack(t):
        st = t.untyped_storage()
        key = st.data_ptr()
        if key not in excluded and key not in first and st.nbytes():
            first[key] = (stack[-1] if stack else "[loss]", st.nbytes())
        keep.append(t)  # the storage stays alive, so its address is not reused in this step
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = call_model(model, inputs)
        stack.append("[loss]")
        loss = compute_loss(loss_fn, out, inputs)
        stack.pop()
    for h in hooks:
        h.remove()
    by_path: dict[str, int] = {}
    for path, nbytes in first.values():
        by_path[path] = by_path.get(path, 0) + nbytes
    del loss
    return by_path


def _predicted_saved(report) -> dict[str, int]:
    return {("" if layer.name == ROOT else layer.name): layer.saved_bytes
            for layer in report.layers if layer.saved_bytes}


CASES = [("seed_cnn", None), ("residual", None), ("mnist_mlp", None), ("reused", None)]


def _case(name):
    if name == "reused":
        torch.manual_seed(0)
        return ReusedPool(), _reused_inputs, None
    src = sample(name)
    return real_model(src), src.example_inputs, src.loss


@pytest.mark.parametrize("name", [c for c, _ in CASES])
def test_rows_sum_to_the_totals_at_every_depth(name):
    model, make, loss = _case(name)
    report = analyze_module(model, make, Options(batch=4, optimizer="adam"), loss_fn=loss)
    t = report.totals
    for depth in (None, 0, 1, 2):
        rows = report.at_depth(depth).layers
        assert sum(r.saved_bytes for r in rows) == t.saved_bytes, depth
        assert sum(r.params for r in rows) == t.params, depth
        assert sum(r.flops_forward for r in rows) == t.flops_forward, depth
        assert sum(r.flops_backward for r in rows) == t.flops_backward, depth
    # What is saved is held at the same time at the end of the forward: never above the peak.
    assert t.saved_bytes <= report.memory.peak_bytes


@pytest.mark.parametrize("name", ["seed_cnn", "reused"])
def test_saved_column_matches_what_autograd_saves_in_a_real_step(name):
    model, make, loss = _case(name)
    report = analyze_module(model, make, Options(batch=4, optimizer="sgd"), loss_fn=loss)
    real, _, _ = _case(name)
    real.train()
    measured = _real_saved(real, make(4), loss)
    assert _predicted_saved(report) == measured
    assert report.totals.saved_bytes == sum(measured.values())


def test_seed_cnn_relu_output_is_saved_once_at_the_relu():
    """The ReLU saves its output; the MaxPool after it saves that same tensor (and its indices):
    the 245 KiB count at the ReLU only (it was counted twice: 815 KiB of rows, 476 KiB total)."""
    model, make, loss = _case("seed_cnn")
    report = analyze_module(model, make, Options(batch=16, optimizer="adam"), loss_fn=loss)
    rows = {r.name: r for r in report.layers}
    relu_out = 16 * 5 * 28 * 28 * 4
    pool_indices = 16 * 5 * 12 * 12 * 8  # the int64 indices of its 12x12 output
    assert rows["conv.1"].saved_bytes == relu_out
    assert rows["conv.2"].saved_bytes == pool_indices


def test_a_module_called_three_times_shows_its_call_count():
    from graphcalc.output.formatting import to_markdown, to_table

    model, make, _ = _case("reused")
    report = analyze_module(model, make, Options(batch=2))
    pool = next(r for r in report.layers if r.name == "pool")
    assert pool.calls == 3
    assert pool.output_shapes == ((2, 4, 8, 8),)  # the first call's
    # bytes of all three calls: 8x8, 4x4 and 2x2 maps of 2x4 channels, fp32
    assert pool.activation_bytes == 2 * 4 * (64 + 16 + 4) * 4
    table = to_table(report, width=200)
    assert "Calls" in next(line for line in table.splitlines() if "Layer" in line)
    assert any(line.split("│")[1].strip() == "pool" and "x3" in line
               for line in table.splitlines() if "│" in line)
    md = to_markdown(report)
    assert "| Calls |" in md and "| pool | MaxPool2d | [2, 4, 8, 8] | x3 |" in md


def test_peak_step_and_the_timeline_use_one_numbering():
    model, make, loss = _case("seed_cnn")
    report = analyze_module(model, make, Options(batch=16, optimizer="adam"), loss_fn=loss)
    m = report.memory
    top = max(m.timeline, key=lambda p: p.peak_bytes)
    assert top.peak_bytes == m.peak_bytes
    assert (top.step, top.phase, top.layer) == (m.peak_step, m.peak_phase, m.peak_layer)
    assert {p.step for p in m.timeline} == {1, 2}
    d = report.to_dict()["memory"]
    assert d["peak_step"] in {p["step"] for p in d["timeline"]}
