"""Budgets: `graphcalc check`, its config, the baseline, the cache and the pre-commit hook.

Figures asserted here come from a really built nn.Module (parameter counts), from hand
arithmetic (FLOPs of two linear layers) or from a real CPU step (`measure_step`, peak memory).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from graphcalc.commands import budget, budget_cache
from graphcalc.errors import ConfigError
from graphcalc.commands.measure import measure_step
from graphcalc.options import Options
from graphcalc_cli.app import app

from conftest import ROOT

runner = CliRunner()

# An MLP IN -> HIDDEN -> OUT; `width` is what a commit changes to grow the model.
MODEL = """
from torch import nn
from layers import block

def build_model():
    return nn.Sequential(block(8, {width}), nn.Linear({width}, 2))
"""
LAYERS = """
from torch import nn

def block(a, b):
    return nn.Sequential(nn.Linear(a, b), nn.ReLU())
"""


def mlp(width: int) -> nn.Module:
    return nn.Sequential(nn.Sequential(nn.Linear(8, width), nn.ReLU()), nn.Linear(width, 2))


def real_params(width: int) -> int:
    return sum(p.numel() for p in mlp(width).parameters())


def hand_flops(width: int, batch: int) -> int:
    # forward: 2 FLOPs per multiply-accumulate of each Linear: 2*B*(8*W + W*2);
    # backward: the weight gradients cost as much again, plus the input gradient of the second
    # Linear only (the first one's input, the batch, needs no gradient): 2*B*W*2.
    forward = 2 * batch * (8 * width + width * 2)
    return forward + forward + 2 * batch * width * 2


def project(tmp_path: Path, width: int = 8, **entry) -> Path:
    """A repository folder: models/net.py (importing models/layers.py) and a pyproject budget."""
    (tmp_path / "models").mkdir(exist_ok=True)
    (tmp_path / "models" / "net.py").write_text(MODEL.format(width=width))
    (tmp_path / "models" / "layers.py").write_text(LAYERS)
    fields = {"model": "models/net.py:build_model", "batch": 4, "input": "8", **entry}
    write_config(tmp_path / "pyproject.toml", fields)
    return tmp_path


def write_config(path: Path, *entries: dict, header: str = "[[tool.graphcalc.budget]]") -> None:
    def value(v):
        return json.dumps(v) if not isinstance(v, bool) else str(v).lower()

    text = "[project]\nname = 'demo'\n" if path.name == "pyproject.toml" else ""
    for e in entries:
        text += f"\n{header}\n" + "".join(f"{k} = {value(v)}\n" for k, v in e.items())
    path.write_text(text)


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHCALC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def analyses(monkeypatch):
    """Counts the analyses (traces) `check` runs: each in a process of its own
    (graphcalc.commands.budget_worker)."""
    calls = []
    real = budget._isolated

    def counting(b):
        calls.append(b.spec)
        return real(b)

    monkeypatch.setattr(budget, "_isolated", counting)
    return calls


def check(*args):
    return runner.invoke(app, ["check", *args])


def one_sentence(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


# --- units -----------------------------------------------------------------------------------------

def test_human_units_of_the_config():
    from graphcalc.units import format_percent, parse_bytes, parse_count, parse_percent

    assert parse_count("25M") == 25_000_000
    assert parse_count("4.5G") == 4_500_000_000
    assert parse_count(1200) == 1200
    assert parse_bytes("16GiB") == 16 * 2**30
    assert parse_bytes("1.5 TB") == 1_500_000_000_000
    assert parse_bytes("512MB") == 512 * 10**6
    assert parse_percent("5%") == 0.05
    assert parse_percent("7.5 %") == 0.075
    assert format_percent(0.072, signed=True) == "+7.2%"
    assert format_percent(-0.004, signed=True) == "-0.4%"
    for bad in ("5", 5, "-5%", "five%"):
        with pytest.raises(Exception, match="percentage"):
            parse_percent(bad)
    with pytest.raises(Exception, match="finite"):
        parse_count(float("inf"))


# --- pass, fail, growth ----------------------------------------------------------------------------

def test_within_budget_passes_with_the_figures_of_the_real_model(tmp_path):
    project(tmp_path, width=8, max_params="100", max_flops="2K", max_peak_memory="1 MiB")
    run = budget.check(budget.load_config(tmp_path / "pyproject.toml"))
    (outcome,) = run.outcomes
    assert run.ok and outcome.ok
    assert outcome.figures.params == real_params(8) == 90
    assert outcome.figures.flops == hand_flops(8, batch=4) == 1408
    real = measure_step(mlp(8), lambda b: torch.randn(b, 8), Options(batch=4))
    assert outcome.figures.peak_memory_bytes == real.peak_bytes
    assert [c.figure for c in outcome.checks] == ["params", "flops", "peak_memory_bytes"]

    result = check()
    assert result.exit_code == 0, result.output
    assert "1 of 1 budgets hold" in result.output and "OVER" not in result.output


def test_over_budget_fails_and_says_by_how_much(tmp_path):
    # width 9: 8*9+9 + 9*2+2 = 101 parameters, one over.
    project(tmp_path, width=9, max_params="100", max_flops="1K")
    assert real_params(9) == 101
    run = budget.check(budget.load_config(tmp_path / "pyproject.toml"))
    params, flops = run.outcomes[0].checks
    assert not params.ok and params.excess == 1
    assert not flops.ok and flops.excess == hand_flops(9, batch=4) - 1000

    result = check()
    assert result.exit_code == 1
    assert "OVER by 1 (+1.0%)" in result.stdout
    assert "0 of 1 budgets hold" in result.stdout
    assert "budget exceeded: models/net.py:build_model: params over by 1 (+1.0%)" in result.output


def test_growth_over_the_baseline_fails(tmp_path):
    project(tmp_path, width=8, max_growth="5%")
    result = check("--update-baseline")
    assert result.exit_code == 0, result.output
    baseline = json.loads((tmp_path / "graphcalc-baseline.json").read_text())
    entry = baseline["budgets"]["models/net.py:build_model"]
    assert entry["params"] == real_params(8) and entry["flops"] == hand_flops(8, batch=4)

    project(tmp_path, width=9, max_growth="5%")  # +11 params: 101 / 90 - 1 = 12.2%
    growth = real_params(9) / real_params(8) - 1
    result = check()
    assert result.exit_code == 1
    assert f"+{growth * 100:.1f}% params" == "+12.2% params"
    assert "+12.2% params" in result.stdout
    assert "+12.2% params" in result.output.splitlines()[-1]

    # The same growth under a larger limit passes: max_growth 15% admits 12.2%.
    project(tmp_path, width=9, max_growth="15%")
    assert check().exit_code == 0


def test_limits_are_inclusive_and_exact(tmp_path):
    project(tmp_path, max_flops=10**15, max_growth="5%")
    (b,) = budget.load_config(tmp_path / "pyproject.toml").budgets
    base = {"config": b.settings(), "params": 100, "flops": 10**15, "peak_memory_bytes": 1000}

    def verdicts(params, flops):
        figures = budget.Figures(params=params, flops_forward=flops, flops_backward=0,
                                 peak_memory_bytes=1000)
        return [c.ok for c in budget.evaluate(b, figures, base)]

    # [flops limit, params growth, flops growth, peak memory growth]
    assert verdicts(105, 10**15) == [True, True, True, True]       # 105 / 100 = +5.0% exactly
    assert verdicts(106, 10**15 + 1) == [False, False, True, True]  # one FLOP over 1P fails


def test_growth_without_a_baseline_fails_and_says_what_to_do(tmp_path):
    project(tmp_path, max_growth="5%")
    result = check()
    assert result.exit_code == 1
    assert "no baseline" in result.stdout
    assert "--update-baseline" in result.output


def test_a_baseline_taken_with_other_settings_is_not_compared(tmp_path):
    project(tmp_path, max_growth="5%", batch=4)
    assert check("--update-baseline").exit_code == 0
    project(tmp_path, max_growth="5%", batch=8)
    result = check()
    assert result.exit_code == 1
    assert "baseline taken with batch 4 (now 8)" in result.stdout


def test_update_baseline_on_changed_files_keeps_the_other_entries(tmp_path):
    project(tmp_path)
    (tmp_path / "models" / "other.py").write_text(
        "from torch import nn\ndef build_model():\n    return nn.Linear(8, 3)\n")
    write_config(tmp_path / "pyproject.toml",
                 {"model": "models/net.py:build_model", "input": "8", "max_growth": "5%"},
                 {"model": "models/other.py", "input": "8", "max_growth": "5%"})
    assert check("--update-baseline").exit_code == 0
    (tmp_path / "models" / "other.py").write_text(
        "from torch import nn\ndef build_model():\n    return nn.Linear(8, 4)\n")
    assert check("--update-baseline", "models/other.py").exit_code == 0
    entries = json.loads((tmp_path / "graphcalc-baseline.json").read_text())["budgets"]
    assert entries["models/other.py"]["params"] == 8 * 4 + 4
    assert entries["models/net.py:build_model"]["params"] == real_params(8)


def test_json_for_ci(tmp_path):
    project(tmp_path, width=9, max_params="100", max_peak_memory="1GiB")
    result = check("--format", "json")
    assert result.exit_code == 1
    d = json.loads(result.stdout)
    assert d["ok"] is False and d["config_file"] == str(tmp_path / "pyproject.toml")
    (b,) = d["budgets"]
    assert b["figures"]["params"] == 101 and b["figures"]["flops"] == hand_flops(9, batch=4)
    assert [(c["figure"], c["ok"], c["excess"]) for c in b["checks"]] == [
        ("params", False, 1), ("peak_memory_bytes", True, 0)]


# --- bad configs: exit 2, one sentence naming the key, the budget and the file ---------------------

@pytest.mark.parametrize("key,value,words", [
    ("max_param", "25M", ["unknown key 'max_param'", "did you mean 'max_params'"]),
    ("max_params", "lots", ["'max_params'", "does not parse"]),
    ("max_flops", -5, ["'max_flops'", "negative"]),
    ("max_peak_memory", "16 parsecs", ["'max_peak_memory'", "16GiB"]),
    ("max_growth", "5", ["'max_growth'", "5%"]),
    ("batch", 0, ["'batch'", "at least 1"]),
    ("batch", "256", ["'batch'", "whole number"]),
    ("dtype", "fp64", ["'dtype'", "fp32, fp16, bf16"]),
    ("optim", "lion", ["'optim'", "adamw"]),
    ("amp", "bf16", ["'amp'", "fp32"]),  # with dtype bf16: autocast needs fp32 weights
    ("device", "tpu", ["'device'", "cpu, cuda"]),
    ("input", "3xfoo", ["'input'", "does not parse"]),
    ("input", 3, ["'input'", "shape string"]),
    ("model", "models/gone.py", ["'model'", "not found", "models/gone.py"]),
    ("gpu", "a100", ["'gpu'", "a100-80gb", "a100-40gb"]),
    ("gpu", "h1000", ["'gpu'", "unknown GPU"]),
])
def test_bad_key_or_value(tmp_path, key, value, words):
    entry = {"max_params": "1M", "dtype": "bf16" if key == "amp" else "fp32", key: value}
    project(tmp_path, **entry)
    result = check()
    assert result.exit_code == 2, result.output
    line = one_sentence(result)
    for word in words + ["budget 1", "pyproject.toml"]:
        assert word in line, line


def test_a_gpu_budget_must_fit_the_card_with_the_device_total(tmp_path):
    # Every tensor of this step (an 8 -> 8 -> 2 MLP at batch 4) is under kSmallSize and all of
    # them together under 2 MiB: the caching allocator holds one 2 MiB small segment
    # (CUDACachingAllocator.cpp: kSmallBuffer). The two cuBLAS workspaces (forward and backward
    # threads, 8,519,680 B each on a T4: graphcalc.gpu.cuda) are 1-10 MiB requests: one 20 MiB
    # segment (kLargeBuffer) holds both. The card holds 2 + 20 MiB + the CUDA context.
    from graphcalc.gpu.gpus import CUDA_CONTEXT_BYTES, find_gpu

    project(tmp_path, width=8, gpu="Tesla T4")
    run = budget.check(budget.load_config(tmp_path / "pyproject.toml"))
    (outcome,) = run.outcomes
    assert outcome.budget.options.device == "cuda"
    assert outcome.figures.peak_memory_bytes == (2 + 20) * 2**20 + CUDA_CONTEXT_BYTES
    (fit,) = outcome.checks
    assert (fit.figure, fit.limit, fit.ok) == ("gpu_fit", find_gpu("t4").gpu.memory_bytes, True)
    result = check()
    assert result.exit_code == 0, result.output
    assert "on T4 16GB" in result.stdout and "GPU memory" in result.stdout


def test_a_gpu_budget_that_does_not_fit_fails(tmp_path):
    # batch 2**28: the input alone is 2**28 x 8 x 4 B = 8 GiB, its 8-wide hidden activation and
    # relu another 8 GiB each: past a T4's 14.7 GiB.
    project(tmp_path, width=8, gpu="t4", batch=2**28)
    result = check()
    assert result.exit_code == 1, result.output
    assert "GPU memory over by" in result.output


def test_a_gpu_budget_on_the_cpu_is_refused(tmp_path):
    project(tmp_path, gpu="t4", device="cpu")
    line = one_sentence(check())
    assert "'gpu'" in line and "CUDA" in line


@pytest.mark.parametrize("text,words", [
    ("[[tool.graphcalc.budget]]\nmodel = 'models/net.py'\n", ["sets no limit", "max_params"]),
    ("[[tool.graphcalc.budget]]\nmax_params = '1M'\n", ["has no 'model'"]),
    ("[tool.graphcalc]\nbaseline = 'b.json'\n", ["no [[tool.graphcalc.budget]]"]),
    ("[tool.graphcalc]\nbudget = 3\n", ["array of tables"]),
    ("[[tool.graphcalc.budget]\n", ["not valid TOML"]),
    ("[[tool.graphcalc.budget]]\nmodel = 'models/net.py'\nmax_params = '1M'\n"
     "[[tool.graphcalc.budget]]\nmodel = 'models/net.py'\nmax_params = '2M'\n",
     ["budgets 1 and 2", "distinct `name`"]),
])
def test_bad_config_files(tmp_path, text, words):
    project(tmp_path)
    (tmp_path / "pyproject.toml").write_text(text)
    result = check()
    assert result.exit_code == 2, result.output
    line = one_sentence(result)
    for word in words + ["pyproject.toml"]:
        assert word in line, line


def test_graphcalc_toml_keys(tmp_path):
    project(tmp_path)
    (tmp_path / "graphcalc.toml").write_text("baseline = 'b.json'\nbudgets = []\n")
    result = check()
    assert result.exit_code == 2
    assert "unknown key 'budgets' in graphcalc.toml" in one_sentence(result)
    (tmp_path / "graphcalc.toml").write_text("baseline = 'b.json'\n")
    assert "graphcalc.toml has no [[budget]] entry" in one_sentence(check())


def test_no_config_anywhere(tmp_path):
    result = check()
    assert result.exit_code == 2
    assert "no budget config found" in one_sentence(result)


def test_missing_model_file(tmp_path):
    project(tmp_path, max_params="1M")
    (tmp_path / "models" / "net.py").unlink()
    result = check()
    assert result.exit_code == 2
    line = one_sentence(result)
    assert "bad 'model' in budget 1 ('models/net.py:build_model') of pyproject.toml" in line
    assert "model file not found: models/net.py" in line


def test_a_model_that_fails_to_import_names_the_budget(tmp_path):
    project(tmp_path, max_params="1M")
    (tmp_path / "models" / "layers.py").write_text("raise RuntimeError('broken layers')\n")
    result = check()
    assert result.exit_code == 2
    # the table shows the budget that could not be analysed; the closing sentence names it
    assert "FAIL" in result.stdout and "Traceback" not in result.output
    line = [ln for ln in result.output.splitlines() if ln.startswith("graphcalc:")][-1]
    assert "models/net.py:build_model: not analysed" in line and "broken layers" in line


def test_a_damaged_baseline(tmp_path):
    project(tmp_path, max_growth="5%")
    (tmp_path / "graphcalc-baseline.json").write_text("{not json")
    result = check()
    assert result.exit_code == 2
    assert "graphcalc-baseline.json is not a graphcalc baseline" in one_sentence(result)


def test_graphcalc_toml_first_and_explicit_config(tmp_path):
    project(tmp_path, max_params="1")  # pyproject: would fail
    write_config(tmp_path / "graphcalc.toml", {"model": "models/net.py", "input": "8",
                                               "max_params": "1K"}, header="[[budget]]")
    (tmp_path / "sub").mkdir()
    os.chdir(tmp_path / "sub")  # found from a subfolder too, and paths stay the config's
    assert budget.find_config() == tmp_path / "graphcalc.toml"
    assert check().exit_code == 0
    assert check("--config", str(tmp_path / "pyproject.toml")).exit_code == 1


# --- changed files, local imports and the cache -----------------------------------------------------

def test_local_imports_are_found_by_parsing(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "model.py").write_text(textwrap.dedent("""
        import os, torch
        import layers
        from pkg.conv import Conv
        def build_model():
            import late          # imports inside functions count too
            return None
    """))
    (tmp_path / "layers.py").write_text("import numpy\n")
    (tmp_path / "late.py").write_text("")
    (tmp_path / "unused.py").write_text("")
    (tmp_path / "pkg" / "__init__.py").write_text("from .norm import Norm\n")
    (tmp_path / "pkg" / "norm.py").write_text("")
    (tmp_path / "pkg" / "conv.py").write_text("from . import norm\nfrom .. import late\n")
    files = budget_cache.local_files(tmp_path / "model.py", tmp_path)
    assert [f.relative_to(tmp_path).as_posix() for f in files] == [
        "late.py", "layers.py", "model.py", "pkg/__init__.py", "pkg/conv.py", "pkg/norm.py"]


def test_changed_files_select_the_budgets_they_touch(tmp_path):
    project(tmp_path, max_params="1M")
    (tmp_path / "models" / "other.py").write_text(
        "from torch import nn\ndef build_model():\n    return nn.Linear(8, 3)\n")
    (tmp_path / "README.py").write_text("")
    write_config(tmp_path / "pyproject.toml",
                 {"model": "models/net.py:build_model", "input": "8", "max_params": "1M"},
                 {"model": "models/other.py", "input": "8", "max_params": "1M"})
    config = budget.load_config(tmp_path / "pyproject.toml")
    # never analysed with a cache: what a model imports beyond what its source names is not
    # known, so any changed Python file touches it
    cold = lambda files: [b.name for b in budget.select(config, files)]  # noqa: E731
    assert cold(["README.py"]) == ["models/net.py:build_model", "models/other.py"]
    assert cold(["notes.txt"]) == []
    assert check().exit_code == 0  # analysed: the cache records what each model imported
    cache = budget.Cache(budget_cache.default_cache_dir())
    names = lambda files: [b.name for b in budget.select(config, files, cache)]  # noqa: E731
    assert names(["models/layers.py"]) == ["models/net.py:build_model"]
    assert names(["models/other.py"]) == ["models/other.py"]
    assert names(["README.py"]) == []
    assert names(["pyproject.toml"]) == ["models/net.py:build_model", "models/other.py"]

    result = check("README.py")
    assert result.exit_code == 0
    assert "no budgeted model among the 1 changed files" in result.output
    result = check("models/layers.py")
    assert result.exit_code == 0 and "1 untouched" in result.stdout


def test_an_unchanged_model_is_not_traced_again(tmp_path, analyses):
    project(tmp_path, max_params="1M")
    assert check().exit_code == 0
    assert len(analyses) == 1
    result = check("-f", "json")
    assert result.exit_code == 0 and len(analyses) == 1  # from the cache
    assert json.loads(result.stdout)["budgets"][0]["cached"] is True
    (tmp_path / "models" / "layers.py").write_text(LAYERS + "\n# an edit to a local import\n")
    assert check().exit_code == 0 and len(analyses) == 2
    project(tmp_path, max_params="1M", batch=5)  # the options are in the key too
    assert check().exit_code == 0 and len(analyses) == 3
    assert check("--no-cache").exit_code == 0 and len(analyses) == 4


def test_cached_figures_equal_fresh_ones(tmp_path):
    project(tmp_path, width=12, max_params="1M")
    config = budget.load_config(tmp_path / "pyproject.toml")
    cache = budget.Cache(tmp_path / "cache")
    fresh, cached = budget.measure(config.budgets[0], config.folder, cache)
    again, hit = budget.measure(config.budgets[0], config.folder, cache)
    assert (cached, hit) == (False, True) and again == fresh
    assert fresh.params == real_params(12)


def test_config_errors_are_graphcalc_errors_with_exit_2(tmp_path):
    project(tmp_path, max_params="1M", batch=0)
    with pytest.raises(ConfigError) as e:
        budget.load_config(tmp_path / "pyproject.toml")
    assert e.value.exit_code == 2


# --- the real pre-commit ----------------------------------------------------------------------------

BIN = str(Path(sys.executable).parent)
PRE_COMMIT = shutil.which("pre-commit", path=BIN + os.pathsep + os.environ.get("PATH", ""))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None or PRE_COMMIT is None,
                    reason="needs git and pre-commit (pip install -e '.[test]')")
def test_pre_commit_refuses_a_commit_over_budget(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "PRE_COMMIT"))}
    (tmp_path / "gitconfig").write_text("")
    env.update(PATH=BIN + os.pathsep + env.get("PATH", ""),  # where `graphcalc` is installed
               PRE_COMMIT_HOME=str(tmp_path / "pre-commit-home"),
               GRAPHCALC_CACHE_DIR=str(tmp_path / "cache"),
               GIT_CONFIG_GLOBAL=str(tmp_path / "gitconfig"), GIT_CONFIG_NOSYSTEM="1",
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com")

    def sh(*cmd, cwd, ok=True):
        out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
        if ok:
            assert out.returncode == 0, out.stdout + out.stderr
        return out

    # This project's hook manifest, as it is in the working tree, in a hook repo at a rev.
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    shutil.copy(ROOT / ".pre-commit-hooks.yaml", hooks)
    sh("git", "init", "-q", cwd=hooks)
    sh("git", "add", ".", cwd=hooks)
    sh("git", "commit", "-qm", "hooks", cwd=hooks)
    rev = sh("git", "rev-parse", "HEAD", cwd=hooks).stdout.strip()

    (tmp_path / "repo").mkdir()
    repo = project(tmp_path / "repo", width=8, max_params="100")
    (repo / ".pre-commit-config.yaml").write_text(textwrap.dedent(f"""
        repos:
          - repo: {hooks.as_posix()}
            rev: {rev}
            hooks:
              - id: graphcalc-check
    """))
    sh("git", "init", "-q", cwd=repo)
    sh(PRE_COMMIT, "install", cwd=repo)
    sh("git", "add", ".", cwd=repo)
    within = sh("git", "commit", "-m", "an MLP within budget", cwd=repo)
    assert "graphcalc budgets" in within.stderr and "Passed" in within.stderr

    (repo / "models" / "net.py").write_text(MODEL.format(width=9))  # 101 parameters
    sh("git", "add", ".", cwd=repo)
    over = sh("git", "commit", "-m", "grow the MLP", cwd=repo, ok=False)
    output = over.stdout + over.stderr
    assert over.returncode != 0, output
    assert "Failed" in output
    assert "OVER by 1 (+1.0%)" in output and "0 of 1 budgets hold" in output
    log = sh("git", "log", "--oneline", cwd=repo).stdout.splitlines()
    assert len(log) == 1  # the commit was refused

    # A change that touches no budgeted model goes through, and checks nothing.
    sh("git", "reset", "-q", "--hard", cwd=repo)
    (repo / "notes.py").write_text("# notes\n")
    sh("git", "add", ".", cwd=repo)
    notes = sh(PRE_COMMIT, "run", "--verbose", cwd=repo)
    assert "no budgeted model among the 1 changed files" in notes.stdout + notes.stderr
    assert "Passed" in sh("git", "commit", "-m", "notes", cwd=repo).stderr
