"""Per-rank memory under DDP and FSDP against real 2-process runs (gloo, CPU).

The reference is `graphcalc.commands.measure_distributed`: two processes on this machine, the sample
wrapped in DistributedDataParallel or FSDP2's fully_shard, real steps, each rank's live tensor
bytes counted as `verify` counts them. The prediction never starts a process.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from cli.app import app
from graphcalc.commands.analyze import analyze_module
from graphcalc.ranks.distributed import communication, plan, shard_units, _Param
from graphcalc.errors import UsageError
from graphcalc.commands.measure_distributed import measure_distributed
from graphcalc.options import Options

from conftest import SAMPLES, real_model, sample

runner = CliRunner()
CASES = [("gpt2", "ddp"), ("gpt2", "fsdp"), ("resnet50", "ddp"), ("resnet50", "fsdp"),
         ("seed_cnn", "fsdp")]


@pytest.mark.slow
@pytest.mark.parametrize("name,shard", CASES)
def test_per_rank_peak_within_five_percent_of_two_real_ranks(name, shard):
    # Batch 1 per rank, two steps: the second is the steady state with optimizer state.
    options = Options(batch=1, optimizer="adam", world_size=2, shard=shard, steps=2)
    src = sample(name)
    predicted = analyze_module(real_model(src), src.example_inputs, options, loss_fn=src.loss)
    ranks = measure_distributed(str(SAMPLES / f"{name}.py"), options)
    assert [m.rank for m in ranks] == [0, 1]
    for m in ranks:
        assert abs(predicted.memory.peak_bytes - m.peak_bytes) <= 0.05 * m.peak_bytes, (
            f"rank {m.rank}: predicted {predicted.memory.peak_bytes:,}, measured "
            f"{m.peak_bytes:,}")


@pytest.mark.slow
def test_mnist_mlp_under_fsdp_is_byte_exact():
    # Both Linears are units and the first one's input is the batch: its reduce-scatter runs in
    # FSDP's final callback, and the peak is there: 401,920 B of reduce-scatter input, the
    # 200,960 B sharded output, gloo's 401,920 B copy of the input, the bias's full gradient
    # still bound in foreach_reduce, the loss's seed gradient, and the mesh's 8 B rank map.
    options = Options(batch=4, optimizer="adam", world_size=2, shard="fsdp", steps=2)
    src = sample("mnist_mlp")
    predicted = analyze_module(real_model(src), src.example_inputs, options, loss_fn=src.loss)
    assert predicted.memory.peak_bytes == 1_631_248
    ranks = measure_distributed(str(SAMPLES / "mnist_mlp.py"), options)
    assert [m.peak_bytes for m in ranks] == [1_631_248, 1_631_248]


def test_shard_units_are_the_repeated_blocks():
    gpt2 = real_model(sample("gpt2"))
    assert shard_units(gpt2) == [f"h.{i}" for i in range(12)]
    resnet = real_model(sample("resnet50"))
    units = shard_units(resnet)
    assert len(units) == 3 + 4 + 6 + 3 and units[0] == "layer1.0" and units[-1] == "layer4.2"


def test_communicated_bytes_follow_the_ring_formulas():
    # Two parameters of 10 x 3 fp32 (120 B) in a unit and 7 x 1 fp32 (28 B) at the root, 4 ranks:
    # shards ceil(10/4) = 3 rows = 36 B and ceil(7/4) = 2 rows = 8 B, padded full 144 B and 32 B.
    params = {1: _Param("u.w", "u", 120, 36, True), 2: _Param("b", "", 28, 8, True)}
    assert communication(params, 4, "ddp").all_reduce_bytes == round(2 * 3 / 4 * 148)  # 222
    z = communication(params, 4, "zero1")
    assert (z.reduce_scatter_bytes, z.all_gather_bytes) == (111, 111)  # 3/4 * 148
    f = communication(params, 4, "fsdp")
    # all-gather: forward every unit and the root (176 B padded), backward the unit again (144 B)
    assert f.all_gather_bytes == round(3 / 4 * (176 + 144))  # 240
    assert f.reduce_scatter_bytes == round(3 / 4 * 176)  # 132


@pytest.mark.slow
def test_sharding_lowers_the_per_rank_peak_in_order():
    src = sample("gpt2")
    model = real_model(src)
    rows = plan(model, src.example_inputs, Options(optimizer="adam"), global_batch=4,
                memory_bytes=2**40, world_sizes=[1, 2], loss_fn=src.loss)
    peak = {r.shard: r.peak_bytes for r in rows}
    assert peak["fsdp"] < peak["zero2"] < peak["zero1"] < peak["ddp"]
    assert all(r.per_rank_batch == (4 if r.world_size == 1 else 2) for r in rows)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("shard", ["ddp", "zero1", "zero2", "fsdp"])
def test_a_ranks_breakdown_adds_up_to_its_peak(shard, device):
    """The four places memory goes (and a CUDA step's cuBLAS workspaces, held for good) sum to
    the rank's peak: a sharded breakdown once left the workspaces out, 17 MB short on a CUDA
    step."""
    src = sample("mnist_mlp")
    report = analyze_module(real_model(src), src.example_inputs,
                            Options(batch=8, device=device, world_size=2, shard=shard),
                            loss_fn=src.loss)
    m = report.memory
    assert m.breakdown.total == m.peak_bytes
    assert (m.breakdown.workspace > 0) == (device == "cuda")
    # what the step ran on is the rank's too (the sharded report once dropped it)
    assert m.cuda_target == ("" if device == "cpu" else Options(device="cuda").cuda_target.name)


@pytest.mark.parametrize("kwargs,message", [
    ({"world_size": 0, "shard": "ddp"}, "at least 1"),
    ({"world_size": 1, "shard": "fsdp"}, "needs --world-size 2"),
    ({"world_size": 4}, "needs a --shard"),
    ({"world_size": 2, "shard": "tp"}, "unknown shard"),
])
def test_bad_combinations_are_one_sentence(kwargs, message):
    with pytest.raises(UsageError, match=message):
        Options(**kwargs)


def test_cli_refuses_bad_combinations_with_exit_2():
    spec = str(SAMPLES / "mnist_mlp.py")
    r = runner.invoke(app, ["analyze", spec, "--world-size", "2"])
    assert r.exit_code == 2 and "needs a --shard" in r.output
    r = runner.invoke(app, ["plan", spec, "--batch", "6", "--memory", "1GiB", "--world-size", "4"])
    assert r.exit_code == 2 and "does not split evenly" in r.output


def test_cli_plan_prints_its_table():
    r = runner.invoke(app, ["plan", str(SAMPLES / "mnist_mlp.py"), "--batch", "8", "--memory",
                            "2MiB", "--world-size", "1", "--world-size", "2"])
    assert r.exit_code == 0, r.output
    for word in ("GPUs", "ddp", "zero1", "zero2", "fsdp", "batch/GPU", "sent/GPU/step"):
        assert word in r.output


class _Similarity(nn.Module):
    """A batch-by-batch similarity matrix (as a contrastive loss makes): its bytes are
    quadratic in the batch, no line."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        z = self.fc(x)
        return z @ z.t()


@pytest.mark.parametrize("name,options", [
    ("mnist_mlp", Options(optimizer="adam", device="cuda", gpu="h100")),
    ("seed_cnn", Options(optimizer="sgd", amp="bf16", device="cuda")),  # cuDNN workspaces
    ("gpt2", Options(optimizer="adamw", device="cpu")),
    ("similarity", Options(optimizer="adam", device="cuda")),
])
def test_plan_reads_per_rank_batches_off_three_replays_as_replaying_each(name, options):
    """plan at global batch 64 (per-rank batches 64, 32 ... 1): three replays (four where
    batch 1 runs other kernels) and the rest read off their lines give the very rows that one
    replay per batch gives; a step whose bytes
    are not affine in the batch (a batch-by-batch matrix) is replayed at every batch."""
    if name == "similarity":
        model, make_inputs, loss_fn = _Similarity(), lambda b: torch.randn(b, 8), None
    else:
        src = sample(name)
        model, make_inputs, loss_fn = real_model(src), src.example_inputs, src.loss
    calls = []
    kw = dict(global_batch=64, memory_bytes=2**30, loss_fn=loss_fn)
    read = plan(model, make_inputs, options, on_replay=lambda b, k, n: calls.append((b, k)),
                **kw)
    each = plan(model, make_inputs, options, lines=False, **kw)
    assert read == each
    assert len(read) == 1 + 6 * 4 and {r.per_rank_batch for r in read} == {64, 32, 16, 8, 4, 2, 1}
    replayed = [b for b, k in calls if k]
    if name == "similarity":
        assert sorted(replayed) == [1, 2, 4, 8, 16, 32, 64] and all(k for _, k in calls)
    else:
        # batch 1 runs other kernels than the rest on some models (a matrix-vector product):
        # the lines then start at batch 2, a fourth replay
        assert replayed in ([1, 8, 64], [1, 8, 64, 2])
        assert sorted(b for b, k in calls if not k) == sorted({2, 4, 16, 32} - set(replayed))
