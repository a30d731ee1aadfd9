"""Models that torch.fx.symbolic_trace cannot follow, and what graphcalc does with each.

The primary tracer replays the whole step on fake tensors, so *args/**kwargs forwards, branches
and loops on shapes and Hugging Face models (tests/test_hf_models.py) need no fallback: they are
checked exact against a real step. A layer that reads tensor values (.item(), .tolist(), a branch
or a loop on values) is analysed around (graphcalc.fake.opaque): the report names it and why, and every
other layer's figures still equal FlopCounterMode's on a real step.
"""

from __future__ import annotations

import textwrap

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from typer.testing import CliRunner

from graphcalc.sources import loader
from graphcalc.commands.analyze import analyze_file, analyze_module
from graphcalc.errors import TraceError
from graphcalc.commands.measure import measure_step
from graphcalc.options import Options
from graphcalc.report import TRACER, TRACER_OPAQUE
from graphcalc_cli.app import app

from conftest import reference_flops, unique_param_count

HEAD = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(16, 32)
        self.mid = Mid(32)
        self.out = nn.Linear(32, 4)

    def forward(self, x):
        return self.out(self.mid(self.inp(x)))


def build_model():
    return Net()


def example_inputs(batch_size):
    return torch.randn(batch_size, 16)
"""

# Each: the layer `Mid`, which reads tensor values in some way.
VALUE_READERS = {
    "branch on a tensor": """
        class Mid(nn.Module):
            def __init__(self, d):
                super().__init__()
                self.proj = nn.Linear(d, d)
            def forward(self, x):
                h = self.proj(x)
                if h.mean() > 0:
                    return torch.relu(h)
                return torch.tanh(h)
    """,
    ".item()": """
        class Mid(nn.Module):
            def __init__(self, d):
                super().__init__()
                self.proj = nn.Linear(d, d)
            def forward(self, x):
                h = self.proj(x)
                scale = h.abs().max().item()
                return h / (scale + 1.0)
    """,
    ".tolist()": """
        class Mid(nn.Module):
            def __init__(self, d):
                super().__init__()
                self.proj = nn.Linear(d, d)
            def forward(self, x):
                h = self.proj(x)
                keep = (h[0] > 0).tolist()
                return h * torch.tensor([1.0 if k else 0.5 for k in keep])
    """,
    "loop over tensor values": """
        class Mid(nn.Module):
            def __init__(self, d):
                super().__init__()
                self.proj = nn.Linear(d, d)
            def forward(self, x):
                h = self.proj(x)
                for _ in range(int(h.detach().abs().sum() > 0) + 1):
                    h = torch.relu(h)
                return h
    """,
}


def _write(tmp_path, body: str, head: str = HEAD):
    f = tmp_path / "model.py"
    f.write_text(head + textwrap.dedent(body))
    return f


def _real_module_flops(model, x):
    with FlopCounterMode(display=False) as counter:
        model(x).mean().backward()
    counts = counter.get_flop_counts()
    return {k: sum(v.values()) for k, v in counts.items()}


@pytest.mark.parametrize("case", sorted(VALUE_READERS))
def test_a_layer_that_reads_values_is_analysed_around(tmp_path, case):
    f = _write(tmp_path, VALUE_READERS[case])
    report = analyze_file(str(f), Options(batch=8, optimizer="adam"))
    assert report.tracer == TRACER_OPAQUE
    assert [path for path, _ in report.opaque] == ["mid"]
    assert "reads tensor values at model.py:" in report.opaque[0][1]
    assert not report.complete

    src = loader.load(str(f))
    torch.manual_seed(0)
    model = loader.build_model(src, device=None)
    assert report.totals.params == unique_param_count(model)
    # Every layer but the opaque one: FLOPs equal FlopCounterMode's on a real step.
    real = _real_module_flops(model, src.example_inputs(8))
    ours = {layer.name: layer.flops_forward + layer.flops_backward for layer in report.layers}
    for name in ("inp", "out"):
        assert ours[name] == real[f"Net.{name}"]
    assert report.totals.flops_forward + report.totals.flops_backward == \
        real["Global"] - real["Net.mid"]
    # The opaque layer's output shape is still right, and downstream memory is counted.
    layer = {layer.name: layer for layer in report.layers}["mid"]
    assert layer.output_shapes == ((8, 32),)


def test_a_value_read_at_batch_4096_allocates_nothing_at_that_batch(tmp_path):
    f = _write(tmp_path, VALUE_READERS[".item()"])
    report = analyze_file(str(f), Options(batch=4096))
    assert {layer.name: layer for layer in report.layers}["mid"].output_shapes == ((4096, 32),)


def test_strict_refuses_an_opaque_layer(tmp_path):
    f = _write(tmp_path, VALUE_READERS[".item()"])
    result = CliRunner().invoke(app, ["analyze", str(f), "--strict"])
    assert result.exit_code == 1
    assert "mid" in result.output


def test_an_output_shape_that_depends_on_values_is_refused_in_one_sentence(tmp_path):
    f = _write(tmp_path, """
        class Mid(nn.Module):
            def __init__(self, d):
                super().__init__()
                self.proj = nn.Linear(d, d)
            def forward(self, x):
                h = self.proj(x)
                return h[h > 0].view(-1, 1).expand(-1, 32)
    """)
    with pytest.raises(TraceError, match="layer 'mid'.*output shape depends on those values"):
        analyze_file(str(f), Options(batch=64))
    result = CliRunner().invoke(app, ["analyze", str(f), "--batch", "64"])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "mid" in result.output


def test_values_read_in_the_models_own_forward_name_the_line(tmp_path):
    head = HEAD.replace("return self.out(self.mid(self.inp(x)))",
                        "h = self.inp(x)\n        return self.out(h) * h.sum().item()")
    f = _write(tmp_path, """
        class Mid(nn.Module):
            def __init__(self, d):
                super().__init__()
    """, head)
    result = CliRunner().invoke(app, ["analyze", str(f)])
    assert result.exit_code == 2
    assert "model.py:" in result.output and "own forward" in result.output


class ArgsKwargs(nn.Module):
    """A forward of *args and **kwargs, with a branch on a shape (not a value)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 8)
        self.b = nn.Linear(8, 8)

    def forward(self, *args, **kwargs):
        x, y = args
        h = self.a(x) + self.b(y) * kwargs.get("scale", 1.0)
        if h.shape[-1] > 4:
            h = torch.relu(h)
        for i in range(h.shape[0] if h.shape[0] < 4 else 2):  # a Python loop over a size
            h = h + i
        return h


def test_args_kwargs_and_shape_branches_need_no_fallback():
    def inputs(b):
        return (torch.randn(b, 8), torch.randn(b, 8))

    options = Options(batch=3, optimizer="adam")
    torch.manual_seed(0)
    report = analyze_module(ArgsKwargs(), inputs, options)
    assert report.tracer == TRACER and report.complete
    torch.manual_seed(0)
    model = ArgsKwargs()
    assert report.totals.params == unique_param_count(model)
    assert (report.totals.flops_forward, report.totals.flops_backward) == \
        reference_flops(model, inputs(3), None)
    assert report.memory.peak_bytes == measure_step(ArgsKwargs(), inputs, options).peak_bytes


def test_a_budget_on_a_model_with_an_opaque_layer_says_so(tmp_path, monkeypatch):
    import json

    _write(tmp_path, VALUE_READERS[".item()"])
    (tmp_path / "graphcalc.toml").write_text(
        '[[budget]]\nmodel = "model.py"\nbatch = 8\nmax_params = "1M"\n')
    monkeypatch.setenv("GRAPHCALC_CACHE_DIR", str(tmp_path / "cache"))
    args = ["check", "--config", str(tmp_path / "graphcalc.toml")]
    # Incomplete figures fail the gate unless the budget accepts them (issue 27).
    result = CliRunner().invoke(app, args + ["--format", "json"])
    assert result.exit_code == 1, result.output
    budget = json.loads(result.stdout)["budgets"][0]
    assert budget["figures"]["opaque_layers"] == ["mid"]
    assert [c["figure"] for c in budget["checks"] if not c["ok"]] == ["complete"]
    table = CliRunner().invoke(app, args).output
    assert "layer 'mid' reads tensor values" in table
    (tmp_path / "graphcalc.toml").write_text(
        '[[budget]]\nmodel = "model.py"\nbatch = 8\nmax_params = "1M"\n'
        'allow_incomplete = true\n')
    result = CliRunner().invoke(app, args + ["--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["budgets"][0]["figures"]["opaque_layers"] == ["mid"]
