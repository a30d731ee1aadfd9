"""Every figure of ../shared/SEEDS.md, reproduced (the tutorial texts graphcalc grew from)."""

from __future__ import annotations

import pytest

from graphcalc.commands.analyze import analyze_file, analyze_module
from graphcalc.options import Options

from conftest import SAMPLES, sample


def analyze(name: str, batch: int, factory: str | None = None, **kw):
    spec = str(SAMPLES / f"{name}.py") + (f":{factory}" if factory else "")
    return analyze_file(spec, Options(batch=batch, **kw))


@pytest.mark.parametrize("name,params", [
    ("mnist_mlp", 101_770),  # 784*128 + 128 + 128*10 + 10
    ("cifar_mlp", 394_634),  # 3072*128 + 128 + 1290
    ("seed_cnn", 26_926),  # conv 932 + fc 25,994
    ("seed_cnn_bn", 27_216),  # + 10 + 24 + 256 for the three BatchNorms
])
def test_parameter_counts(name, params):
    assert analyze(name, 2).totals.params == params


def test_cnn_conv_and_fc_parts():
    layers = {l.name: l for l in analyze("seed_cnn", 16).at_depth(1).layers}
    assert layers["conv"].params == 932  # 5*3*25 + 5 + 12*5*9 + 12
    assert layers["fc"].params == 25_994  # 192*128 + 128 + 128*10 + 10


def test_cnn_output_shapes_at_batch_16_as_torchinfo_shows_them():
    r = analyze("seed_cnn", 16)
    shapes = {l.name: l.output_shapes[0] for l in r.layers if l.output_shapes}
    assert shapes["conv.0"] == (16, 5, 28, 28)
    assert shapes["conv.2"] == (16, 5, 12, 12)
    assert shapes["conv.3"] == (16, 12, 10, 10)
    assert shapes["conv.5"] == (16, 12, 4, 4)
    assert shapes["flatten"] == (16, 192)
    assert shapes["fc.0"] == (16, 128)
    assert shapes["fc.2"] == (16, 10)


def test_cnn_macs_and_torchinfo_mult_adds():
    r = analyze("seed_cnn", 16)
    # per sample: conv1 3,920 x 75 + conv2 1,200 x 45 + fc1 24,576 + fc2 1,280 = 373,856 MACs
    assert r.totals.macs_forward == 16 * 373_856 == 5_981_696
    assert r.totals.flops_forward == 11_963_392  # FlopCounterMode's 2 per MAC
    # torchinfo's 6.07 M adds one mult-add per bias element per output:
    # 380 x 784 + 552 x 100 + 24,704 + 1,290 = 379,114 per sample.
    assert r.totals.mult_adds_with_bias == 16 * 379_114 == 6_065_824


def test_cnn_input_size_as_torchinfo():
    # torchinfo's "input size 0.20 MB": 16 x 3 x 32 x 32 x 4 B = 196,608 B.
    assert analyze("seed_cnn", 16).memory.breakdown.batch == 196_608


def test_mnist_memory_four_places_at_batch_64_with_adam():
    r = analyze("mnist_mlp", 64, optimizer="adam")
    b = r.memory.breakdown
    assert b.parameters == 101_770 * 4  # "fp32 params ~400 KB"
    assert b.gradients == 101_770 * 4  # "grads the same" (the peak falls in optimizer.step())
    # "Adam state 2x params": exp_avg and exp_avg_sq, plus one 4-byte step counter per tensor.
    assert r.memory.optimizer_state_bytes == 2 * 101_770 * 4 + 4 * 4
    assert b.batch == 64 * 3_136  # one sample 1x28x28x4 = 3,136 B


def test_mnist_hidden_activation_at_batch_1024():
    # 1024 x 128 x 4 B = 512 KiB
    layers = {l.name: l for l in analyze("mnist_mlp", 1024).layers}
    hidden = next(l for l in layers.values() if l.type == "Linear" and l.output_shapes[0][1] == 128)
    assert hidden.activation_bytes == 1024 * 128 * 4 == 512 * 1024


def test_cifar_data_batch_at_1024_is_12_mib():
    assert analyze("cifar_mlp", 1024).memory.breakdown.batch == 12 * 2**20  # 1024 x 12,288 B


def test_residual_block_shapes():
    assert analyze("residual", 4, "build_identity").layers[0].output_shapes[0] == (4, 3, 6, 6)
    assert analyze("residual", 4).layers[0].output_shapes[0] == (4, 6, 3, 3)


def test_resnet18_shape_table():
    src = sample("resnet18")
    from graphcalc.sources import loader

    model = loader.build_model(src)
    r = analyze_module(model, src.example_inputs, Options(batch=1), loss_fn=src.loss)
    top = [l.output_shapes[0] for l in r.at_depth(1).layers if l.depth == 1]
    assert (1, 64, 56, 56) in top  # the stem
    for shape in [(1, 64, 56, 56), (1, 128, 28, 28), (1, 256, 14, 14), (1, 512, 7, 7), (1, 10)]:
        assert any(l.output_shapes and l.output_shapes[0] == shape for l in r.layers), shape
    assert any(l.output_shapes and l.output_shapes[0] == (1, 512, 1, 1) for l in r.layers)
    assert any(l.output_shapes and l.output_shapes[0] == (1, 512) for l in r.layers)


def test_course_cnn_flattens_to_320():
    r = analyze("course_cnn", 64)
    assert any(l.type == "Linear" for l in r.layers)
    fc = next(l for l in r.layers if l.type == "Linear")
    assert fc.params == 320 * 10 + 10


def test_conv_arithmetic():
    r = analyze("conv_arith", 1)
    conv = next(l for l in r.layers if l.type == "Conv2d")
    assert conv.output_shapes[0] == (1, 10, 98, 98)
    assert conv.params == 10 * 5 * 3 * 3 + 10
