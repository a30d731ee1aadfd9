"""The layer graph: tensor flow between layers, folded by depth like the table.

Every expected edge below is written by hand from the model's forward (tests/flow_models.py and
samples/), with the shape of the tensor that flows; the graph must hold exactly those edges.
"""

import networkx as nx
import pytest

from graphcalc.commands.analyze import analyze_file, analyze_module
from graphcalc.passes.graph import execution_order, layer_graph
from graphcalc.options import Options

import flow_models
from conftest import SAMPLES


def flow(name: str, batch: int = 2):
    build, inputs = flow_models.MODELS[name]
    return analyze_module(build(), inputs, Options(batch=batch))


def edges(g) -> dict:
    return {(a, b): g.edges[a, b]["shape"] for a, b in g.edges}


def test_residual_join():
    # Residual(3, 6, 1x1 conv, stride 2) on (4, 3, 6, 6): y = relu(bn1(conv1(x))) is the block's
    # first own op, y = bn2(conv2(y)), x = conv3(x) (x is the batch: no edge), y += x; relu(y)
    # is its second run of own ops. Every tensor is 4×6×3×3.
    r = analyze_file(str(SAMPLES / "residual.py"), Options(batch=4))
    g = layer_graph(r)
    join = "(root) (own ops 2)"
    s = (4, 6, 3, 3)
    assert edges(g) == {("conv1", "bn1"): s, ("bn1", "(root)"): s, ("(root)", "conv2"): s,
                        ("conv2", "bn2"): s, ("bn2", join): s, ("conv3", join): s,
                        (join, "[loss]"): s}
    assert g.nodes["(root)"]["ops"] == ("relu",)
    assert g.nodes[join]["ops"] == ("add_", "relu")
    assert execution_order(r)[:2] == ["conv1", "bn1"]


UNET = {  # (from, to): shape, from UNet.forward and Decoder.forward
    ("enc1.conv", "enc1.act"): (2, 4, 8, 8),
    ("enc1.act", "pool (call 1/2)"): (2, 4, 8, 8),
    ("pool (call 1/2)", "enc2.conv"): (2, 4, 4, 4),
    ("enc2.conv", "enc2.act"): (2, 8, 4, 4),
    ("enc2.act", "pool (call 2/2)"): (2, 8, 4, 4),
    ("pool (call 2/2)", "mid.conv"): (2, 8, 2, 2),
    ("mid.conv", "mid.act"): (2, 16, 2, 2),
    ("mid.act", "up2"): (2, 16, 2, 2),
    ("up2", "dec2"): (2, 8, 4, 4),  # dec2's torch.cat, its own op: the upsampled map
    ("enc2.act", "dec2"): (2, 8, 4, 4),  # ... and the skip from enc2
    ("dec2", "dec2.conv"): (2, 16, 4, 4),
    ("dec2.conv", "dec2.act"): (2, 8, 4, 4),
    ("dec2.act", "up1"): (2, 8, 4, 4),
    ("up1", "dec1"): (2, 4, 8, 8),
    ("enc1.act", "dec1"): (2, 4, 8, 8),  # the skip from enc1
    ("dec1", "dec1.conv"): (2, 8, 8, 8),
    ("dec1.conv", "dec1.act"): (2, 4, 8, 8),
    ("dec1.act", "head"): (2, 4, 8, 8),
    ("head", "[loss]"): (2, 2, 8, 8),
}


def test_unet_skips_and_two_input_decoders():
    g = layer_graph(flow("unet"))
    assert edges(g) == UNET
    # each node's shape is its own: dec2's cat makes 2×(8+8)×4×4; the pool's calls differ
    assert g.nodes["dec2"]["shapes"] == ((2, 16, 4, 4),)
    assert g.nodes["pool (call 1/2)"]["shapes"] == ((2, 4, 4, 4),)
    assert g.nodes["pool (call 2/2)"]["shapes"] == ((2, 8, 2, 2),)
    assert nx.is_directed_acyclic_graph(g)


def test_unet_at_depth_1_folds_into_the_calls():
    g = layer_graph(flow("unet"), 1)
    p1, p2 = "pool (call 1/2)", "pool (call 2/2)"
    assert set(edges(g)) == {("enc1", p1), (p1, "enc2"), ("enc2", p2), (p2, "mid"),
                             ("mid", "up2"), ("up2", "dec2"), ("enc2", "dec2"), ("dec2", "up1"),
                             ("up1", "dec1"), ("enc1", "dec1"), ("dec1", "head"),
                             ("head", "[loss]")}
    # a folded block shows what its call returned
    assert g.nodes["dec2"]["shapes"] == ((2, 8, 4, 4),)


def test_a_module_called_three_times_is_three_nodes():
    g = layer_graph(flow("three_pools"))
    p = [f"pool (call {i}/3)" for i in (1, 2, 3)]
    assert edges(g) == {("c1", p[0]): (2, 2, 8, 8), (p[0], "c2"): (2, 2, 4, 4),
                        ("c2", p[1]): (2, 2, 4, 4), (p[1], "c3"): (2, 2, 2, 2),
                        ("c3", p[2]): (2, 2, 2, 2),
                        (p[2], "(root)"): (2, 2, 1, 1),  # x.flatten(1) in the root's forward
                        ("(root)", "fc"): (2, 2), ("fc", "[loss]"): (2, 3)}
    assert [g.nodes[n]["shapes"] for n in p] == [((2, 2, 4, 4),), ((2, 2, 2, 2),),
                                                 ((2, 2, 1, 1),)]
    assert [g.nodes[n]["carrier"] for n in p] == [True, False, False]  # figures on call 1
    assert nx.is_directed_acyclic_graph(g)


def test_transformer_encoder_layer_residuals():
    # _sa_block: self_attn -> dropout1; x = x + that (own op 1; x is the batch) -> norm1;
    # _ff_block: linear1 -> relu (own op 2) -> dropout -> linear2 -> dropout2;
    # x = norm1's x + that (own op 3) -> norm2.
    g = layer_graph(flow("encoder_layer"))
    relu, add = "(root) (own ops 2)", "(root) (own ops 3)"
    d, ff = (2, 5, 8), (2, 5, 16)
    assert edges(g) == {("self_attn", "dropout1"): d, ("dropout1", "(root)"): d,
                        ("(root)", "norm1"): d, ("norm1", "linear1"): d, ("linear1", relu): ff,
                        (relu, "dropout"): ff, ("dropout", "linear2"): ff,
                        ("linear2", "dropout2"): d, ("dropout2", add): d, ("norm1", add): d,
                        (add, "norm2"): d, ("norm2", "[loss]"): d}
    assert g.nodes["(root)"]["shapes"] == (d,)  # its own add, not the model's output
    assert g.nodes[relu]["shapes"] == (ff,)


def test_two_input_model():
    g = layer_graph(flow("two_inputs"))
    assert edges(g) == {("image", "(root)"): (2, 4), ("table", "(root)"): (2, 4),
                        ("(root)", "head"): (2, 8), ("head", "[loss]"): (2, 2)}


def test_resnet18_at_depth_1_is_a_chain():
    r = analyze_file(str(SAMPLES / "resnet18.py"), Options(batch=2))
    order = execution_order(r, 1)
    assert order == ["b1", "b2", "b3", "b4", "b5", "pool", "flatten", "fc", "[loss]"]
    g = layer_graph(r, 1)
    assert set(g.edges) == set(zip(order, order[1:]))
    assert g.edges["b5", "pool"]["shape"] == (2, 512, 7, 7)


@pytest.mark.slow
def test_views_keep_their_producer():
    # A layer that views its input (conv reading the block input X, an embedding flattening its
    # ids) does not become the source of X: the 1x1 shortcut of b3.0 reads X from block b2.1's
    # add and relu, and the loss reads the token ids from the batch, not from wte.
    r = analyze_file(str(SAMPLES / "resnet18.py"), Options(batch=2))
    g = layer_graph(r)
    assert g.edges["b2.1 (own ops 2)", "b3.0.conv3"]["shape"] == (2, 64, 56, 56)
    assert not g.has_edge("b3.0.conv1", "b3.0.conv3")
    # Flatten returns a view of pool's output: fc reads it from flatten.
    assert g.edges["flatten", "fc"]["shape"] == (2, 512)
    # ResNet-50 flattens in its own forward: avgpool -> (root) -> fc.
    r50 = layer_graph(analyze_file(str(SAMPLES / "resnet50.py"), Options(batch=1)))
    assert r50.edges["(root)", "fc"]["shape"] == (1, 2048)
    gpt = layer_graph(analyze_file(str(SAMPLES / "gpt2.py"), Options(batch=1)))
    assert set(gpt.predecessors("[loss]")) == {"lm_head"}


@pytest.mark.parametrize("name", sorted(flow_models.MODELS))
def test_no_layer_feeds_itself(name):
    g = layer_graph(flow(name))
    assert not any(a == b for a, b in g.edges) and nx.is_directed_acyclic_graph(g)
