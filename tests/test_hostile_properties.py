"""Hostile property test (issue 27): hypothesis writes odd model files and picks odd options, and
whatever it draws, graphcalc keeps its promises:
- the exit code is non-zero whenever the figures cannot be stood behind (the model exits, raises,
  ignores the batch, feeds a kernel a dtype it refuses, reads tensor values under a budget that
  does not accept incomplete figures, or is not Python at all), and 0 only with figures;
- under `--format json` stdout is JSON and nothing else (a model's prints go to stderr), or empty
  when there are no figures to write;
- no input is modified (the model file, the budget config: bytes and modification time);
- nothing is left behind: no child process, no temporary file or folder.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from graphcalc_cli.app import app

pytestmark = pytest.mark.slow

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])

# What the file does when imported: (source, whether figures can still be stood behind)
AT_IMPORT = {
    "nothing": ("", True),
    "prints": ("print('hello from import')\n", True),
    "sys.exit(0)": ("import sys\nsys.exit(0)\n", False),
    "raises": ("raise RuntimeError('broken at import')\n", False),
    "default fp16": ("torch.set_default_dtype(torch.float16)\n", True),
    "syntax error": ("def (:\n", False),
}
# What forward does besides its work
IN_FORWARD = {
    "nothing": ("", True),
    "prints": ("        print('hello from forward')\n", True),
    "sys.exit(0)": ("        import sys\n        sys.exit(0)\n", False),
    "os._exit(0)": ("        import os\n        os._exit(0)\n", False),
    "raises": ("        raise ValueError('broken forward')\n", False),
    "BaseException": ("        raise BaseException('odd')\n", False),
    "reads a value": ("        if x.abs().max().item() > 1e9:\n            x = x * 0\n", None),
}
# What example_inputs returns
INPUTS = {
    "floats": ("torch.randn(batch_size, 8)", True),
    "ignores the batch": ("torch.randn(4, 8)", False),
    "int64 into Linear": ("torch.randint(0, 5, (batch_size, 8))", False),
}

TEMPLATE = """import torch
from torch import nn
{at_import}
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 16)
        self.b = nn.Linear(16, 4)

    def forward(self, x):
{in_forward}        return self.b(self.a(x).relu())


def build_model():
    return Net()


def example_inputs(batch_size):
    return {inputs}
"""


def _children() -> set[int]:
    me = os.getpid()
    found = set()
    for task in Path(f"/proc/{me}/task").iterdir():
        try:
            found |= {int(p) for p in (task / "children").read_text().split()}
        except OSError:
            pass
    return {pid for pid in found if Path(f"/proc/{pid}").exists()
            and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"}


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@SETTINGS
@given(at_import=st.sampled_from(sorted(AT_IMPORT)), in_forward=st.sampled_from(sorted(IN_FORWARD)),
       inputs=st.sampled_from(sorted(INPUTS)), batch=st.sampled_from([1, 3, 16]),
       command=st.sampled_from(["analyze", "analyze-json", "check-json", "check"]),
       optim=st.sampled_from(["adam", "sgd"]), allow_incomplete=st.booleans(),
       output=st.sampled_from([None, "model.py", "graphcalc.toml", "out.txt"]))
def test_whatever_the_model_file_graphcalc_keeps_its_promises(
        tmp_path_factory, monkeypatch, at_import, in_forward, inputs, batch, command, optim,
        allow_incomplete, output):
    work = tmp_path_factory.mktemp("hostile")
    project, tmp = work / "project", work / "tmp"
    project.mkdir()
    tmp.mkdir()
    (project / "model.py").write_text(TEMPLATE.format(
        at_import=AT_IMPORT[at_import][0], in_forward=IN_FORWARD[in_forward][0],
        inputs=INPUTS[inputs][0]))
    (project / "graphcalc.toml").write_text(
        f'[[budget]]\nmodel = "model.py"\nbatch = {batch}\noptim = "{optim}"\n'
        f'max_params = "1M"\nallow_incomplete = {str(allow_incomplete).lower()}\n')
    monkeypatch.setenv("GRAPHCALC_CACHE_DIR", str(work / "cache"))
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.chdir(project)
    before, children = _snapshot(project), _children()
    default_dtype = torch.get_default_dtype()

    if command.startswith("analyze"):
        args = ["analyze", "model.py", "--batch", str(batch), "--optim", optim]
        if output is not None:
            args += ["-o", output]  # an input file given as the output is refused
    else:
        args = ["check", "--config", "graphcalc.toml"]
    as_json = command.endswith("-json")
    result = CliRunner().invoke(app, args + (["--format", "json"] if as_json else []))

    sound = [AT_IMPORT[at_import][1], IN_FORWARD[in_forward][1], INPUTS[inputs][1],
             not command.startswith("analyze") or output in (None, "out.txt")]
    reads_value = IN_FORWARD[in_forward][1] is None
    if reads_value:
        # figures with a value read are incomplete: a gate fails them unless accepted;
        # analyze prints them, marked incomplete
        sound[1] = command.startswith("analyze") or allow_incomplete
    what = f"{at_import} / {in_forward} / {inputs} / batch {batch} / {command}: {result.output}"
    if not all(sound):
        assert result.exit_code != 0, what
    elif not reads_value:
        assert result.exit_code == 0, what
    assert result.exit_code in (0, 1, 2), what  # never an internal error (3) or a crash
    assert result.exception is None or isinstance(result.exception, SystemExit), what
    if as_json and output == "out.txt" and command.startswith("analyze") and result.exit_code == 0:
        json.loads((project / "out.txt").read_text())  # -o gets the JSON
    elif as_json and result.stdout.strip():
        document = json.loads(result.stdout)  # JSON and nothing else
        if command == "check-json":
            assert document["ok"] == (result.exit_code == 0), what
        else:
            assert result.exit_code == 0 and document["complete"] == (not reads_value), what
    if as_json and result.exit_code == 0:
        assert result.stdout.strip(), what
    assert "hello from" not in result.stdout or not as_json, what
    after = _snapshot(project)
    assert {k: v for k, v in after.items() if k in before} == before, what  # inputs untouched
    assert not _children() - children, what
    assert torch.get_default_dtype() == default_dtype, what  # torch's state as it was
    leftovers = [p.name for p in tmp.iterdir() if not p.name.startswith("torchinductor")]
    assert not leftovers, what
