"""The accuracy benchmark runs here as it would on a GPU machine (`--device cuda` there)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT

pytestmark = pytest.mark.slow  # each test runs a bench script in a fresh process


def test_accuracy_bench_on_cpu(tmp_path):
    out = tmp_path / "acc.md"
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "accuracy.py"), "--quick",
                          "--only", "seed_cnn", "--only", "mnist", "--out", str(out)],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    text = out.read_text()
    assert "| seed_cnn | adam | fp32 |" in text
    assert "under-estimates 0" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when CUDA is absent")
def test_accuracy_bench_refuses_cuda_without_a_gpu(tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "accuracy.py"), "--device", "cuda",
                          "--out", str(tmp_path / "x.md")],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert run.returncode == 2
    assert "CUDA is not available" in run.stderr


@pytest.mark.parametrize("tool", ["graphcalc", "flopcounter"])
def test_speed_bench_worker_measures_the_same_step(tool):
    """bench/speed.py's cells: graphcalc's figures are the library's; FlopCounterMode runs."""
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "speed.py"), "--worker", tool,
                          "samples/seed_cnn.py", "4"], capture_output=True, text=True,
                         timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    cell = json.loads(run.stdout.strip().splitlines()[-1])
    assert cell["seconds"] > 0 and cell["rss"] > 0
    if tool == "graphcalc":
        from graphcalc.commands.analyze import analyze_file
        from graphcalc.options import Options

        report = analyze_file(str(ROOT / "samples" / "seed_cnn.py"), Options(batch=4))
        assert cell["flops"] == report.totals.flops_forward + report.totals.flops_backward
        assert cell["peak"] == report.memory.peak_bytes


def test_screenshots_without_chromium_writes_the_svgs_and_says_so(tmp_path):
    # PATH without any browser: the SVG is drawn, the screenshot skipped with one line.
    import os

    script = ROOT / "bench" / "screenshots.py"
    env = dict(os.environ, PATH=str(tmp_path))
    done = subprocess.run([sys.executable, str(script), "--out", str(tmp_path), "--only",
                           "two_inputs"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "no chromium on PATH: writing the SVGs only, no screenshots"
    assert (tmp_path / "two_inputs.svg").read_bytes().startswith(b"<?xml")
    assert not (tmp_path / "two_inputs.png").exists()


def test_cuda_bench_predictions_with_cuda_hidden_are_the_librarys(tmp_path):
    """bench/accuracy_cuda.py's CUDA-hidden half (what a GPU machine runs with
    CUDA_VISIBLE_DEVICES=): its JSON holds the figures graphcalc's report gives for the card."""
    from graphcalc.sources import loader
    from graphcalc.commands.analyze import analyze_module
    from graphcalc.options import Options

    out = tmp_path / "hidden.json"
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "accuracy_cuda.py"),
                          "--predict-only", "--gpu", "h100", "--only", "mnist_mlp",
                          "--json", str(out)], capture_output=True, text=True, timeout=600,
                         cwd=ROOT, env={**__import__("os").environ, "CUDA_VISIBLE_DEVICES": ""})
    assert run.returncode == 0, run.stderr
    got = json.loads(out.read_text())
    assert set(got) == {f"mnist_mlp|{o}|{p}" for o in ("sgd", "adam")
                        for p in ("fp32", "amp bf16")}
    src = loader.load(str(ROOT / "samples" / "mnist_mlp.py"))
    torch.manual_seed(0)
    report = analyze_module(loader.build_model(src, device=None), src.example_inputs,
                            Options(batch=2, optimizer="adam", gpu="h100"), loss_fn=src.loss)
    assert got["mnist_mlp|adam|fp32"] == [report.gpu.peak_allocated_bytes,
                                          report.gpu.peak_reserved_bytes]


def test_speed_bench_counts_the_replays_a_command_takes():
    """bench/speed.py --commands: the replay count of a whole `graphcalc` process (one for
    analyze; fit's count is its JSON's evaluations)."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import speed
    finally:
        sys.path.pop(0)
    seconds, n = speed._command(["analyze", "samples/seed_cnn.py", "-f", "json"], True)
    assert seconds > 0 and n == 1
    _, n = speed._command(["fit", "samples/seed_cnn.py", "--device", "cpu", "--memory", "8MiB",
                           "-f", "json", "-o", os.devnull], True)
    fit = subprocess.run([str(Path(sys.executable).with_name("graphcalc")), "fit",
                          "samples/seed_cnn.py", "--device", "cpu", "--memory", "8MiB", "-f",
                          "json"], capture_output=True, text=True, cwd=ROOT)
    assert n == json.loads(fit.stdout)["evaluations"] == 3
