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

from graphcalc.output import snapshot
from graphcalc.output import snapshot_compare
from graphcalc.commands.analyze import analyze_module
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


def _real_events(path):
    trace = max(snapshot_compare.load(path)["device_traces"], key=len)
    events, live, n = [], {}, 0
    for e in trace:
        if e["action"] == "alloc":
            n += 1
            live[e["addr"]] = (n, e["size"])
            events.append((n, e["size"]))
        elif e["action"] == "free_completed" and e["addr"] in live:
            serial, size = live.pop(e["addr"])
            events.append((serial, -size))
    return events


@pytest.mark.parametrize("key", sorted(ROWS))
def test_the_simulated_allocator_on_a_real_stream_gives_the_real_peaks(key, streams):
    """graphcalc's caching allocator (graphcalc.gpu.allocator) fed the real run's own allocations
    gives the max_memory_allocated it reported (blocks handed out whole, unsplit remainders
    included) within 2 MiB, and its max_memory_reserved within 4% (exact on 12 of 15; the
    ResNets' large cuDNN workspaces part it by -3.4% and +2.9%: a gap of the allocator model)."""
    from graphcalc.gpu.allocator import simulate

    r = simulate(_real_events(streams / f"{key}.pickle"))
    row = ROWS[key]
    assert abs(r.peak_allocated_bytes - row["max_memory_allocated"]) <= 2 * 2**20
    assert abs(r.peak_reserved_bytes - row["max_memory_reserved"]) \
        <= 0.04 * row["max_memory_reserved"]


import transformers  # noqa: E402

# The real runs used transformers 5.17: T5 there passes a permuted position bias to SDPA (no
# fused kernel on CUDA); newer releases make it contiguous (the memory-efficient kernel).
SAME_CODE = {k for k in ROWS if not (k.startswith("hf_t5")
                                     and transformers.__version__ != "5.17.0")}


def _percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


@pytest.mark.slow
def test_cuda_predictions_meet_the_targets_against_the_real_h200():
    """Allocated: median |error| <= 1%, p90 <= 3%, never under by more than 2% (or by more than
    the margin the verdict keeps for an estimated cuDNN workspace); reserved: median <= 5%, never
    under by more than 10% (the issue's target is 5%: BERT's reduction scratch and the ResNets'
    cuDNN segments are not modelled yet)."""
    alloc, reserved = [], []
    for key in sorted(SAME_CODE):
        report, _ = _predicted(key)
        row, g = ROWS[key], report.gpu
        a = (g.peak_allocated_bytes - row["max_memory_allocated"]) / row["max_memory_allocated"]
        r = (g.peak_reserved_bytes - row["max_memory_reserved"]) / row["max_memory_reserved"]
        alloc.append(a), reserved.append(r)
        allowed = max(0.02 * row["max_memory_allocated"], g.estimate_margin_bytes)
        assert g.peak_allocated_bytes >= row["max_memory_allocated"] - allowed, (key, a)
        assert r >= -0.10, (key, r)
    assert _percentile([abs(a) for a in alloc], 0.5) <= 0.01
    assert _percentile([abs(a) for a in alloc], 0.9) <= 0.03
    assert _percentile([abs(r) for r in reserved], 0.5) <= 0.05


@pytest.mark.slow
@pytest.mark.parametrize("row", gpu_streams.fit_rows(), ids=lambda r: r["model"])
def test_fit_never_gives_a_batch_that_runs_out_and_is_within_95_percent(row):
    """fit_samples.json: the largest batch whose real 2-step training fitted an 8 GiB allocator
    limit on the H200 (bisection with real out-of-memory errors; every batch tried above it ran
    out). graphcalc's fit for the same limit is at most that and at least 95% of it."""
    got = gpu_streams.fit_for(row)
    assert 0.95 * row["max_batch"] <= got <= row["max_batch"]


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


def test_compare_command_as_json(streams, tmp_path):
    """`compare --format json -o`: the figures the table prints, in bytes; the real peak is the
    real run's torch.cuda.max_memory_allocated (../shared/gpu), the rows those of the table."""
    key = "mnist_mlp.256.sgd.fp32"
    out = tmp_path / "c.json"
    result = CliRunner().invoke(app, ["compare", str(SAMPLES / "mnist_mlp.py"),
                                      str(streams / f"{key}.pickle"), "--batch", "256", "--optim",
                                      "sgd", "--gpu", "h200", "--format", "json", "-o", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["model"] == "mnist_mlp" and data["config"]["batch"] == 256
    assert data["real"]["peak_bytes"] == ROWS[key]["max_memory_allocated"]
    table = CliRunner().invoke(app, ["compare", str(SAMPLES / "mnist_mlp.py"),
                                     str(streams / f"{key}.pickle"), "--batch", "256", "--optim",
                                     "sgd", "--gpu", "h200"]).output
    rows = [line.split() for line in table.splitlines() if line[:4].strip().isdigit()]
    assert [(int(r[0]), r[1]) for r in rows] == [(p["step"], p["phase"]) for p in data["phases"]]
    for r, p in zip(rows, data["phases"]):
        real = p["real"]["peak_bytes"] if p["real"] else 0
        assert r[2] == f"{real / 2**20:,.2f}"
    assert f"{data['peak_differs_percent']:+.2f}%" in table
