"""The networkx layer graph: tensor flow between layers, folded by depth like the table."""

import pytest

from graphcalc.analyze import analyze_file
from graphcalc.graph import execution_order, layer_graph
from graphcalc.options import Options

from conftest import SAMPLES


def test_residual_block_graph():
    r = analyze_file(str(SAMPLES / "residual.py"), Options(batch=4))
    g = layer_graph(r)
    assert set(g.nodes) == {layer.name for layer in r.layers}
    # conv1 -> bn1 and conv2 -> bn2 carry the (4, 6, 3, 3) maps; the 1x1 shortcut feeds the add
    # written in the block's own forward.
    assert g.edges["conv1", "bn1"]["shape"] == (4, 6, 3, 3)
    assert g.edges["conv2", "bn2"]["shape"] == (4, 6, 3, 3)
    assert g.has_edge("conv3", "(root)")
    assert execution_order(r)[:2] == ["conv1", "bn1"]


def test_resnet18_at_depth_1_is_a_chain():
    r = analyze_file(str(SAMPLES / "resnet18.py"), Options(batch=2))
    order = execution_order(r, 1)
    assert order == ["b1", "b2", "b3", "b4", "b5", "pool", "flatten", "fc", "[loss]"]
    g = layer_graph(r, 1)
    for a, b in zip(order, order[1:]):
        assert g.has_edge(a, b), (a, b)
    assert g.edges["b5", "pool"]["shape"] == (2, 512, 7, 7)


@pytest.mark.slow
def test_views_keep_their_producer():
    # A layer that views its input (conv reading the block input X, an embedding flattening its
    # ids) does not become the source of X: the 1x1 shortcut of b3.0 reads X from block b2.1,
    # whose own relu made it, and the loss reads the token ids from the batch, not from wte.
    r = analyze_file(str(SAMPLES / "resnet18.py"), Options(batch=2))
    g = layer_graph(r)
    assert g.edges["b2.1", "b3.0.conv3"]["shape"] == (2, 64, 56, 56)
    assert not g.has_edge("b3.0.conv1", "b3.0.conv3")
    # Flatten returns a view of pool's output: fc reads it from flatten.
    assert g.edges["flatten", "fc"]["shape"] == (2, 512)
    # ResNet-50 flattens in its own forward: avgpool -> (root) -> fc.
    r50 = layer_graph(analyze_file(str(SAMPLES / "resnet50.py"), Options(batch=1)))
    assert r50.edges["(root)", "fc"]["shape"] == (1, 2048)
    gpt = layer_graph(analyze_file(str(SAMPLES / "gpt2.py"), Options(batch=1)))
    assert set(gpt.predecessors("[loss]")) == {"lm_head"}
