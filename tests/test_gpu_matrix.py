"""Every precision on every path of a CUDA prediction: --device cuda / --gpu with --amp bf16|fp16
and --dtype bf16|fp16, on every sample, every Hugging Face model of the tests and every zoo model
(the library), and on every command (the command line). Predictions only: no GPU needed.

A failure is allowed only where the model itself fails in that precision: its real step on the
CPU, eager, in the same dtype, must raise too (a zoo model that builds fp32 tensors of its own
under --dtype bf16, a mask fill that overflows fp16). graphcalc's own failures never pass as the
model's.
"""

from __future__ import annotations

import json
import sys

import pytest
import torch
from typer.testing import CliRunner

from graphcalc.commands.analyze import analyze_module
from graphcalc.errors import GraphcalcError
from graphcalc.options import Options
from graphcalc_cli.app import app

from conftest import ROOT, SAMPLES

sys.path.insert(0, str(ROOT / "bench"))
import accuracy  # noqa: E402

PRECISIONS = {"amp bf16": {"amp": "bf16"}, "amp fp16": {"amp": "fp16"},
              "dtype bf16": {"dtype": "bf16"}, "dtype fp16": {"dtype": "fp16"}}
CASES = {c.name: c for c in accuracy.sample_cases() + accuracy.hf_cases()
         + accuracy.moe_cases() + accuracy.zoo_cases()}
BATCH = {"llama": 1, "vit_b16": 1, "resnet50": 1, "gpt2": 1}


def _real_step_fails(case, dtype: torch.dtype | None, amp: torch.dtype | None, optim: str) -> str:
    """The error of the model's real CPU step in that precision, or '' when it runs."""
    torch.manual_seed(0)
    model, make_inputs, loss_fn = case.build()
    from graphcalc.fake.step import call_model, compute_loss

    inputs = make_inputs(BATCH.get(case.name, 2))
    if dtype is not None:
        model = model.to(dtype)
        inputs = torch.utils._pytree.tree_map(
            lambda t: t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t,
            inputs)
    try:
        with torch.autocast("cpu", dtype=amp, enabled=amp is not None):
            out = call_model(model, inputs)
            loss = compute_loss(loss_fn, out, inputs)
        loss.backward()
        opt = (torch.optim.Adam if optim == "adam" else torch.optim.SGD)(model.parameters(), 1e-3)
        opt.step()
    except Exception as e:  # noqa: BLE001 - the model's own failure is the answer
        return f"{type(e).__name__}: {e}"
    return ""


@pytest.mark.slow
@pytest.mark.parametrize("precision", list(PRECISIONS))
@pytest.mark.parametrize("name", sorted(CASES))
def test_every_model_predicts_on_cuda_in_every_precision(name, precision):
    case = CASES[name]
    optim = accuracy.ZOO_OPTIMIZERS.get(name, ("adam",))[0]
    options = Options(batch=BATCH.get(name, 2), optimizer=optim, device="cuda", gpu="h200",
                      steps=1, routing=case.routing, **PRECISIONS[precision])
    torch.manual_seed(0)
    model, make_inputs, loss_fn = case.build()
    try:
        report = analyze_module(model, make_inputs, options, loss_fn=loss_fn, name=name)
    except GraphcalcError as e:
        real = _real_step_fails(case, options.torch_dtype if options.dtype != "fp32" else None,
                                options.amp_dtype if options.amp else None, optim)
        assert real, f"graphcalc failed where the real step runs: {e}"
        return
    assert report.gpu.peak_allocated_bytes > 0
    assert report.memory.peak_bytes > 0


runner = CliRunner()
CNN = str(SAMPLES / "seed_cnn.py")  # a cross-entropy loss: log_softmax under autocast
FLAGS = {"amp bf16": ["--amp", "bf16"], "amp fp16": ["--amp", "fp16"],
         "dtype bf16": ["--dtype", "bf16"], "dtype fp16": ["--dtype", "fp16"]}
DEVICES = {"--device cuda": ["--device", "cuda"], "--gpu h200": ["--gpu", "h200"]}


def _ok(result):
    assert result.exit_code == 0, result.output
    assert "internal error" not in result.output


@pytest.mark.parametrize("device", list(DEVICES))
@pytest.mark.parametrize("precision", list(FLAGS))
@pytest.mark.parametrize("command", ["analyze", "fit", "plan", "render --timeline"])
def test_every_command_predicts_on_cuda_in_every_precision(command, precision, device, tmp_path):
    if command == "render --timeline" and device == "--gpu h200":
        device = "--device cuda"  # render draws against --memory; it names no card
    args = command.split() + [CNN, *FLAGS[precision], *DEVICES[device], "--optim", "adam"]
    if command == "analyze":
        args += ["--batch", "64", "--format", "json"]
    elif command == "fit":
        args += [] if device == "--gpu h200" else ["--memory", "2GiB"]
    elif command == "plan":
        args += ["--batch", "64"] + ([] if device == "--gpu h200" else ["--memory", "2GiB"])
    else:
        args += ["--batch", "64", "--memory", "1GiB", "-o", str(tmp_path / "t.svg")]
    result = runner.invoke(app, args)
    _ok(result)
    if command == "analyze":
        d = json.loads(result.stdout)
        assert d["memory"]["peak_bytes"] > 0


@pytest.mark.parametrize("precision", list(PRECISIONS))
def test_check_budgets_on_cuda_in_every_precision(precision, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GRAPHCALC_CACHE_DIR", str(tmp_path / "cache"))
    key, value = next(iter(PRECISIONS[precision].items()))
    (tmp_path / "pyproject.toml").write_text(
        "[project]\nname = 'demo'\n\n[[tool.graphcalc.budget]]\n"
        f"model = {json.dumps(CNN)}\nbatch = 64\noptim = 'adam'\n{key} = '{value}'\n"
        "gpu = 'h200'\nmax_params = '1M'\n")
    result = runner.invoke(app, ["check"])
    _ok(result)


@pytest.mark.parametrize("precision", list(PRECISIONS))
def test_summary_on_cuda_in_every_precision(precision):
    from graphcalc import summary
    from graphcalc.sources import loader

    src = loader.load(CNN)
    torch.manual_seed(0)
    model = loader.build_model(src, device=None)
    report = summary(model, (3, 32, 32), batch_size=32, optim="adam", gpu="h200",
                     **PRECISIONS[precision])
    assert report.gpu.peak_allocated_bytes > 0


def test_verify_predicts_for_the_gpu_it_runs_on(monkeypatch):
    """verify --device cuda names the card it runs on: a card of the table by its entry, another
    by the memory and compute capability the device reports."""
    from graphcalc.commands.verify import on_this_gpu

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "NVIDIA H200")
    o = on_this_gpu(Options(device="cuda"))
    assert (o.gpu, o.cuda_target.capability, o.cuda_target.cublas_workspace_bytes) == \
        ("h200", (9, 0), 32 << 20)
    assert "NVIDIA H200" in o.gpu_note

    class Props:
        total_memory = 12 << 30

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "Some Future GPU X1")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i=0: Props())
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=0: (12, 0))
    o = on_this_gpu(Options(device="cuda", amp="bf16"))
    assert (o.gpu, o.gpu_memory, o.cuda_target.capability) == (None, 12 << 30, (12, 0))
    assert "Some Future GPU X1" in o.gpu_note
    # a card the options name already stays
    assert on_this_gpu(Options(gpu="a100-80gb")).gpu == "a100-80gb"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", list(FLAGS))
def test_verify_runs_on_the_gpu_in_every_precision(precision):
    result = runner.invoke(app, ["verify", CNN, "--device", "cuda", *FLAGS[precision],
                                 "--batch", "32", "--steps", "2", "--tolerance", "100"])
    _ok(result)
    assert "predicted for the" in result.output
