"""The architectures people train today, each against a real CPU step (tiny configs, random
weights, nothing downloaded): decoders fed an attention mask, an encoder-decoder, mixture of
experts (grouped_mm and the eager experts loop, balanced and worst-case routing forced on the
real step), sequence-first inputs with float and boolean masks, packed sequences.

Peak memory byte-exact, FLOPs equal to FlopCounterMode's (plus the hand-derived `_grouped_mm`
count it lacks), parameters exact.
"""

from __future__ import annotations

import os
import sys

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from graphcalc.commands.analyze import analyze_file, analyze_module  # noqa: E402
from graphcalc.commands.measure import count_flops, counted_steps, measure_step  # noqa: E402
from graphcalc.options import Options  # noqa: E402
from graphcalc.routing import ForcedRouting, assigned  # noqa: E402

from conftest import ROOT, real_model, unique_param_count  # noqa: E402
from graphcalc.sources import loader  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
import hf_models  # noqa: E402

T = pytest.importorskip("transformers")
V, S = 1000, 32
ARCHS = ROOT / "tests" / "archs"


def _ids(b):
    return torch.randint(0, V, (b, S))


def _lm_inputs(b):
    ids = _ids(b)
    return {"input_ids": ids, "attention_mask": torch.ones(b, S, dtype=torch.long), "labels": ids}


def _hf(name):
    """A builder of bench/hf_models.py, as (model, make_inputs)."""
    def build():
        _, model, make_inputs, _ = hf_models.build(name)
        return model, make_inputs
    build.__name__ = name
    return build


qwen2, phi3, gpt_neox, bart, wav2vec2_ctc = (_hf(n) for n in (
    "hf_qwen2", "hf_phi3", "hf_gpt_neox", "hf_bart", "hf_wav2vec2_ctc"))
_DECODER = dict(vocab_size=V, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)


def qwen2_checkpointed():  # gradient checkpointing (non-reentrant), as HF trainers turn it on
    model, inputs = qwen2()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model, inputs


_MOE = dict(_DECODER, num_experts_per_tok=2)


def mixtral():  # transformers' grouped_mm experts: aten::_grouped_mm
    return T.MixtralForCausalLM(T.MixtralConfig(**_MOE, num_local_experts=4)), _lm_inputs


def qwen2_moe_eager():  # the experts loop: nonzero() over the experts hit, where() per expert
    cfg = T.Qwen2MoeConfig(**_MOE, num_experts=4, moe_intermediate_size=32,
                           shared_expert_intermediate_size=64, experts_implementation="eager")
    return T.Qwen2MoeForCausalLM(cfg), _lm_inputs


def _build(builder):
    torch.manual_seed(0)
    return builder()


@pytest.mark.slow
@pytest.mark.parametrize("builder", [qwen2, qwen2_checkpointed, phi3, gpt_neox, bart],
                         ids=lambda f: f.__name__)
@pytest.mark.parametrize("optim", ["sgd", "adam"])
def test_decoders_fed_a_mask_are_exact(builder, optim):
    """An all-ones attention mask lets transformers skip building the 4D mask in a real step (it
    reads the mask); on a fake mask it always builds one. The replay knows the mask's values
    (graphcalc.fake.values._concrete), so it skips as the real step does (it was +4.2% on Qwen2)."""
    model, inputs = _build(builder)
    options = Options(batch=2, optimizer=optim)
    report = analyze_module(model, inputs, options)
    fresh, _ = _build(builder)
    measured = measure_step(fresh, inputs, options)
    assert report.memory.peak_bytes == measured.peak_bytes
    assert report.totals.params == unique_param_count(fresh)
    assert report.complete, report.incomplete_reasons
    assert any(op == "aten::_local_scalar_dense" for op, _ in report.value_reads)
    assert "Follows the example inputs' values" in str(report)


def _grouped_mm_reference(model, inputs):
    """FlopCounterMode's counts with the `_grouped_mm` it has no formula for, derived by hand:
    each of the tokens*k routed rows goes through its expert's gate_up (H -> 2I) and down (I -> H)
    products: 2*H*I + I*H MACs forward; backward is the input and the weight gradient of each,
    twice the forward."""
    cfg = model.config
    rows = inputs["input_ids"].numel() * cfg.num_experts_per_tok
    h, i = cfg.hidden_size, cfg.intermediate_size
    macs = rows * (h * 2 * i + i * h) * cfg.num_hidden_layers
    forward, backward = count_flops(model, inputs, None)
    return forward + 2 * macs, backward + 4 * macs


@pytest.mark.slow
@pytest.mark.parametrize("builder", [mixtral, qwen2_moe_eager], ids=lambda f: f.__name__)
@pytest.mark.parametrize("routing", ["balanced", "worst", "capacity:1.5"])
def test_mixture_of_experts_matches_a_step_routed_the_same_way(builder, routing):
    model, inputs = _build(builder)
    options = Options(batch=2, optimizer="adam", routing=routing)
    report = analyze_module(model, inputs, options)
    assert not report.opaque and report.complete, report.incomplete_reasons
    layers = model.config.num_hidden_layers
    assert [(e, k) for _, e, k in report.routers] == [(4, 2)] * layers
    assert f"{routing} routing assumed" in str(report)
    assert report.to_dict()["routing"]["assumed"] == routing

    fresh, _ = _build(builder)
    torch.manual_seed(0)
    batch = inputs(2)
    peaks, _ = counted_steps(fresh, batch, None, options,
                             context=lambda tracker: ForcedRouting(routing))
    assert report.memory.peak_bytes == max(peaks)
    # The other routing's peak is replayed too: the spread the report prints.
    assert dict(report.routing_peaks)[routing] == max(peaks)
    assert set(dict(report.routing_peaks)) == {"balanced", "worst", routing}
    peaks = dict(report.routing_peaks)
    assert peaks["balanced"] <= peaks[routing] <= peaks["worst"]

    fresh, _ = _build(builder)
    with ForcedRouting(routing):
        if builder is mixtral:
            expected = _grouped_mm_reference(fresh, batch)
        else:
            expected = count_flops(fresh, batch, None)
    assert (report.totals.flops_forward, report.totals.flops_backward) == expected


def test_routing_assignments():
    """Balanced: 6 tokens x top-2 over 4 experts = 3 each; worst: experts 0 and 1 get all 6."""
    balanced = assigned((6, 2), 4, "balanced")
    assert torch.bincount(balanced.flatten(), minlength=4).tolist() == [3, 3, 3, 3]
    assert all(len(set(row.tolist())) == 2 for row in balanced)  # two distinct experts a token
    worst = assigned((6, 2), 4, "worst")
    assert torch.bincount(worst.flatten(), minlength=4).tolist() == [6, 6, 0, 0]


@pytest.mark.parametrize("rows,k,experts,factor,loads", [
    (6, 2, 4, 1.0, [3, 3, 3, 3]),  # capacity 3 = the balanced load
    (6, 2, 4, 1.5, [5, 5, 2, 0]),  # ceil(1.5 * 12 / 4) = 5 tokens at most an expert
    (8, 2, 8, 1.25, [3, 3, 3, 3, 3, 1, 0, 0]),  # ceil(1.25 * 16 / 8) = 3
    (6, 2, 4, 2.0, [6, 6, 0, 0]),  # capacity 6 = every token: worst
])
def test_capacity_routing_fills_experts_to_the_capacity(rows, k, experts, factor, loads):
    """capacity:C gives no expert more than ceil(C * rows * k / experts) tokens, as unevenly as
    that allows, and a token its k experts distinct."""
    idx = assigned((rows, k), experts, f"capacity:{factor}")
    assert torch.bincount(idx.flatten(), minlength=experts).tolist() == loads
    assert all(len(set(row.tolist())) == k for row in idx)


def test_routing_names_are_checked():
    from graphcalc.errors import UsageError

    assert Options(routing="Capacity=1.25").routing == "capacity:1.25"
    for bad in ("random", "capacity:0.5", "capacity:x"):
        with pytest.raises(UsageError, match="capacity"):
            Options(routing=bad)


@pytest.mark.parametrize("path,batch", [(ARCHS / "translation.py", 8),
                                        (ROOT / "tests" / "zoo" / "packed_gru.py", 6)],
                         ids=["translation", "packed_gru"])
def test_sequence_first_and_packed_inputs_against_a_real_step(path, batch):
    """PyTorch's translation tutorial (nn.Transformer, sequence first: batch in dimension 1, a
    float causal mask and boolean padding masks) and a GRU over pack_padded_sequence: both used to
    be refused. The packed batch is the sum of the example inputs' lengths, and the report says
    the figures follow those values."""
    src = loader.load(str(path))
    options = Options(batch=batch, optimizer="adam")
    report = analyze_file(str(path), options)
    measured = measure_step(real_model(src), src.example_inputs, options, loss_fn=src.loss)
    assert report.memory.peak_bytes == measured.peak_bytes
    assert report.totals.params == unique_param_count(real_model(src))
    torch.manual_seed(0)
    model = real_model(src)
    inputs = src.example_inputs(batch)
    assert (report.totals.flops_forward, report.totals.flops_backward) == count_flops(
        model, inputs, src.loss)
    assert not report.opaque
    if path.stem == "packed_gru":
        reads = dict(report.value_reads)
        assert "aten::_pack_padded_sequence" in reads
        assert "the sequence lengths size the packed batch" in str(report)


def test_routing_on_the_command_line(tmp_path):
    """`--routing worst` reaches the report: the JSON names it, in the config and the routing."""
    import json

    from typer.testing import CliRunner

    from graphcalc_cli.app import app

    model = tmp_path / "moe.py"
    model.write_text(
        "import torch, transformers as T\n"
        "def build_model():\n"
        "    return T.Qwen2MoeForCausalLM(T.Qwen2MoeConfig(vocab_size=100, hidden_size=32,\n"
        "        intermediate_size=64, moe_intermediate_size=16, shared_expert_intermediate_size=32,\n"
        "        num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,\n"
        "        num_experts=4, num_experts_per_tok=2, experts_implementation='eager'))\n"
        "def example_inputs(b):\n"
        "    ids = torch.randint(0, 100, (b, 8))\n"
        "    return {'input_ids': ids, 'labels': ids}\n")
    out = CliRunner().invoke(app, ["analyze", str(model), "--batch", "2", "--routing", "worst",
                                   "--format", "json"])
    assert out.exit_code == 0, out.output
    d = json.loads(out.output)
    assert d["config"]["routing"] == "worst"
    assert d["routing"]["assumed"] == "worst"
    assert d["routing"]["routers"] == [{"layer": "model.layers.0.mlp.gate", "experts": 4,
                                        "top_k": 2}]
    assert set(d["routing"]["peak_bytes"]) == {"balanced", "worst"}
    capped = CliRunner().invoke(app, ["analyze", str(model), "--batch", "2", "--routing",
                                      "capacity:1.5"])
    assert capped.exit_code == 0, capped.output
    assert "capacity:1.5 routing assumed" in capped.output
    assert "no expert gets more than 1.5 x tokens x k / experts" in capped.output
    bad = CliRunner().invoke(app, ["analyze", str(model), "--routing", "random"])
    assert bad.exit_code == 2
    assert "unknown routing 'random'" in bad.output


@pytest.mark.slow
def test_ctc_losses_that_read_label_lengths_against_a_real_step():
    """F.ctc_loss with per-sample target lengths, in a model file and in wav2vec2 for CTC: both
    were refused ("reads tensor values"); log_alpha (B, T, 2 * longest label + 1) is what the
    CPU kernel keeps for backward."""
    options = Options(batch=4, optimizer="adam")
    path = str(ARCHS / "ctc_conv.py")
    src = loader.load(path)
    report = analyze_file(path, options)
    measured = measure_step(real_model(src), src.example_inputs, options, loss_fn=src.loss)
    assert report.memory.peak_bytes == measured.peak_bytes
    assert "aten::_ctc_loss" in dict(report.value_reads)

    model, inputs = _build(wav2vec2_ctc)
    report = analyze_module(model, inputs, Options(batch=2, optimizer="adam"))
    fresh, _ = _build(wav2vec2_ctc)
    measured = measure_step(fresh, inputs, Options(batch=2, optimizer="adam"))
    assert report.memory.peak_bytes == measured.peak_bytes
    assert not report.opaque
    fresh, _ = _build(wav2vec2_ctc)
    torch.manual_seed(0)
    assert (report.totals.flops_forward, report.totals.flops_backward) == count_flops(
        fresh, inputs(2), None)
