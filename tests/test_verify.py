"""`graphcalc verify` and `graphcalc fit`: the prediction confirmed by real runs."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from typer.testing import CliRunner

from graphcalc.sources import loader
from graphcalc.commands.analyze import analyze_module
from graphcalc.commands.measure import measure_step
from graphcalc.options import Options
from graphcalc.commands.verify import fit, fit_source
from graphcalc_cli.app import app

from conftest import SAMPLES, sample

runner = CliRunner()


def test_verify_prints_predicted_against_measured():
    out = runner.invoke(app, ["verify", str(SAMPLES / "seed_cnn_bn.py"), "--batch", "8",
                              "--optim", "adam", "--steps", "3"])
    assert out.exit_code == 0, out.output
    assert "peak memory" in out.stdout and "+0.00%" in out.stdout
    assert "FLOPs backward" in out.stdout


def test_verify_exits_1_past_the_tolerance():
    out = runner.invoke(app, ["verify", str(SAMPLES / "mnist_mlp.py"), "--batch", "4",
                              "--tolerance", "-1"])
    assert out.exit_code == 1
    assert "tolerance" in out.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when CUDA is absent")
def test_verify_on_cuda_without_a_gpu_says_so():
    out = runner.invoke(app, ["verify", str(SAMPLES / "mnist_mlp.py"), "--device", "cuda"])
    assert out.exit_code == 2
    assert "no CUDA device" in out.output


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_verify_on_cuda_within_five_percent():
    out = runner.invoke(app, ["verify", str(SAMPLES / "resnet18.py"), "--batch", "32",
                              "--device", "cuda", "--tolerance", "5"])
    assert out.exit_code == 0, out.output


@pytest.mark.parametrize("extra", [0, 5, 37, 1000])
def test_fit_finds_the_largest_batch(extra):
    def peak(b):  # affine with steps, as activations grow with the batch
        return 10_000 + 123 * b + (b // 7) * 50

    budget = 10_000 + 123 * 500 + extra
    result = fit(peak, budget)
    brute = max(b for b in range(1, 2000) if peak(b) <= budget)
    assert result.batch == brute
    assert result.recommended_batch == int(brute * 0.8)
    assert result.evaluations < 15


def test_fit_when_nothing_fits():
    assert fit(lambda b: 100 * b + 1000, 500).batch == 0


def test_fit_agrees_with_a_real_run():
    src = sample("seed_cnn")
    budget = 8 * 2**20
    options = Options(optimizer="adam")
    result = fit_source(src, src.example_inputs, options, budget)
    assert result.batch > 1
    # the batch found runs within the budget...
    measured = measure_step(loader.build_model(src, device=None), src.example_inputs,
                            replace(options, batch=result.batch), loss_fn=src.loss)
    assert measured.peak_bytes <= budget
    # ...and 10% more is predicted not to fit.
    model = loader.build_model(src)
    bigger = analyze_module(model, src.example_inputs,
                            replace(options, batch=math.ceil(result.batch * 1.1)), loss_fn=src.loss)
    assert bigger.memory.peak_bytes > budget


def test_fit_cli():
    out = runner.invoke(app, ["fit", str(SAMPLES / "mnist_mlp.py"), "--memory", "64MiB",
                              "--device", "cpu", "--optim", "sgd"])
    assert out.exit_code == 0, out.output
    assert "Largest batch that fits 64.0 MiB" in out.stdout
    bad = runner.invoke(app, ["fit", str(SAMPLES / "mnist_mlp.py"), "--memory", "lots"])
    assert bad.exit_code == 2 and "does not parse" in bad.output


def test_cuda_prediction_rounds_blocks_and_uses_foreach():
    # Each CUDA allocation is a multiple of 512 B: seed CNN parameters are 8 tensors, each
    # rounded up (conv1 weight 1,500 B -> 1,536 B, ...).
    src = sample("seed_cnn")
    model = loader.build_model(src)
    cuda = analyze_module(model, src.example_inputs, Options(batch=4, device="cuda"),
                          loss_fn=src.loss)
    expected = sum(-(-p.numel() * 4 // 512) * 512 for p in model.parameters())
    assert cuda.memory.breakdown.parameters == expected
    assert cuda.memory.device == "cuda"


@pytest.mark.parametrize("name,budget", [("seed_cnn", 8 << 20), ("resnet18", 1 << 30),
                                         ("mnist_mlp", 100 << 20)])
def test_fit_takes_three_analyses_where_the_step_is_affine_in_the_batch(name, budget):
    # two replays give every live level as a line in the batch, a third confirms the batch
    # where the highest meets the budget (issue 30: "every search in three replays"); the answer
    # is the search's: the batch fits and the next does not, each analysed on its own, and the
    # recommended batch's peak read off the lines is its analysed peak
    from graphcalc.commands.analyze import analyze_file
    from graphcalc.commands.verify import fit_source
    from graphcalc.sources import loader

    spec = str(SAMPLES / f"{name}.py")
    src = loader.load(spec)
    found = fit_source(src, src.example_inputs, Options(optimizer="adam"), budget)
    assert found.affine and found.evaluations == 3, found
    peak = lambda b: analyze_file(spec, Options(batch=b, optimizer="adam")).memory.peak_bytes
    assert peak(found.batch) == found.peak_bytes <= budget < peak(found.batch + 1)
    assert peak(found.recommended_batch) == found.recommended_peak_bytes


@pytest.mark.parametrize("name,gpu", [("seed_cnn", "t4"), ("mnist_mlp", "h100"),
                                      ("resnet18", "t4")])
def test_gpu_fit_takes_three_analyses_reading_the_device_total_off_the_lines(name, gpu):
    # A GPU's device total (the caching allocator's segments + the CUDA context) is no line in
    # the batch, but each storage the step asks for is: two replays give every allocation at
    # any batch, the simulated allocator gives the device total there, and the third replay,
    # at the batch found, lies on the lines (the lines from batches 2 and 64: on CUDA a linear
    # layer at batch 1 takes no cuBLASLt workspace, so batch 1 is on no line with the rest;
    # before, 15 analyses on a T4, then 4 from batch 1). The answer is the search's: the batch
    # fits and the next does not, each analysed on its own (analyze --gpu), and the recommended
    # batch's device total read off the lines is its analysed one
    from graphcalc.commands.analyze import analyze_file
    from graphcalc.commands.verify import fit_source
    from graphcalc.sources import loader

    spec = str(SAMPLES / f"{name}.py")
    src = loader.load(spec)
    options = Options(optimizer="adam", amp="bf16" if gpu == "h100" else None, device="cuda",
                      gpu=gpu)
    budget = options.gpu_spec.memory_bytes
    found = fit_source(src, src.example_inputs, options, budget)
    assert found.affine and found.evaluations == 3 and 1 not in dict(found.points), found

    def held(b):
        return analyze_file(spec, replace(options, batch=b)).gpu.required_bytes

    assert held(found.batch) == found.peak_bytes <= budget < held(found.batch + 1)
    assert held(found.recommended_batch) == found.recommended_peak_bytes
