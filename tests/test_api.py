"""`graphcalc.summary`: the seed texts' summary() calls, one code path with the CLI, no side effects."""

from __future__ import annotations

import copy
import json
import logging

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import graphcalc
from graphcalc_cli.app import app

from conftest import SAMPLES, sample


def mnist_mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))


def test_seed_summary_calls():
    # seed 000/001: summary(model, input_size=(1, 28, 28)) and the colour variant
    assert graphcalc.summary(mnist_mlp(), input_size=(1, 28, 28)).totals.params == 101_770
    cifar = nn.Sequential(nn.Flatten(), nn.Linear(3072, 128), nn.ReLU(), nn.Linear(128, 10))
    assert graphcalc.summary(cifar, input_size=(3, 32, 32)).totals.params == 394_634
    # seed 002: summary(model, input_size=(16, 3, 32, 32)) in torchinfo's form -> batch 16
    cnn = sample("seed_cnn").build()
    r = graphcalc.summary(cnn, input_size=(3, 32, 32), batch_size=16)
    assert r.totals.params == 26_926
    shapes = [layer.output_shapes[0] for layer in r.layers
              if layer.output_shapes and layer.type not in ("Sequential", "SeedCNN")]
    for expected in [(16, 5, 28, 28), (16, 5, 12, 12), (16, 12, 10, 10), (16, 12, 4, 4),
                     (16, 192), (16, 128), (16, 10)]:
        assert expected in shapes


def test_four_places_against_the_texts_arithmetic():
    # seed 001: params 101,770 x 4 B; grads the same; Adam 2 x params; data 64 x 3,136 B.
    r = graphcalc.summary(mnist_mlp(), input_size=(1, 28, 28), batch_size=64, optim="adam")
    b = r.memory.breakdown
    assert b.parameters == 407_080
    assert b.gradients == 407_080
    assert r.memory.optimizer_state_bytes == 2 * 407_080 + 16  # + four 4-byte step counters
    assert b.batch == 64 * 3_136
    assert b.total == r.memory.peak_bytes


def test_summary_and_cli_are_one_code_path():
    src = sample("seed_cnn")
    model = src.build()
    api = graphcalc.summary(model, batch_size=16, optim="adam", name="seed_cnn").to_dict()
    out = CliRunner().invoke(app, ["analyze", str(SAMPLES / "seed_cnn.py"), "--batch", "16",
                                   "--optim", "adam", "-f", "json"])
    assert out.exit_code == 0, out.output
    assert api == json.loads(out.stdout)


def test_input_data_batch_is_replaced():
    ids = torch.zeros(2, 16, dtype=torch.long)
    model = nn.Sequential(nn.Embedding(100, 8), nn.Linear(8, 100))
    r = graphcalc.summary(model, input_data=(ids,), batch_size=5)
    assert r.config["batch"] == 5
    assert r.layers[-2].output_shapes[0] == (5, 16, 100) or r.layers[0].output_shapes[0] == (5, 16, 100)


def test_dict_input_data():
    class KW(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 2)

        def forward(self, x, scale):
            return self.lin(x) * scale

    r = graphcalc.summary(KW(), input_data={"x": torch.ones(3, 4), "scale": torch.ones(3, 1)})
    assert r.config["batch"] == 3 and r.totals.params == 10


@pytest.mark.slow
def test_meta_model_and_7b_without_allocating():
    src = sample("llama", "build_7b")
    with torch.device("meta"):
        model = src.build()
    r = graphcalc.summary(model, batch_size=1, optim="sgd", depth=1)
    assert r.totals.params == 6_738_415_616
    assert all(p.device.type == "meta" for p in model.parameters())


def test_no_side_effects_on_a_cpu_model():
    src = sample("seed_cnn_bn")
    model = src.build()
    model.eval()
    model.fc[0].weight.requires_grad_(False)
    before = copy.deepcopy(model.state_dict())
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    graphcalc.summary(model, input_size=(3, 32, 32), batch_size=8, optim="adam")
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.device.type == "cpu" and p.grad is None for p in model.parameters())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_frozen_parameters_are_counted_apart():
    model = mnist_mlp()
    model[1].weight.requires_grad_(False)
    r = graphcalc.summary(model, input_size=(1, 28, 28), optim="adam")
    assert r.totals.frozen_params == 784 * 128
    assert r.memory.optimizer_state_bytes == 2 * 4 * (101_770 - 784 * 128) + 3 * 4


@pytest.mark.parametrize("kwargs,cli,text", [
    ({"optim": "lion"}, None, "unknown optimizer 'lion'"),
    ({"dtype": "fp8"}, None, "unknown dtype 'fp8'"),
    ({"batch_size": 0}, ["--batch", "0"], "batch must be at least 1, got 0"),
])
def test_bad_values_raise_the_cli_sentence(kwargs, cli, text):
    with pytest.raises(graphcalc.UsageError) as e:
        graphcalc.summary(mnist_mlp(), input_size=(1, 28, 28), **kwargs)
    assert text in str(e.value)
    if cli:
        out = CliRunner().invoke(app, ["analyze", str(SAMPLES / "mnist_mlp.py"), *cli])
        assert out.output.strip() == f"graphcalc: {e.value}"


def test_repr_html_str_and_to_json():
    r = graphcalc.summary(mnist_mlp(), input_size=(1, 28, 28))
    assert "<table>" in r._repr_html_() and "101,770" in r._repr_html_()
    assert "Peak training memory" in str(r)
    assert json.loads(r.to_json()) == r.to_dict()


def test_public_api_is_all_there_is():
    import types

    public = {n for n in dir(graphcalc) if not n.startswith("_")}
    modules = {n for n in public if isinstance(getattr(graphcalc, n), types.ModuleType)}
    assert public - modules == set(graphcalc.__all__) - {"__version__"}
    # the API the README and docs promise, and every error a caller may catch
    from graphcalc import errors

    assert set(graphcalc.__all__) == {
        "summary", "analyze_file", "analyze_module", "measure_step", "Measured", "Options",
        "Report", "Layer", "Totals", "Memory", "Breakdown", "TimelinePoint", "__version__"} | {
        n for n, v in vars(errors).items() if isinstance(v, type)
        and issubclass(v, errors.GraphcalcError)}


@pytest.mark.slow
def test_notebook_runs_headless():
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(SAMPLES / "notebook.ipynb", as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(SAMPLES)}}).execute()
    html = [o["data"]["text/html"] for c in nb.cells if c.cell_type == "code"
            for o in c.get("outputs", []) if "text/html" in o.get("data", {})]
    assert len(html) == 2
    assert "101,770" in html[0]
    assert "124,439,808" in html[1]


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.mark.parametrize("shown", [False, True])
def test_a_shape_error_logs_nothing_of_torchs_unless_asked(shown):
    # torch logs the failing meta kernel with its traceback before raising (fake_tensor's
    # log.exception); graphcalc raises one sentence instead, and keeps the log for show(True).
    # A handler of our own sees what torch's stderr handler would print (pytest's capture does
    # not: that handler holds the stream of the moment torch was imported); the terminal itself
    # is checked in test_cli.py.
    from graphcalc import torchlogs

    handler = _Records()
    logger = logging.getLogger("torch._subclasses.fake_tensor")
    logger.addHandler(handler)
    torchlogs.show(shown)
    try:
        with pytest.raises(graphcalc.ShapeError, match="layer '1'"):
            graphcalc.summary(mnist_mlp(), input_size=(3, 32, 32))
    finally:
        torchlogs.show(False)
        logger.removeHandler(handler)
    logged = [r.getMessage() for r in handler.records if r.exc_info]
    if shown:
        assert logged and "failed while attempting to run meta" in logged[0]
    else:
        assert logged == []
    assert logger.filters == []  # the filter is gone after the replay


@pytest.mark.parametrize("kwargs, text", [
    (dict(input_size=(64,), dtypes=["float"]), "dtypes must hold torch dtypes"),
    (dict(input_data=torch.randn(4, 64), batch_dim=5), "batch_dim 5"),
    (dict(input_data=torch.randn(4, 64), batch_dim=-1), "batch_dim must be"),
    (dict(input_size=(64,), batch_dim=2), "past the end of input_size"),
    (dict(input_size=(64,), loss=3), "loss must be a function"),
    (dict(input_data=torch.randn(4, 64), dtypes=[torch.long]), "dtypes applies to input_size"),
])
def test_argument_errors_are_the_callers_not_the_models(kwargs, text):
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    with pytest.raises(graphcalc.UsageError, match=text):
        graphcalc.summary(model, **kwargs)


def test_batch_dim_places_the_batch_of_input_size():
    """A sequence-first model: input_size (seq, features) with batch_dim=1 is (seq, batch, feat),
    the same step as input_data of that shape."""
    model = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0)  # batch_first=False
    by_size = graphcalc.summary(model, input_size=(10, 32), batch_size=6, batch_dim=1)
    by_data = graphcalc.summary(model, input_data=torch.randn(10, 6, 32), batch_dim=1)
    assert by_size.memory.peak_bytes == by_data.memory.peak_bytes
    assert by_size.totals.flops == by_data.totals.flops
    assert by_size.config["batch"] == 6


def test_given_input_data_is_counted_once_as_the_real_step_holds_it():
    from graphcalc.commands.measure import measure_step
    from graphcalc.options import Options

    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    data = torch.randn(32, 64)  # 8 KiB, well under the replay's real-value limit
    report = graphcalc.summary(model, input_data=data)
    measured = measure_step(copy.deepcopy(model), lambda b: data.clone(), Options(batch=32))
    assert report.memory.peak_bytes == measured.peak_bytes
    assert report.memory.breakdown.batch == data.numel() * 4


def test_summary_leaves_the_callers_random_generators_alone(tmp_path, monkeypatch):
    import random
    import sys

    import numpy as np

    (tmp_path / "drawing_model.py").write_text(
        "import random\nimport numpy as np\nimport torch\nfrom torch import nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.l = nn.Linear(8, 2)\n"
        "    def forward(self, x):\n        return self.l(x)\n"
        "def example_inputs(batch_size):\n"
        "    random.random(); np.random.rand()\n    return torch.randn(batch_size, 8)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from drawing_model import Net

    def draws():
        return random.random(), float(np.random.rand()), torch.rand(1).item()

    net, linear = Net(), nn.Linear(8, 2)
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    expected = draws()
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    graphcalc.summary(net, batch_size=4)
    graphcalc.summary(linear, input_size=(8,), batch_size=4)
    assert draws() == expected
    sys.modules.pop("drawing_model", None)
