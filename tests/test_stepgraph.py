"""The training step as a torch.fx graph (graphcalc.fake.stepgraph) and the passes over it
(graphcalc.passes.graphpasses).

The graph is complete when the passes, reading nothing but node meta, give exactly what a
recorder that tallies as the ops go by (tests/tallies.py; the report reads no tally) counted: every layer's FLOPs forward and backward, bias adds and
unknown ops, the totals, and the whole memory section (the peak, where it falls, its breakdown,
each step's peak, the timeline and the stacked timeline, event for event), on samples and zoo
models, under fp32/Adam, bf16 autocast/SGD and a CUDA step (512-byte blocks, cuBLAS workspaces).
The report reads its FLOPs and memory from the graph (analyze.analyze_module); the tests against
real steps (test_memory, test_zoo, ...) check those figures.
"""

from __future__ import annotations

import operator
from dataclasses import replace

import pytest
import torch
from torch import nn

from graphcalc.passes import graphpasses as gp
from graphcalc.sources import loader
from graphcalc.commands.analyze import analyze_module, resolve_inputs
from graphcalc.options import Options
from graphcalc.fake.replay import replay
from graphcalc.fake.stepgraph import TensorValue
from graphcalc.passes.timeline import step_memory

from conftest import ROOT, SAMPLES
from tallies import TallyingRecorder, tallied_layers

MODELS = [str(SAMPLES / f"{n}.py") for n in ("seed_cnn", "residual", "lenet_bn", "mnist_mlp")] + [
    str(ROOT / "tests" / "zoo" / f"{n}.py")
    for n in ("shared_weights", "transformer_encoder", "lstm_classifier", "checkpointed",
              "custom_function", "packed_gru", "mha_block", "unet")]
CONFIGS = {"adam": Options(batch=2), "sgd-amp": Options(batch=2, optimizer="sgd", amp="bf16"),
           "cuda": Options(batch=2, device="cuda")}


def _both(spec: str, options: Options):
    src = loader.load(spec)
    make_inputs = resolve_inputs(src, None)
    model = loader.build_model(src, device="meta")
    report = analyze_module(model, make_inputs, options, loss_fn=src.loss)
    return report, replay(model, make_inputs, src.loss, options, graph=True).step_graph


def _cases():
    out = [pytest.param(m, "adam", id=f"{m.rsplit('/', 1)[1][:-3]}-adam") for m in MODELS]
    for m in MODELS[:2] + MODELS[5:7]:
        for c in ("sgd-amp", "cuda"):
            out.append(pytest.param(m, c, id=f"{m.rsplit('/', 1)[1][:-3]}-{c}"))
    return out


@pytest.mark.parametrize("spec,config", _cases())
def test_passes_give_the_tallied_figures_exactly(spec, config):
    """The passes over node meta against what the recorder tallied as the ops went by (its
    per-layer MACs and unknown ops, the tracker's live-storage events): the two independent
    accounts of the same replay agree, and the report (read from the graph) is both."""
    options = CONFIGS[config]
    src = loader.load(spec)
    make_inputs = resolve_inputs(src, None)
    model = loader.build_model(src, device="meta")
    rp = replay(model, make_inputs, src.loss, options, graph=True, recorder=TallyingRecorder)
    tallied = tallied_layers(model, rp)  # from the tallying recorder's per-layer counts
    tallied_memory = step_memory(rp, options)  # from rp.recorder.tracker.events
    per_layer = gp.layer_flops(rp.step_graph)
    for layer in tallied:
        row = per_layer.get(layer.name, gp.LayerFlops())
        assert (row.flops_forward, row.flops_backward, row.bias_adds_forward) == (
            layer.flops_forward, layer.flops_backward, layer.bias_adds_forward), layer.name
        assert tuple(sorted(row.unknown.items())) == layer.unknown_ops, layer.name
    assert set(per_layer) <= {layer.name for layer in tallied}
    outputs = gp.layer_outputs(rp.step_graph)  # StepGraph.calls and meta `saves`
    for layer in tallied:
        row = outputs.get(layer.name, gp.LayerOutputs())
        assert (row.calls, row.shapes, row.dtype, row.out_bytes, row.saved_bytes,
                row.inputs) == (
            layer.calls, layer.output_shapes, layer.output_dtype, layer.activation_bytes,
            layer.saved_bytes, layer.input_shapes), layer.name
    assert sum(r.saved_bytes for r in outputs.values()) == sum(
        sum(t.saved.values()) for t in rp.recorder.layers.values()) > 0
    totals = gp.flop_totals(per_layer)
    assert totals.flops_forward == sum(layer.flops_forward for layer in tallied) > 0
    assert totals.flops_backward == sum(layer.flops_backward for layer in tallied)
    assert totals.unknown == tuple(sorted(rp.recorder.unknown.items()))
    walk = gp.memory_walk(rp.step_graph)
    assert walk.peak_bytes == rp.recorder.tracker.peak == tallied_memory.peak_bytes > 0
    assert walk.step_peaks == (tallied_memory.first_step_peak_bytes,
                               tallied_memory.steady_step_peak_bytes)
    # The whole Memory from the graph's nodes against the one from the tracker's events, on
    # the same replay: peak, where it falls, breakdown, step peaks, timeline, stack and spans.
    from_graph = gp.graph_memory(
        rp.step_graph, device=options.device, inference_peak_bytes=rp.inference_peak,
        optimizer_state_bytes=rp.state_bytes,
        attention_kernels=tallied_memory.attention_kernels,
        cuda_target=tallied_memory.cuda_target)
    # (the tallied timeline may hold two points in a row for one layer, where a layer ran an op
    # that counted nothing between them: the graph's runs are of events, so one)
    merged = []
    for p in tallied_memory.timeline:
        if merged and (merged[-1].step, merged[-1].phase, merged[-1].layer) == (
                p.step, p.phase, p.layer):
            merged[-1] = replace(p, peak_bytes=max(p.peak_bytes, merged[-1].peak_bytes))
        else:
            merged.append(p)
    assert from_graph == replace(tallied_memory, timeline=tuple(merged))
    assert len(from_graph.timeline_stack) > 10 and from_graph.timeline_phases
    report = analyze_module(model, make_inputs, options, loss_fn=src.loss)
    # Two replays free a group of storages in whatever order the collector finalizes them, so
    # the event-by-event stack may differ between them; every other figure is the same.
    unstacked = dict(timeline_stack=(), timeline_phases=())
    assert report.layers == tallied
    assert replace(report.memory, **unstacked) == replace(from_graph, **unstacked)
    assert report.unknown_ops == totals.unknown


class _Linear(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x)


def _linear_step(options=Options(batch=2, optimizer="sgd")):
    return replay(_Linear(), lambda b: torch.randn(b, 4), None, options, graph=True).step_graph


def test_nodes_by_hand_on_a_linear_layer():
    step = _linear_step()
    placeholders = step.nodes("placeholder")
    assert [n.name for n in placeholders] == ["fc_weight", "fc_bias", "batch_0"]
    assert [n.meta["allocates"] for n in placeholders] == [3 * 4 * 4, 3 * 4, 2 * 4 * 4]
    addmm = [n for n in step.nodes("call_function")
             if n.target is torch.ops.aten.addmm.default and n.meta["phase"] == "forward"]
    assert len(addmm) == 2  # one per step
    first = addmm[0]
    # y = b + x @ W.T: x (2, 4), W.T (4, 3): 2 * 4 * 3 multiply-adds = 48 FLOPs (flops/matmul.py)
    assert first.meta["flops"] == 48 and first.meta["bias_adds"] == 2 * 3
    assert addmm[1].meta["flops"] == 0  # the second step: the recorder counts the first only
    assert first.meta["allocates"] == 2 * 3 * 4  # the (2, 3) fp32 output, a new storage
    assert first.meta["module"] == "fc" and first.meta["step"] == 1
    assert first.meta["val"] == TensorValue((2, 3), torch.float32, "cpu", (3, 1))
    bias, x, wt = first.args
    assert bias is placeholders[1] and x is placeholders[2]
    assert wt.target is torch.ops.aten.t.default and wt.args[0] is placeholders[0]


def test_saves_and_outputs_by_hand():
    """Linear -> ReLU -> Linear at batch 2: the ReLU's (2, 3) fp32 output, 24 bytes, is saved
    at the relu node (for its own backward and the second Linear's: counted once, at the first
    save); the Linears' inputs are the batch and that output, weights are no activation."""
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    sg = replay(model, lambda b: torch.randn(b, 4), None, Options(batch=2), graph=True).step_graph
    saving = [n for n in sg.nodes() if n.meta.get("saves")]
    assert [n.target for n in saving] == [torch.ops.aten.relu.default]
    ((path, _, nbytes),) = saving[0].meta["saves"]
    assert (path, nbytes) == ("1", 2 * 3 * 4)
    rows = gp.layer_outputs(sg)
    assert rows["1"] == gp.LayerOutputs(calls=1, shapes=((2, 3),), dtype="float32",
                                        out_bytes=24, saved_bytes=24, inputs=((2, 3),))
    assert rows["0"].inputs == ((2, 4),)  # the batch
    assert rows["2"].saved_bytes == 0 and rows["2"].shapes == ((2, 2),)
    assert rows["(root)"].out_bytes == 2 * 2 * 4 and "[loss]" not in rows


def test_meta_holds_no_tensor_and_every_node_has_its_fields():
    step = _linear_step(Options(batch=2, optimizer="adam"))
    for n in step.nodes():
        if n.op == "output":
            continue
        assert {"val", "module", "phase", "step", "flops", "allocates", "frees"} <= set(n.meta)
        vals = n.meta["val"] if isinstance(n.meta["val"], tuple) and not isinstance(
            n.meta["val"], TensorValue) else (n.meta["val"],)
        assert all(isinstance(v, TensorValue) for v in vals), n.format_node()
        assert not any(isinstance(v, torch.Tensor) for v in n.meta.values())
        if n.op == "call_function":
            assert isinstance(n.target, torch._ops.OpOverload) or n.target is operator.getitem
    phases = [n.meta["phase"] for n in step.nodes("call_function")]
    assert {"forward", "loss", "backward", "optimizer"} <= set(phases)
    assert {n.meta["step"] for n in step.nodes("call_function")} == {1, 2}


LINTED = sorted([p for p in SAMPLES.glob("*.py")] + list((ROOT / "tests" / "zoo").glob("*.py")))


@pytest.mark.parametrize("spec", [pytest.param(
    str(p), id=p.stem, marks=() if p.stem in ("seed_cnn", "residual", "packed_gru", "unet")
    else pytest.mark.slow) for p in LINTED])
@pytest.mark.parametrize("config", ["adam", "cuda"])
def test_the_step_graph_is_a_valid_fx_graph(spec, config):
    # torch.fx's own check: every node's arguments defined before it (the getitem of a
    # multi-output op and an inlined constant come before the op that reads them), targets
    # callable, names unique; and the GraphModule's code compiles
    from graphcalc.commands.trace import trace_file

    options = CONFIGS[config]
    if spec.endswith("sparse_embedding.py"):  # sparse gradients: Adam refuses them, as for real
        options = replace(options, optimizer="sgd")
    sg = trace_file(spec, options)
    sg.graph.lint()
    compile(sg.graph_module().code, "step.py", "exec")


def test_graph_module_code_is_python_and_reads_as_make_fx():
    code = _linear_step().graph_module().code
    compile(code, "step.py", "exec")
    assert "def forward(self, fc_weight, fc_bias, batch_0)" in code
    assert "torch.ops.aten.addmm.default(fc_bias, batch_0, t)" in code


def test_layer_graph_is_the_op_graph_contracted_by_module():
    report, step = _both(str(SAMPLES / "seed_cnn.py"), Options(batch=2))
    g = gp.layer_graph(step)
    chain = [name for name in report.run_order if name in g]
    assert chain[-1] == "[loss]" and len(chain) == 12
    # nn.Sequential: each layer reads what the one before it made, the loss reads the last
    for a, b in zip(chain, chain[1:]):
        assert g.has_edge(a, b), (a, b)
    assert sum(d["flops"] for _, d in g.nodes(data=True)) == report.totals.flops_forward
    assert g.has_edge("[input]", "conv.0")


class _PassThrough(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.skip, self.drop = nn.Linear(4, 6), nn.Identity(), nn.Dropout(0.0)
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x):
        h = self.drop(self.skip(self.fc1(x)))
        return self.fc2(h) + h[:, :3]


def test_layer_flow_passes_a_tensor_through_layers_that_run_no_op():
    """The picture's layer graph by hand: Identity and Dropout(0.0) run no op, yet fc1's output
    flows through them (meta `returns`) to fc2 and to the root's own slice and add (its part 1)."""
    sg = replay(_PassThrough(), lambda b: torch.randn(b, 4), None, Options(batch=2),
                graph=True).step_graph
    g = gp.layer_flow(sg)
    assert list(g.nodes) == [("fc1", 1, 0), ("skip", 1, 0), ("drop", 1, 0), ("fc2", 1, 0),
                             ("(root)", 1, 1), ("(root)", 1, 0), ("[loss]", 1, 0)]
    assert g.nodes[("fc1", 1, 0)]["ops"] == ["t", "addmm"] and g.nodes[("skip", 1, 0)]["ops"] == []
    assert g.nodes[("drop", 1, 0)]["shapes"] == ((2, 6),)
    assert g.nodes[("drop", 1, 0)]["out_bytes"] == 2 * 6 * 4
    assert g.nodes[("(root)", 1, 1)]["ops"] == ["slice", "add"]
    edges = sorted(g.edges(data=True), key=lambda e: e[2]["order"])
    assert [(a[0], b[0], d["shape"]) for a, b, d in edges] == [
        ("fc1", "skip", (2, 6)), ("skip", "drop", (2, 6)), ("drop", "fc2", (2, 6)),
        ("drop", "(root)", (2, 6)), ("fc2", "(root)", (2, 3)), ("(root)", "[loss]", (2, 3))]
    # the builder's record of it: fc1's addmm made what skip returned
    addmm = next(n for n in sg.nodes("call_function") if n.meta.get("call") == ("fc1", 1, 0)
                 and n.target is torch.ops.aten.addmm.default)
    returns = [r for n in sg.nodes() for r in n.meta.get("returns", ()) if r[0][0] == "skip"]
    assert returns == [(("skip", 1, 0), ((addmm, None, (2, 6)),))]


def test_a_pass_names_the_node_it_failed_on():
    step = _linear_step()
    node = next(n for n in step.nodes("call_function") if n.meta["phase"] == "forward")
    del node.meta["flops"]
    with pytest.raises(gp.GraphError, match=rf"{node.name}.*layer 'fc'.*flops"):
        gp.layer_flops(step)


# --- graphcalc trace and render --ops ------------------------------------------------------------

def _cli(*args):
    from typer.testing import CliRunner

    from graphcalc_cli.app import app

    return CliRunner().invoke(app, list(args))


CNN = str(SAMPLES / "seed_cnn.py")


def test_trace_writes_the_step_as_code_and_json_with_the_reports_peak(tmp_path):
    import json

    out = tmp_path / "step.py"
    r = _cli("trace", CNN, "--batch", "3", "--optim", "sgd", "-o", str(out))
    assert r.exit_code == 0, r.output
    code = out.read_text()
    compile(code, "step.py", "exec")
    assert "def forward(self, conv_0_weight, conv_0_bias" in code
    assert "# step 1 · forward · conv.0" in code and "# step 2 · optimizer" in code
    assert "torch.ops.aten.convolution.default(batch_0, conv_0_weight, conv_0_bias" in code
    r = _cli("trace", CNN, "--batch", "3", "--optim", "sgd", "--format", "json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    a = json.loads(_cli("analyze", CNN, "--batch", "3", "--optim", "sgd", "--format",
                        "json").stdout)
    assert d["peak_bytes"] == a["memory"]["peak_bytes"]
    assert d["config"] == a["config"]
    fwd = [n for n in d["nodes"] if n["phase"] == "forward" and n["step"] == 1]
    assert sum(n["flops"] for n in fwd) == a["totals"]["flops_forward"]
    assert fwd[0]["target"] == "aten.convolution.default"
    assert fwd[0]["val"]["shape"][0] == 3 and fwd[0]["module"] == "conv.0"
    assert fwd[0]["call"] == ["conv.0", 1, 0]
    returned = [r["call"] for n in fwd for r in n.get("returns", ())]
    assert ["conv.0", 1, 0] in returned and ["(root)", 1, 0] in returned


def test_trace_takes_analyzes_options():
    import json

    r = _cli("trace", CNN, "--dtype", "bf16", "--format", "json")
    assert r.exit_code == 0, r.output
    nodes = json.loads(r.stdout)["nodes"]
    conv = next(n for n in nodes if n["target"] == "aten.convolution.default")
    assert conv["val"]["dtype"] == "bfloat16"
    r = _cli("trace", CNN, "--device", "cuda", "--format", "json")
    # every storage in the CUDA allocator's 512-byte blocks (graphcalc.gpu.cuda)
    assert all(n["allocates"] % 512 == 0 for n in json.loads(r.stdout)["nodes"])


def test_trace_and_render_ops_say_one_sentence_on_bad_input(tmp_path):
    r = _cli("trace", str(tmp_path / "missing.py"))
    assert r.exit_code == 2 and "not found" in r.output and "Traceback" not in r.output
    r = _cli("render", CNN, "--ops", "--layer", "nope", "-f", "dot")
    assert r.exit_code == 2 and "no op of layer 'nope'" in r.output
    assert "conv.0" in r.output  # the layers to choose from
    r = _cli("render", CNN, "--layer", "conv.0", "-f", "dot")
    assert r.exit_code == 2 and "add --ops" in r.output
    r = _cli("render", str(SAMPLES / "gpt2.py"), "--ops", "-f", "dot")
    assert r.exit_code == 2 and "too many to draw" in r.output and "--layer" in r.output


def test_render_ops_draws_the_ops_of_one_layer():
    r = _cli("render", CNN, "--ops", "--layer", "fc.0", "-f", "dot")
    assert r.exit_code == 0, r.output
    dot = r.stdout
    assert dot.startswith("digraph ops {")
    assert '"addmm" [label="addmm\\nf32[1, 128]\\n49.2K FLOPs"' in dot  # 2 * 192 * 128
    assert "cluster_backward" in dot and "fc.0.weight" in dot
    assert "convolution" not in dot  # conv.0 is another layer


# --- a torch.export archive (.pt2), analysed without the model's code ---------------------------

def _export(tmp_path, batch=4, dynamic=False):
    from conftest import real_model, sample

    src = sample("seed_cnn_bn")
    model = real_model(src).train()
    x = src.example_inputs(batch)
    shapes = ({"x": {0: torch.export.Dim("batch", min=2, max=4096)}}
              if dynamic else None)
    program = torch.export.export(model, (x,), dynamic_shapes=shapes)
    path = tmp_path / "cnn.pt2"
    torch.export.save(program, str(path))
    return src, path


def test_an_exported_program_is_analysed_as_its_model_and_as_a_real_step(tmp_path):
    from graphcalc.commands.analyze import analyze_file
    from graphcalc.sources.exported import load_exported
    from graphcalc.commands.measure import measure_step

    src, path = _export(tmp_path)
    options = Options(batch=4, optimizer="sgd")
    exported = analyze_file(str(path), options)
    original = analyze_file(str(SAMPLES / "seed_cnn_bn.py"), options)
    # Saved bytes and the peak may differ from the eager model's by a few bytes: the exported
    # graph is the program torch.export traced (its batch norm is one native_batch_norm call,
    # not eager's _batch_norm_impl_index path), and what it saves is what it runs.
    assert replace(exported.totals, saved_bytes=0) == replace(original.totals, saved_bytes=0)
    assert [(L.name, L.type, L.flops_forward, L.flops_backward, L.params)
            for L in exported.layers if L.name != "(root)"] == [
        (L.name, L.type, L.flops_forward, L.flops_backward, L.params)
        for L in original.layers if L.name != "(root)"]
    # the real step of the loaded program, byte for byte (graphcalc.commands.measure: live storages)
    source = load_exported(path)
    real = measure_step(source.build(), source.example_inputs, options)
    assert exported.memory.peak_bytes == real.peak_bytes
    assert abs(exported.memory.peak_bytes - original.memory.peak_bytes) <= 1024


def test_an_exported_program_with_a_dynamic_batch_runs_at_any_batch(tmp_path):
    from graphcalc.commands.analyze import analyze_file

    _, path = _export(tmp_path, dynamic=True)
    at = {b: analyze_file(str(path), Options(batch=b)).totals.flops_forward for b in (4, 12)}
    assert at[12] == 3 * at[4] > 0  # FLOPs linear in the batch


def test_an_exported_program_says_what_it_needs(tmp_path):
    _, path = _export(tmp_path)
    r = _cli("analyze", str(path), "--batch", "8")
    assert r.exit_code == 2 and "exported for batch 4" in r.output and "--batch 4" in r.output
    junk = tmp_path / "junk.pt2"
    junk.write_text("not an archive")
    r = _cli("analyze", str(junk))
    assert r.exit_code == 2 and "not a torch.export archive" in r.output
    assert "Traceback" not in r.output
    r = _cli("analyze", f"{path}:build")
    assert r.exit_code == 2 and "holds one model" in r.output


@pytest.mark.parametrize("config", ["adam", "cuda"])
def test_the_nodes_hold_every_event_of_the_tracker_in_its_order(config):
    """`allocated` and `freed` over the nodes, in node order, are the tracker's own events from
    the first placeholder to the end of the last step, one for one: what the memory walk reads
    is what was counted."""
    spec = str(ROOT / "tests" / "zoo" / "transformer_encoder.py")
    src = loader.load(spec)
    model = loader.build_model(src, device="meta")
    rp = replay(model, resolve_inputs(src, None), src.loss, CONFIGS[config], graph=True)
    sg = rp.step_graph
    from_nodes = [(serial, delta) for _, _, _, serial, delta in gp.memory_events(sg)]
    assert from_nodes == rp.recorder.tracker.events[sg.first_event:rp.step_events[-1]]
    assert sum(b for _, b in sg.start_storages) == sum(
        d for _, d in rp.recorder.tracker.events[:sg.first_event])
    # zero_grad frees the gradients in no op: after the optimizer's last node, in phase "end"
    marks = [m for n in sg.nodes() for m in n.meta.get("phase_marks", ())]
    assert (1, "end", "[optimizer]") in {m[1:] for m in marks}
    for n in sg.nodes("call_function"):
        assert n.meta["allocates"] == sum(d for _, d in n.meta["allocated"])
        assert n.meta["frees"] == -sum(d for _, d in n.meta["freed"])


def _runs_as_the_eager_step(spec: str, optimizer: str, tmp_path):
    """The code `graphcalc trace -o step.py` writes, run on real tensors, against the eager
    steps: (name, largest difference) of every parameter and buffer after them."""
    import runpy

    from torch.utils._pytree import tree_leaves
    from typer.testing import CliRunner

    from graphcalc.fake.step import example_batch, prepare_inputs, training_step
    from graphcalc.options import make_optimizer
    from graphcalc_cli.app import app

    code = tmp_path / "step.py"
    result = CliRunner().invoke(app, ["trace", spec, "--batch", "2", "--optim", optimizer,
                                      "-o", str(code)])
    assert result.exit_code == 0, result.output
    options = Options(batch=2, optimizer=optimizer)
    src = loader.load(spec)
    torch.manual_seed(0)
    model = loader.build_model(src, device=None)
    named = dict(model.named_parameters()) | dict(model.named_buffers())
    inputs = prepare_inputs(example_batch(src.example_inputs, 2), options, "cpu")
    batch = [t for t in tree_leaves(inputs) if isinstance(t, torch.Tensor)]
    order = [n.meta["input"] for n in _both(spec, options)[1].graph.nodes
             if n.op == "placeholder"]
    args = [batch[int(name[6:])].clone() if name.startswith("batch_")
            else named[name].detach().clone() for name in order]
    step = runpy.run_path(str(code))["build"]()
    torch.manual_seed(1)
    with torch.no_grad():
        step(*args)
    optimizer_ = make_optimizer(optimizer, [p for p in model.parameters() if p.requires_grad])
    torch.manual_seed(1)
    for _ in range(options.steps):
        training_step(model, inputs, src.loss, optimizer_)
    return {name: (named[name].detach() - a).abs().max().item()
            for name, a in zip(order, args) if not name.startswith("batch_")}


@pytest.mark.parametrize("spec,optimizer", [
    (str(SAMPLES / "seed_cnn.py"), "adam"), (str(SAMPLES / "mnist_mlp.py"), "adamw"),
    pytest.param(str(SAMPLES / "resnet18.py"), "sgd", marks=pytest.mark.slow),
    pytest.param(str(SAMPLES / "gpt2.py"), "adam", marks=pytest.mark.slow),
    pytest.param(str(ROOT / "tests" / "zoo" / "transformer_encoder.py"), "adam",
                 marks=pytest.mark.slow)])
def test_the_traced_step_runs_and_takes_the_eager_steps_bit_for_bit(spec, optimizer, tmp_path):
    # the parameters after the two replayed steps (forward, loss, backward, optimizer: so every
    # loss and gradient on the way) equal the eager steps', bit for bit; batch norms' running
    # statistics too, and dropout draws the same masks from the same seed
    moved = _runs_as_the_eager_step(spec, optimizer, tmp_path)
    assert moved and all(d == 0 for d in moved.values()), moved
