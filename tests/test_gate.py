"""The budget gate against a hostile model (issue 27): a gate passes only when every budget was
evaluated on figures graphcalc stands behind and all are within; anything else fails, visibly.

Each budget is analysed in a process of its own (graphcalc.commands.budget_worker): what its model does to
that process (sys.exit, os._exit, a signal, torch's global state) cannot decide `check`'s exit code
nor the next budget's figures.
"""

from __future__ import annotations

import json
import textwrap

import pytest
from typer.testing import CliRunner

from graphcalc.commands import budget, budget_cache
from graphcalc_cli.app import app

runner = CliRunner()

SMALL = """
from torch import nn
def build_model():
    return nn.Linear(8, 2)
"""
# 8*4096 + 4096 + 4096*2 + 2 = 45,058 params: over a 10K limit
BIG = """
import torch
from torch import nn
def build_model():
    return nn.Sequential(nn.Linear(8, 4096), nn.Linear(4096, 2))
"""


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHCALC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


def project(tmp_path, **models):
    """models/NAME.py for each model; one budget each, max_params 10K, batch 4, input 8."""
    (tmp_path / "models").mkdir(exist_ok=True)
    text = "[project]\nname = 'demo'\n"
    for name, source in models.items():
        (tmp_path / "models" / f"{name}.py").write_text(textwrap.dedent(source))
        text += (f"\n[[tool.graphcalc.budget]]\nmodel = 'models/{name}.py'\nbatch = 4\n"
                 "input = '8'\nmax_params = '10K'\n")
    (tmp_path / "pyproject.toml").write_text(text)


def check(*args):
    return runner.invoke(app, ["check", *args])


EXITS = {
    "sys.exit in forward": """
        import sys
        from torch import nn
        class Net(nn.Linear):
            def forward(self, x):
                sys.exit(0)
        def build_model():
            return Net(8, 2)
        """,
    "sys.exit at import": """
        import sys
        sys.exit(0)
        """,
    "os._exit in forward": """
        import os
        from torch import nn
        class Net(nn.Linear):
            def forward(self, x):
                os._exit(0)
        def build_model():
            return Net(8, 2)
        """,
    "os._exit at import": """
        import os
        os._exit(0)
        """,
    "a signal": """
        import os, signal
        os.kill(os.getpid(), signal.SIGKILL)
        """,
    "a BaseException": """
        class Stop(BaseException):
            pass
        raise Stop("no")
        """,
}


@pytest.mark.parametrize("how", list(EXITS))
def test_model_code_never_decides_the_exit_code(how, tmp_path):
    project(tmp_path, a_exits=EXITS[how], b_big=BIG)
    result = check()
    assert result.exit_code != 0, result.output
    assert "a_exits" in result.output
    js = check("--format", "json")
    assert js.exit_code == 2
    d = json.loads(js.stdout)  # the table is still written, the other budget still checked
    a, b = d["budgets"]
    assert not d["ok"] and a["error"] and a["figures"] is None
    assert b["error"] is None and not b["ok"] and b["figures"]["params"] == 45_058


def test_an_incomplete_figure_fails_the_gate_unless_the_budget_accepts_it(tmp_path):
    reads = """
        import torch
        from torch import nn
        class Reader(nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = nn.Linear(8, 8)
            def forward(self, h):
                h = self.lin(h)
                for _ in range(int(h.abs().sum().item()) % 7 + 50):  # loops over a value
                    h = torch.tanh(h @ h.new_ones(8, 8))
                return h
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.a, self.b = Reader(), nn.Linear(8, 2)
            def forward(self, x):
                return self.b(self.a(x))
        def build_model():
            return Net()
        """
    project(tmp_path, reads=reads)
    result = check()
    assert result.exit_code == 1, result.output
    assert "incomplete" in result.output
    d = json.loads(check("--format", "json").stdout)
    assert not d["ok"] and d["budgets"][0]["figures"]["incomplete"]
    text = (tmp_path / "pyproject.toml").read_text()
    (tmp_path / "pyproject.toml").write_text(text + "allow_incomplete = true\n")
    assert check().exit_code == 0


def test_budgets_do_not_leak_into_each_other_through_torch_s_global_state(tmp_path):
    # the first model sets fp16 as torch's default dtype at import: in one process the next
    # budget's parameters would be made in fp16, its figures read low, and the gate pass
    fp16 = """
        import torch
        from torch import nn
        torch.set_default_dtype(torch.float16)
        def build_model():
            return nn.Linear(8, 2)
        """
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "a.py").write_text(textwrap.dedent(fp16))
    (tmp_path / "models" / "b.py").write_text(textwrap.dedent(BIG))
    (tmp_path / "pyproject.toml").write_text(
        "[project]\nname = 'demo'\n"
        "\n[[tool.graphcalc.budget]]\nmodel = 'models/a.py'\ninput = '8'\nmax_params = '1M'\n"
        "\n[[tool.graphcalc.budget]]\nmodel = 'models/b.py'\ninput = '8'\n"
        "max_peak_memory = '400KiB'\n")
    alone = runner.invoke(app, ["analyze", "models/b.py", "--input", "8", "-f", "json"])
    peak = json.loads(alone.stdout)["memory"]["peak_bytes"]
    assert peak > 400 * 1024  # fp32 parameters, gradients and Adam's state
    d = json.loads(check("--format", "json").stdout)
    assert d["budgets"][1]["figures"]["peak_memory_bytes"] == peak
    assert not d["ok"]


def test_an_edit_in_a_src_layout_import_is_seen_by_the_cache_and_by_pre_commit(tmp_path,
                                                                                monkeypatch):
    (tmp_path / "src" / "mylib").mkdir(parents=True)
    (tmp_path / "src" / "mylib" / "__init__.py").write_text("")
    (tmp_path / "src" / "mylib" / "blocks.py").write_text("WIDTH = 8\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "src"))  # as an installed src/ package
    net = """
        import importlib
        from torch import nn
        blocks = importlib.import_module("mylib.blocks")  # no import statement to parse
        def build_model():
            return nn.Linear(8, blocks.WIDTH)
        """
    project(tmp_path, net=net)
    assert check().exit_code == 0
    (tmp_path / "src" / "mylib" / "blocks.py").write_text("WIDTH = 8000\n")  # 72,000 params
    result = check()
    assert result.exit_code == 1 and "cached" not in result.output, result.output
    # pre-commit's selection: the changed file is one the model imported
    config = budget.load_config(tmp_path / "pyproject.toml")
    cache = budget.Cache(budget_cache.default_cache_dir())
    assert budget.select(config, [tmp_path / "src" / "mylib" / "blocks.py"], cache)
    assert not budget.select(config, [tmp_path / "other.txt"], cache)


def test_model_prints_never_reach_stdout_under_json(tmp_path):
    noisy = """
        from torch import nn
        print("hello from the model file")
        class Net(nn.Linear):
            def forward(self, x):
                print("hello from forward")
                return super().forward(x)
        def build_model():
            return Net(8, 2)
        """
    project(tmp_path, noisy=noisy)
    result = runner.invoke(app, ["check", "--format", "json"])
    assert json.loads(result.stdout)["ok"]


@pytest.mark.parametrize("how", ["sys.exit in forward", "os._exit in forward",
                                 "a BaseException"])
@pytest.mark.parametrize("command", ["analyze", "fit", "verify"])
def test_model_code_never_ends_a_command_with_exit_0(command, how, tmp_path):
    (tmp_path / "m.py").write_text(textwrap.dedent(EXITS[how]))
    args = [command, str(tmp_path / "m.py"), "--input", "8"]
    if command == "fit":
        args += ["--memory", "1GiB"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    line = [ln for ln in result.output.splitlines() if ln.startswith("graphcalc:")][-1]
    assert "the model" in line and "no figures" in line
    import os
    assert os._exit.__name__ == "_exit"  # put back after the command


@pytest.mark.parametrize("command", [["analyze", "-f", "json"], ["trace", "-f", "json"]])
def test_model_prints_never_reach_stdout(command, tmp_path):
    (tmp_path / "m.py").write_text(textwrap.dedent("""
        from torch import nn
        print("hello from the model file")
        class Net(nn.Linear):
            def forward(self, x):
                print("hello from forward")
                return super().forward(x)
        def build_model():
            return Net(8, 2)
        """))
    result = runner.invoke(app, [command[0], str(tmp_path / "m.py"), "--input", "8",
                                 *command[1:]])
    assert result.exit_code == 0, result.output
    json.loads(result.stdout)


def test_fractional_limits_are_compared_as_written(tmp_path):
    # 19 x (78 + 1) = 1,501 parameters against 1,500.6: over (rounded, the limit read 1,501)
    (tmp_path / "m.py").write_text("from torch import nn\ndef build_model():\n"
                                   "    return nn.Linear(78, 19)\n")
    (tmp_path / "graphcalc.toml").write_text(
        "[[budget]]\nmodel = 'm.py'\ninput = '78'\nmax_params = '1.5006K'\n")
    result = check("--format", "json")
    assert result.exit_code == 1, result.output
    c = json.loads(result.stdout)["budgets"][0]["checks"][0]
    assert (c["value"], c["limit"], c["ok"]) == (1501, 1500.6, False)
    (tmp_path / "graphcalc.toml").write_text(
        "[[budget]]\nmodel = 'm.py'\ninput = '78'\nmax_params = 1501.4\n"
        "max_peak_memory = '1.5GiB'\n")
    assert check().exit_code == 0


@pytest.mark.parametrize("damage", ["{not json", '{"schema_version": 1, "budgets": '
                                                 '{"models/m.py": {"params": 1e999, '
                                                 '"flops": 1, "peak_memory_bytes": 1}}}'])
def test_a_damaged_baseline_is_mended_by_the_command_its_message_advises(damage, tmp_path):
    project(tmp_path, m=SMALL)
    text = (tmp_path / "pyproject.toml").read_text()
    (tmp_path / "pyproject.toml").write_text(text + "max_growth = '5%'\n")
    (tmp_path / "graphcalc-baseline.json").write_text(damage)
    result = check()
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "graphcalc check --update-baseline" in result.output
    assert check("--update-baseline").exit_code == 0
    assert check().exit_code == 0
