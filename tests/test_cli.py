"""The command line: formats, the JSON contract, and one clear sentence for each bad input."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from graphcalc.commands.analyze import analyze_file
from graphcalc.gpu.gpus import CUDA_CONTEXT_BYTES
from graphcalc.options import Options
from graphcalc_cli.app import app

from conftest import SAMPLES

runner = CliRunner()
CNN = str(SAMPLES / "seed_cnn.py")


def run(*args):
    return runner.invoke(app, list(args))


def test_json_follows_the_contract_and_equals_the_library():
    result = run("analyze", CNN, "--batch", "16", "--optim", "adam", "--format", "json")
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)
    assert d["schema_version"] == 1
    assert set(d["config"]) >= {"batch", "dtype", "optimizer"}
    assert set(d["totals"]) >= {"params", "trainable_params", "buffers", "flops_forward",
                                "flops_backward", "macs_forward"}
    assert set(d["memory"]) >= {"peak_bytes", "inference_peak_bytes", "breakdown"}
    assert set(d["memory"]["breakdown"]) == {"parameters", "gradients", "optimizer_state",
                                             "batch", "activations", "workspace",
                                             "optimizer_temporaries"}
    for layer in d["layers"]:
        assert set(layer) >= {"name", "type", "output_shapes", "params", "flops_forward",
                              "flops_backward", "activation_bytes", "saved_bytes"}
        assert all(isinstance(layer[k], int) for k in ("params", "flops_forward",
                                                       "activation_bytes", "saved_bytes"))
    assert isinstance(d["unknown_ops"], list)
    assert d == analyze_file(CNN, Options(batch=16, optimizer="adam")).to_dict()


@pytest.mark.parametrize("fmt,marker", [("table", "Peak training memory"), ("md", "| Layer |"),
                                        ("csv", "name,type,depth")])
def test_formats(fmt, marker):
    result = run("analyze", CNN, "--batch", "16", "--format", fmt)
    assert result.exit_code == 0, result.output
    assert marker in result.stdout


def test_output_file_and_depth(tmp_path):
    out = tmp_path / "r.json"
    result = run("analyze", CNN, "--batch", "4", "-f", "json", "-o", str(out), "--depth", "1")
    assert result.exit_code == 0, result.output
    d = json.loads(out.read_text())
    assert [layer["name"] for layer in d["layers"]] == ["(root)", "conv", "flatten", "fc", "[loss]"]
    assert sum(layer["params"] for layer in d["layers"]) == 26_926


def test_input_option_and_named_factory(tmp_path):
    f = tmp_path / "m.py"
    f.write_text(textwrap.dedent("""
        import torch
        from torch import nn
        def build_net():
            return nn.Sequential(nn.Flatten(), nn.Linear(12, 4))
        class Other(nn.Module):
            pass
    """))
    result = run("analyze", f"{f}:build_net", "--input", "3x2x2", "--batch", "5", "-f", "json")
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)
    assert d["totals"]["params"] == 52
    assert d["layers"][0]["output_shapes"] == [[5, 4]]


def _bad(tmp_path, source: str, *extra):
    f = tmp_path / "bad.py"
    f.write_text(textwrap.dedent(source))
    return run("analyze", str(f), *extra)


def _one_sentence(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


def test_missing_file():
    result = run("analyze", "no/such/model.py")
    assert result.exit_code == 2
    assert "not found" in _one_sentence(result)


def test_syntax_error_names_file_and_line(tmp_path):
    result = _bad(tmp_path, "import torch\ndef build_model(:\n")
    assert result.exit_code == 2
    assert "bad.py:2" in _one_sentence(result)


def test_import_error_names_the_line(tmp_path):
    result = _bad(tmp_path, "import torch\nimport no_such_module_here\n")
    assert result.exit_code == 2
    assert "bad.py:2" in _one_sentence(result)


def test_not_python(tmp_path):
    f = tmp_path / "weights.py"
    f.write_bytes(b"\x00\x01\x02\xff")
    result = run("analyze", str(f))
    assert result.exit_code == 2
    assert "not a Python file" in _one_sentence(result)


def test_no_model(tmp_path):
    result = _bad(tmp_path, "x = 1\n", "--input", "3")
    assert result.exit_code == 2
    assert "no model found" in _one_sentence(result)


def test_several_models_are_listed(tmp_path):
    result = _bad(tmp_path, """
        from torch import nn
        class A(nn.Module): pass
        class B(nn.Module): pass
    """, "--input", "3")
    assert result.exit_code == 2
    line = _one_sentence(result)
    assert "A" in line and "B" in line


def test_factory_that_raises(tmp_path):
    result = _bad(tmp_path, """
        def build_model():
            raise ValueError("no config")
    """, "--input", "3")
    assert result.exit_code == 2
    assert "no config" in _one_sentence(result)


def test_input_spec_that_does_not_parse():
    result = run("analyze", str(SAMPLES / "mnist_mlp.py"), "--input", "3xfoo")
    assert result.exit_code == 2
    assert "does not parse" in _one_sentence(result)


def test_inputs_that_do_not_fit_name_the_layer():
    result = run("analyze", str(SAMPLES / "mnist_mlp.py"), "--input", "3x32x32")
    assert result.exit_code == 2
    line = _one_sentence(result)
    assert "layer '1'" in line and "3072" in line and "784" in line


@pytest.mark.parametrize("args", [["--batch", "0"], ["--batch", "-3"]])
def test_bad_batch(args):
    result = run("analyze", CNN, *args)
    assert result.exit_code == 2
    assert "at least 1" in _one_sentence(result)


def test_unknown_optimizer_lists_the_valid_ones():
    result = run("analyze", CNN, "--optim", "lion")
    assert result.exit_code == 2
    assert "adam" in result.output and "sgd" in result.output


def test_huge_batch_analyses_without_allocating():
    result = run("analyze", CNN, "--batch", str(10**9), "-f", "json")
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)
    assert d["memory"]["breakdown"]["batch"] == 10**9 * 3 * 32 * 32 * 4


def test_strict_fails_on_unknown_ops(tmp_path):
    source = """
        import torch
        from torch import nn
        class M(nn.Module):
            def __init__(self):
                super().__init__()
                self.w = nn.Parameter(torch.ones(4, 4))
            def forward(self, x):
                return torch.linalg.svd(x @ self.w).S
    """
    assert _bad(tmp_path, source, "--input", "4x4").exit_code == 0
    result = _bad(tmp_path, source, "--input", "4x4", "--strict")
    assert result.exit_code == 1
    assert "svd" in result.output


def test_debug_shows_the_traceback():
    result = run("analyze", "no/such/model.py", "--debug")
    assert result.exit_code != 0
    assert result.exception is not None


def test_the_cli_package_is_not_a_top_level_cli_module(tmp_path):
    code = "import importlib.util, graphcalc_cli; print(importlib.util.find_spec('cli'))"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert out.stdout.strip() == "None", out.stderr


def test_unknown_dtype_lists_the_valid_ones():
    result = run("analyze", CNN, "--dtype", "fp8")
    assert result.exit_code == 2
    assert all(d in result.output for d in ("fp32", "fp16", "bf16"))


def _graphcalc(*args, env=None):
    """The installed command in a fresh process: what a user's terminal shows, torch's own log
    handlers included (CliRunner does not capture them: they hold the real stderr)."""
    exe = Path(sys.executable).with_name("graphcalc")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=300,
                          env=env)


@pytest.mark.slow
def test_inputs_that_do_not_fit_print_one_sentence_and_no_torch_log():
    out = _graphcalc("analyze", str(SAMPLES / "mnist_mlp.py"), "--input", "3x32x32")
    assert out.returncode == 2
    lines = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, out.stdout + out.stderr
    assert lines[0].startswith("graphcalc: ") and "layer '1'" in lines[0]


@pytest.mark.slow
def test_debug_keeps_torchs_log_of_the_failing_kernel():
    out = _graphcalc("analyze", str(SAMPLES / "mnist_mlp.py"), "--input", "3x32x32", "--debug")
    assert out.returncode != 0
    assert "failed while attempting to run meta" in out.stderr


@pytest.mark.parametrize("spec", [":int64", "int64"])
def test_an_input_of_the_batch_alone(tmp_path, spec):
    # A bag of ids, one per sample: shape (batch,). Embedding(10, 4) + Linear(4, 2):
    # 40 + 4*2 + 2 = 50 params; output (6, 2).
    f = tmp_path / "ids.py"
    f.write_text(textwrap.dedent("""
        from torch import nn
        def build_model():
            return nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 2))
    """))
    result = run("analyze", str(f), "--input", spec, "--batch", "6", "-f", "json")
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)
    assert d["totals"]["params"] == 50
    assert d["layers"][0]["output_shapes"] == [[6, 2]]
    assert d["memory"]["breakdown"]["batch"] == 6 * 8  # six int64 ids


def test_input_spec_forms():
    from graphcalc.errors import UsageError
    from graphcalc.sources.loader import InputSpec

    assert InputSpec.parse(":int64").make(5).shape == (5,)
    assert InputSpec.parse("bool").make(3).dtype == torch.bool
    assert InputSpec.parse("128:int64").make(2).shape == (2, 128)
    for bad in (":", "foo", "x:int64", "3x"):
        with pytest.raises(UsageError, match="does not parse"):
            InputSpec.parse(bad)
    with pytest.raises(UsageError, match="unknown dtype"):
        InputSpec.parse(":int8")


def _help_texts():
    """Every help string of the app: each command's docstring and each of its parameters'."""
    import typer.main

    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        texts = [command.help or ""] + [p.help or "" for p in command.params]
        yield name, texts


def test_help_prints_every_bracket_as_written():
    # `[tool.graphcalc]` was read as rich markup and vanished from `check --help`.
    seen = 0
    for name, texts in _help_texts():
        result = runner.invoke(app, [name, "--help"], env={"COLUMNS": "400"})
        assert result.exit_code == 0, result.output
        for text in texts:
            for bracketed in re.findall(r"\S*\[[^\]]*\]\S*", text):
                seen += 1
                assert bracketed in result.output, (name, bracketed)
    assert seen >= 6  # FILE[:NAME] in five commands, [tool.graphcalc] in check


def test_version_names_graphcalc_and_torch():
    import graphcalc

    result = run("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"graphcalc {graphcalc.__version__} (torch {torch.__version__})"


WIDE_MODEL = """
    from collections import OrderedDict
    from torch import nn
    class Inner(nn.Module):
        def __init__(self):
            super().__init__()
            self.projection_of_the_queries_in_the_attention = nn.Linear(8, 8)
        def forward(self, x):
            return self.projection_of_the_queries_in_the_attention(x)
    def build_model():
        return nn.Sequential(OrderedDict(encoder_stage_one=nn.Sequential(OrderedDict(
            first_block_of_the_stage=Inner()))))
"""
DEEPEST = "encoder_stage_one.first_block_of_the_stage.projection_of_the_queries_in_the_attention"


def _table(tmp_path, columns):
    f = tmp_path / "wide.py"
    f.write_text(textwrap.dedent(WIDE_MODEL))
    result = runner.invoke(app, ["analyze", str(f), "--input", "8", "--batch", "4"],
                           env={"COLUMNS": columns})
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


def test_the_table_uses_a_wide_terminal_and_never_breaks_a_name(tmp_path):
    # The table needs about 170 columns: it used to be cut at 140 and fold this name.
    lines = _table(tmp_path, "220")
    assert max(len(line) for line in lines) <= 220
    assert any(line.startswith("│       " + DEEPEST + " │ Linear") for line in lines)
    assert any("[4, 8]" in line for line in lines)  # the shape on one line too


def test_a_narrow_terminal_wraps_the_summary_not_the_names(tmp_path):
    lines = _table(tmp_path, "60")
    assert any(("  " * 3 + DEEPEST + " │") in line for line in lines)
    table_end = next(i for i, line in enumerate(lines) if line.startswith("└"))
    assert max(len(line) for line in lines[table_end + 1:]) <= 60


def test_a_pipe_gets_the_natural_width(tmp_path):
    lines = _table(tmp_path, None)
    assert any(DEEPEST + " │ Linear" in line for line in lines)
    assert any(line.startswith("Timeline") and len(line) > 150 for line in lines)  # unwrapped


def test_markdown_has_the_tables_total_row():
    # The seed CNN's 26,926 parameters (SEEDS; sum(p.numel()) in test_samples.py).
    md = run("analyze", CNN, "--batch", "4", "-f", "md").stdout.splitlines()
    table = run("analyze", CNN, "--batch", "4", "-f", "table").stdout.splitlines()
    total = [c.strip().strip("*") for c in md[[i for i, line in enumerate(md)
                                              if line.startswith("| **Total**")][0]].split("|")]
    assert total[1] == "Total" and total[4] == "26.9K"
    table_total = next(line for line in table if line.startswith("│ Total"))
    assert [c.strip() for c in table_total.split("│")][1:-1] == total[1:-1]


def test_a_name_not_in_the_file_lists_the_ones_that_are(tmp_path):
    f = tmp_path / "m.py"
    f.write_text(textwrap.dedent("""
        import torch
        from torch import nn
        from torch.nn import Linear
        class Net(nn.Module):
            pass
        def build_small():
            return Net()
        def example_inputs(batch):
            return torch.ones(batch, 3)
        shared = nn.Linear(2, 2)
        _private = nn.Linear(2, 2)
    """))
    result = run("analyze", f"{f}:nope")
    assert result.exit_code == 2
    line = _one_sentence(result)
    assert "has no 'nope'" in line and line.endswith("it defines Net, build_small, shared")
    f.write_text("x = 1\n")
    assert "defines no nn.Module" in _one_sentence(run("analyze", f"{f}:nope"))


def test_plan_is_for_gpus_by_default_and_says_ranks_on_cpu():
    spec = str(SAMPLES / "mnist_mlp.py")
    args = ["plan", spec, "--batch", "8", "--memory", "2MiB", "--world-size", "2",
            "--shard", "ddp"]
    gpus, cpu = run(*args), run(*args, "--device", "cpu")
    assert gpus.exit_code == 0 and cpu.exit_code == 0, gpus.output + cpu.output
    gpus, cpu = " ".join(gpus.stdout.split()), " ".join(cpu.stdout.split())  # the title wraps
    assert "per GPU" in gpus and "for cuda" in gpus and "peak/GPU" in gpus
    assert "GPU" not in cpu
    assert "per rank" in cpu and "for cpu" in cpu and "peak/rank" in cpu


# --- --gpu / --memory: the step on a GPU (graphcalc.gpu.gpus, graphcalc.gpu.allocator) ---------------------

def test_gpu_json_says_which_card_and_equals_the_library():
    from graphcalc.gpu.gpus import CUDA_CONTEXT_BYTES, find_gpu

    result = run("analyze", CNN, "--batch", "16", "--gpu", "NVIDIA A100-SXM4-80GB", "-f", "json")
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)
    g = d["gpu"]
    assert (d["config"]["device"], d["config"]["gpu"]) == ("cuda", "a100-80gb")
    assert (g["gpu"], g["compute_capability"]) == ("A100 80GB", "sm80")
    assert g["capacity_bytes"] == find_gpu("a100-80gb").gpu.memory_bytes
    # segments are whole multiples of 2 MiB (kSmallBuffer, kLargeBuffer, kRoundLarge) and hold
    # at least what is allocated, which is at least the replay's peak of live storage
    assert g["peak_reserved_bytes"] % (2 << 20) == 0
    assert g["peak_reserved_bytes"] >= g["peak_allocated_bytes"] >= d["memory"]["peak_bytes"]
    assert g["device_total_bytes"] == g["peak_reserved_bytes"] + CUDA_CONTEXT_BYTES
    # the headroom is what is left beyond the margin the verdict keeps (graphcalc.gpu.gpu_fit)
    assert g["estimate_margin_bytes"] > 0
    assert g["headroom_bytes"] == g["capacity_bytes"] - g["device_total_bytes"] \
        - g["estimate_margin_bytes"] and g["fits"]
    assert g["cublas_workspace_bytes"] == 8_519_680
    assert d == analyze_file(CNN, Options(batch=16, gpu="a100-80gb")).to_dict()
    # without --gpu the JSON is as it was: no gpu key, no gpu in the config
    plain = json.loads(run("analyze", CNN, "--batch", "16", "-f", "json").stdout)
    assert "gpu" not in plain and "gpu" not in plain["config"]


def test_gpu_table_names_the_card_and_gives_the_verdict():
    result = run("analyze", CNN, "--batch", "16", "--gpu", "h100")
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())
    assert "memory for cuda on the H100 SXM 80GB" in out
    assert "GPU H100 SXM 80GB (sm90)" in out and "taken as the H100 SXM 80GB" in out
    assert "peak reserved" in out and "Verdict: fits, headroom" in out


def test_device_cuda_alone_reports_reserved_without_a_verdict():
    d = json.loads(run("analyze", CNN, "--batch", "16", "--device", "cuda", "-f", "json").stdout)
    assert d["gpu"]["gpu"] is None and d["gpu"]["fits"] is None
    assert d["gpu"]["peak_reserved_bytes"] >= d["memory"]["peak_bytes"]


def test_memory_for_a_card_not_in_the_list_that_it_does_not_fit():
    # --memory 100MB is less than the CUDA context assumed: the allocator's 2 MiB small segment,
    # a second one for the 1 MiB cuBLASLt workspace (a small request: 2 MiB segments) and the
    # 20 MiB one of the two cuBLAS workspaces (8,519,680 B each, 1-10 MiB requests:
    # kLargeBuffer) are short by 24 MiB + the context - 100 MB
    result = run("analyze", CNN, "--batch", "16", "--memory", "100MB", "-f", "json")
    assert result.exit_code == 0, result.output
    g = json.loads(result.stdout)["gpu"]
    assert (g["gpu"], g["capacity_bytes"], g["fits"]) == (None, 100 * 10**6, False)
    assert g["segments_at_peak"] == 3 and g["peak_reserved_bytes"] == 24 << 20
    assert g["short_by_bytes"] == (24 << 20) + CUDA_CONTEXT_BYTES - 100 * 10**6 \
        + g["estimate_margin_bytes"]
    table = run("analyze", CNN, "--batch", "16", "--memory", "100MB").stdout
    assert "GPU with 95.4 MiB (--memory)" in table and "DOES NOT FIT" in table


def test_memory_with_device_cpu_is_the_cpu_steps_budget_in_analyze_as_in_fit():
    # --memory is a GPU's memory on every command; an explicit --device cpu makes it the CPU
    # step's budget: the verdict is the peak (byte-exact against real CPU steps) against it
    peak = json.loads(run("analyze", CNN, "--batch", "16", "-f", "json").stdout)["memory"][
        "peak_bytes"]
    at = run("analyze", CNN, "--batch", "16", "--device", "cpu", "--memory", str(peak),
             "-f", "json")
    assert at.exit_code == 0, at.output
    d = json.loads(at.stdout)
    assert "gpu" not in d and d["memory"]["device"] == "cpu"
    assert d["cpu_budget"] == {"budget_bytes": peak, "peak_bytes": peak, "fits": True,
                               "headroom_bytes": 0, "complete": True}
    short = run("analyze", CNN, "--batch", "16", "--device", "cpu", "--memory", str(peak - 512))
    assert short.exit_code == 0, short.output
    out = " ".join(short.stdout.split())
    assert "CPU budget" in out and "--device cpu" in out and "DOES NOT FIT: 512 B short" in out
    assert "memory for cpu" in out and "GPU with" not in out
    # and --checkpoint auto plans for the CPU budget
    planned = run("analyze", CNN, "--batch", "16", "--device", "cpu", "--memory", str(peak),
                  "--checkpoint", "auto")
    assert planned.exit_code == 0, planned.output
    assert "CPU budget" in planned.stdout and "Traceback" not in planned.output


@pytest.mark.parametrize("args,words", [
    (["--gpu", "a100"], ["could be several cards", "a100-80gb", "a100-40gb"]),
    (["--gpu", "h1000"], ["unknown GPU 'h1000'", "--memory"]),
    (["--gpu", "t4", "--device", "cpu"], ["--gpu", "--device cpu"]),
    (["--memory", "lots"], ["'lots'", "does not parse"]),
    (["--memory", "0"], ["positive"]),
    (["--expandable-segments"], ["--expandable-segments", "--gpu"]),
])
def test_gpu_options_that_do_not_parse_say_so_in_one_sentence(args, words):
    result = run("analyze", CNN, *args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for word in words:
        assert word in lines[0], lines[0]


def test_fit_on_a_gpu_finds_the_largest_batch_the_card_holds():
    result = run("fit", CNN, "--gpu", "t4", "--optim", "sgd")
    assert result.exit_code == 0, result.output
    m = re.search(r"that fits 14\.7 GiB on the T4 16GB: (\d+) \(device total", result.stdout)
    assert m, result.stdout
    batch = int(m.group(1))
    at = analyze_file(CNN, Options(batch=batch, optimizer="sgd", gpu="t4")).gpu
    over = analyze_file(CNN, Options(batch=batch + 1, optimizer="sgd", gpu="t4")).gpu
    assert at.fits and not over.fits
    assert run("fit", CNN).exit_code == 2  # neither --memory nor --gpu


def test_plan_on_a_gpu_judges_the_device_total():
    spec = str(SAMPLES / "mnist_mlp.py")
    result = run("plan", spec, "--batch", "8", "--gpu", "l4", "--world-size", "1",
                 "--world-size", "2", "--shard", "ddp")
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())
    assert "(L4 24GB, device totals)" in out and "held/GPU" in out
    from graphcalc.sources import loader
    from graphcalc.ranks.distributed import plan

    src = loader.load(spec)
    rows = plan(loader.build_model(src, device="meta"), src.example_inputs,
                Options(gpu="l4"), global_batch=8, memory_bytes=2**30, world_sizes=[1, 2],
                shards=["ddp"])
    one = analyze_file(spec, Options(batch=8, gpu="l4")).gpu
    assert rows[0].device_total_bytes == one.device_total_bytes
    # 1 GiB is more than the context and a few MiB of segments: both fit
    assert all(r.fits for r in rows) and rows[1].device_total_bytes > (512 << 20)


# --- every command that prints figures takes --format json and -o --------------------------------

def test_fit_as_json_is_the_figures_it_prints(tmp_path):
    table = run("fit", CNN, "--device", "cpu", "--memory", "8MiB")
    assert table.exit_code == 0, table.output
    d = json.loads(run("fit", CNN, "--device", "cpu", "--memory", "8MiB", "-f", "json").stdout)
    assert d["target"] == "cpu" and d["memory_bytes"] == 8 << 20
    assert f"that fits 8.00 MiB: {d['batch']} (" in table.stdout
    # the batch found is the largest whose predicted peak fits (a real step checks it in
    # tests/test_verify.py); the JSON's points are the analyses the search made
    assert d["peak_bytes"] <= 8 << 20 and [d["batch"], d["peak_bytes"]] in d["points"]
    assert d["evaluations"] == len(d["points"])
    out = tmp_path / "fit.json"
    written = run("fit", CNN, "--device", "cpu", "--memory", "8MiB", "-f", "json", "-o", str(out))
    assert written.exit_code == 0 and json.loads(out.read_text()) == d
    assert "Fitting the CPU" in written.stderr and written.stdout == ""


def test_plan_as_json_has_every_row_of_its_table(tmp_path):
    spec = str(SAMPLES / "mnist_mlp.py")
    args = ["plan", spec, "--batch", "8", "--memory", "2MiB", "--world-size", "1",
            "--world-size", "2", "--shard", "ddp", "--shard", "fsdp", "--device", "cpu"]
    d = json.loads(run(*args, "-f", "json").stdout)
    assert d["unit"] == "rank" and d["global_batch"] == 8
    assert [(r["world_size"], r["shard"]) for r in d["rows"]] == [(1, "none"), (2, "ddp"),
                                                                  (2, "fsdp")]
    assert all(r["per_rank_batch"] * r["world_size"] == 8 for r in d["rows"])
    text = tmp_path / "plan.txt"
    assert run(*args, "-o", str(text)).exit_code == 0
    assert "fsdp" in text.read_text() and "batch/rank" in text.read_text()


def test_verify_as_json_holds_predicted_and_measured(tmp_path):
    out = tmp_path / "v.json"
    result = run("verify", str(SAMPLES / "mnist_mlp.py"), "--batch", "4", "--steps", "2",
                 "-f", "json", "-o", str(out))
    assert result.exit_code == 0, result.output
    d = json.loads(out.read_text())
    peak = next(c for c in d["checks"] if c["unit"] == "B" and "peak" in c["figure"])
    assert peak["predicted"] == peak["measured"] and d["failed"] == []
    assert d["config"]["batch"] == 4
