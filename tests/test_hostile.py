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
    from graphcalc.commands.measure import measure_step
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


VALID_SETUPS = {
    "a lazy module": """
        import torch
        from torch import nn
        def build_model():
            return nn.Sequential(nn.LazyLinear(16), nn.ReLU(), nn.LazyBatchNorm1d(),
                                 nn.Linear(16, 2))
        def example_inputs(batch_size):
            return torch.randn(batch_size, 8)
        """,
    "retain_grad in forward": """
        import torch
        from torch import nn
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.a = nn.Linear(8, 16)
                self.b = nn.Linear(16, 2)
            def forward(self, x):
                h = self.a(x)
                h.retain_grad()
                self.h = h
                return self.b(h.relu())
        def build_model():
            return Net()
        def example_inputs(batch_size):
            return torch.randn(batch_size, 8)
        """,
}


@pytest.mark.parametrize("case", list(VALID_SETUPS))
def test_a_valid_training_setup_is_analysed_and_exact(case, tmp_path):
    """Set-ups real training runs (a lazy module shaped by a first forward before the optimizer
    is made; retain_grad inside forward) are analysed, and the figures match the real step."""
    import json

    path, mod = _module(tmp_path, VALID_SETUPS[case])
    model = mod.build_model()
    model(mod.example_inputs(4)).sum().backward()  # real torch trains it
    from graphcalc.sources import loader
    from graphcalc.options import Options
    from graphcalc.commands.verify import verify

    source = loader.load(str(path))
    result = verify(source, Options(batch=4, steps=2), source.example_inputs)
    assert result.report.memory.peak_bytes == result.measured.peak_bytes  # byte-exact
    assert result.report.totals.params == sum(p.numel() for p in model.parameters())
    assert not result.failed
    analysed = runner.invoke(app, ["analyze", str(path), "--batch", "4"])
    assert analysed.exit_code == 0, analysed.output


def test_every_svg_is_xml_whatever_the_module_names(tmp_path):
    """A module name with a control character or XML's own specials ("--" ends a comment) still
    gives SVGs that are XML; the control character is shown as \\x01."""
    import xml.dom.minidom

    path, _ = _module(tmp_path, r"""
        import torch
        from torch import nn
        def build_model():
            m = nn.Sequential()
            m.add_module("a\x01b", nn.Linear(8, 8))
            m.add_module("c<&>\"'--x", nn.Linear(8, 2))
            return m
        def example_inputs(batch_size):
            return torch.randn(batch_size, 8)
        """)
    out = {name: tmp_path / f"{name}.svg" for name in ("layers", "ops", "svg", "timeline")}
    for args in (["render", "-o", str(out["layers"])], ["render", "--ops", "-o", str(out["ops"])],
                 ["analyze", "--svg", str(out["svg"]), "--timeline-svg", str(out["timeline"])]):
        result = runner.invoke(app, [args[0], str(path), "--batch", "2", *args[1:]])
        assert result.exit_code == 0, result.output
    for name, svg in out.items():
        xml.dom.minidom.parse(str(svg))  # raises on a file that is not XML
    assert "a\\x01b" in out["layers"].read_text()


@pytest.mark.slow
def test_sigterm_to_a_distributed_verify_leaves_nothing_behind(tmp_path):
    """SIGTERM while the ranks run: graphcalc says so and exits 143, its rank processes end with
    it, and its temporary folder is gone."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    path, _ = _module(tmp_path, """
        import time
        import torch
        from torch import nn
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.l = nn.Linear(8, 2)
            def forward(self, x):
                if torch.distributed.is_available() and torch.distributed.is_initialized():
                    time.sleep(120)  # a rank: stays busy until stopped
                return self.l(x)
        def build_model():
            return Net()
        def example_inputs(batch_size):
            return torch.randn(batch_size, 8)
        """)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    graphcalc = Path(sys.executable).parent / "graphcalc"
    proc = subprocess.Popen([str(graphcalc), "verify", str(path), "--world-size", "2", "--shard",
                             "ddp", "--batch", "4"], env=dict(os.environ, TMPDIR=str(tmp)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def ranks() -> list[int]:  # the rank processes: their job file lies in our TMPDIR
        found = []
        for child in Path("/proc").glob("[0-9]*"):
            try:
                if str(tmp) in (child / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(child.name))
            except OSError:
                pass
        return found

    deadline = time.monotonic() + 600  # a busy CI machine: the prediction comes first
    while len(ranks()) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)
    started = ranks()
    if len(started) < 2:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"the ranks did not start (exit {proc.returncode}): {out[-1000:]} "
                    f"{err[-2000:]}")
    assert any(tmp.glob("graphcalc-dist-*"))
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "stopped by SIGTERM" in err
    time.sleep(1)
    assert not [pid for pid in started if Path(f"/proc/{pid}").exists()
                and (Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z")]
    assert not list(tmp.glob("graphcalc-dist-*"))
