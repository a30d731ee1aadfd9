"""graphcalc's CUDA prediction against real H200 runs (tests/data/h200/: streams.json, the
figures torch.cuda.max_memory_allocated / max_memory_reserved gave for 15 configurations of the
project's models, and streams.tgz, the PyTorch memory snapshot of each run), and
`graphcalc compare` on those snapshots."""

from __future__ import annotations

import json
import sys
import tarfile

import pytest
import torch
from typer.testing import CliRunner

from graphcalc import snapshot, snapshot_compare
from graphcalc.analyze import analyze_module
from graphcalc.options import Options
from graphcalc_cli.app import app

from conftest import ROOT, SAMPLES

sys.path.insert(0, str(ROOT / "bench"))
import gpu_streams  # noqa: E402

DATA = ROOT / "tests" / "data" / "h200"
ROWS = {f"{r['model']}.{r['batch']}.{r['optim']}.{r['precision']}": r for r in gpu_streams.rows()}


@pytest.fixture(scope="module")
def streams(tmp_path_factory):
    where = tmp_path_factory.mktemp("streams")
    with tarfile.open(DATA / "streams.tgz") as tar:
        tar.extractall(where, filter="data")
    return where


def _predicted(key: str):
    kept = []
    row = ROWS[key]
    case = gpu_streams.case_for(row["model"])
    torch.manual_seed(0)
    model, make_inputs, loss_fn = case.build()
    options = Options(batch=row["batch"], optimizer=row["optim"],
                      amp=gpu_streams.PRECISION[row["precision"]], steps=2, device="cuda",
                      gpu="h200")
    report = analyze_module(model, make_inputs, options, loss_fn=loss_fn, on_replay=kept.append)
    return report, snapshot.snapshot(kept[-1])


@pytest.mark.parametrize("key", sorted(ROWS))
def test_a_snapshot_s_stream_peak_is_the_run_s_max_memory_allocated(key, streams):
    """The comparison reads the real stream as the allocator counted it: its peak (each request
    rounded to 512 B) is what max_memory_allocated reported, up to the blocks the allocator gave
    whole (a large block's remainder under 1 MiB is not split off)."""
    s = snapshot_compare._stream(snapshot_compare.load(streams / f"{key}.pickle"), False)
    real = ROWS[key]["max_memory_allocated"]
    assert real - 2 * 2**20 <= s.peak <= real


def test_compare_finds_the_cublaslt_workspace_and_cudnn_scratch(streams):
    """seed_cnn, batch 256, Adam, bf16 autocast: the real run's convolutions take cuDNN
    workspaces in backward (freed at once: scratch) of 9,375,744, 1,448,448 and 1,411,584 B."""
    key = "seed_cnn.256.adam.bf16"
    _, predicted = _predicted(key)
    c = snapshot_compare.compare(snapshot_compare.load(streams / f"{key}.pickle"), predicted)
    assert c.real.peak == ROWS[key]["max_memory_allocated"]
    assert [r[:2] for r in c.rows][:5] == [(0, "setup"), (0, "forward"), (0, "loss"),
                                           (0, "backward"), (0, "optimizer")]
    rb, rn, _, _ = c.kinds["cuBLASLt workspace"]
    assert (rb, rn) == (1 << 20, 1)
    real_scratch = sorted(a.size for a in c.real.allocs if a.kind == "scratch"
                          and a.phase == "backward" and a.step == 0)
    assert {9_375_744, 1_448_448, 1_411_584} <= set(real_scratch)
    text = snapshot_compare.render(c)
    assert "step 1 backward" in text and "peak allocated: real" in text


def test_compare_command(streams):
    runner = CliRunner()
    result = runner.invoke(app, ["compare", str(SAMPLES / "mnist_mlp.py"),
                                 str(streams / "mnist_mlp.256.sgd.fp32.pickle"), "--batch", "256",
                                 "--optim", "sgd", "--gpu", "h200"])
    assert result.exit_code == 0, result.output
    assert "peak allocated: real 66.68 MiB" in result.output
    bad = runner.invoke(app, ["compare", str(SAMPLES / "mnist_mlp.py"), str(DATA / "env.txt")])
    assert bad.exit_code == 2
    assert "not a PyTorch memory snapshot" in bad.output
