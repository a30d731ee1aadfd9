"""Figures that cannot be true are never printed (issue 27, "figures that cannot be true"): a
step the real kernels refuse, inputs that ignore the batch asked for, memory that grows from
step to step. Each case is checked against what real torch does with the same model."""

from __future__ import annotations

import textwrap

import pytest
import torch
from typer.testing import CliRunner

from graphcalc_cli.app import app

runner = CliRunner()

MISMATCHED = {
    "int64 into nn.Linear": """
        import torch
        from torch import nn
        def build_model():
            return nn.Linear(8, 2)
        def example_inputs(batch_size):
            return torch.randint(0, 5, (batch_size, 8))
        """,
    "bf16 activation times an fp32 buffer": """
        import torch
        from torch import nn
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = nn.Linear(8, 8)
                self.register_buffer("scale", torch.ones(8, 8))
            def forward(self, x):
                return self.lin(x.to(torch.bfloat16) @ self.scale)
        def build_model():
            return Net()
        def example_inputs(batch_size):
            return torch.randn(batch_size, 8)
        """,
}


def _module(tmp_path, source, name="m"):
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"hostile_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return path, mod


@pytest.mark.parametrize("case", list(MISMATCHED))
def test_a_step_the_real_kernels_refuse_is_refused(case, tmp_path):
    path, mod = _module(tmp_path, MISMATCHED[case])
    with pytest.raises(RuntimeError):  # real torch refuses the step
        mod.build_model()(mod.example_inputs(4)).sum().backward()
    for command in (["analyze"], ["verify"]):
        result = runner.invoke(app, [*command, str(path), "--batch", "4"])
        assert result.exit_code == 2, result.output
        assert "same dtype" in result.output and "internal error" not in result.output


def test_inputs_that_ignore_the_batch_are_refused(tmp_path):
    path, _ = _module(tmp_path, """
        import torch
        from torch import nn
        def build_model():
            return nn.Linear(8, 2)
        def example_inputs(batch_size):
            return torch.randn(8, 8)  # always 8 samples
        """)
    result = runner.invoke(app, ["analyze", str(path), "--batch", "1000"])
    assert result.exit_code == 2 and "ignore the batch size" in result.output
    result = runner.invoke(app, ["fit", str(path), "--memory", "1GiB"])
    assert result.exit_code == 2 and "ignore the batch size" in result.output


def test_a_per_step_leak_is_not_steady(tmp_path):
    path, mod = _module(tmp_path, """
        import torch
        from torch import nn
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = nn.Linear(64, 64)
                self.kept = []
            def forward(self, x):
                y = self.lin(x)
                self.kept.append(y.detach().clone())  # held from every step
                return y
        def build_model():
            return Net()
        def example_inputs(batch_size):
            return torch.randn(batch_size, 64)
        """)
    # the real thing: each step keeps 32 x 64 fp32 more
    from graphcalc.measure import measure_step
    from graphcalc.options import Options

    torch.manual_seed(0)
    m2 = measure_step(mod.build_model(), mod.example_inputs, Options(batch=32, steps=2))
    m3 = measure_step(mod.build_model(), mod.example_inputs, Options(batch=32, steps=3))
    assert m3.peak_bytes - m2.peak_bytes == 32 * 64 * 4
    result = runner.invoke(app, ["analyze", str(path), "--batch", "32", "-f", "json"])
    import json

    d = json.loads(result.stdout)
    assert d["memory"]["step_growth_bytes"] == 32 * 64 * 4
    text = runner.invoke(app, ["analyze", str(path), "--batch", "32"]).output
    assert "NOT STEADY" in text and "steady 1" not in text
    strict = runner.invoke(app, ["analyze", str(path), "--batch", "32", "--strict"])
    assert strict.exit_code == 1 and "grows by 8,192 B a step" in strict.output


LINEAR = """import torch
from torch import nn
# {comment}
def build_model():
    return nn.Linear(8, 2)
def example_inputs(batch_size):
    return torch.randn(batch_size, 8)
"""


@pytest.mark.parametrize("name, data", [
    ("bom.py", b"\xef\xbb\xbf" + LINEAR.format(comment="a UTF-8 BOM").encode()),
    ("latin1.py", b"# -*- coding: latin-1 -*-\n"
     + LINEAR.format(comment="caf\xe9").encode("latin-1")),
    ("model.txt", LINEAR.format(comment="no .py extension").encode()),
])
def test_a_file_python_would_run_is_loaded(name, data, tmp_path):
    """As Python itself reads a source file: a BOM or a coding line gives the encoding, and the
    file's extension does not matter (`python model.txt` runs it)."""
    import subprocess
    import sys

    path = tmp_path / name
    path.write_bytes(data)
    assert subprocess.run([sys.executable, str(path)], capture_output=True).returncode == 0
    result = runner.invoke(app, ["analyze", str(path), "--batch", "4", "--format", "json"])
    assert result.exit_code == 0, result.output
    import json

    assert json.loads(result.stdout)["totals"]["params"] == 18


def test_a_file_that_is_not_text_is_one_sentence(tmp_path):
    path = tmp_path / "model.py"
    path.write_bytes(b"\xff\xfe\x00binary\x00")
    result = runner.invoke(app, ["analyze", str(path)])
    assert result.exit_code == 2 and "is not a Python file" in result.output
    assert "Traceback" not in result.output
