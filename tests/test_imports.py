"""The layout is the pipeline: no import cycles inside graphcalc, and no stage importing a later
one (sources -> flops -> gpu -> fake -> passes -> ranks -> output -> commands, with the shared
modules beside them all), each module at most about 600 lines.

An AST scan of every module's imports, those inside functions (lazy) included: a lazy import
hides a cycle from the interpreter, not from the design. A package importing its own submodules
(graphcalc/__init__.py re-exporting the API, graphcalc.flops loading its formula files) and a
submodule importing its package's registry are not cycles between modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "graphcalc"


def _module_name(path: Path, package: Path = PACKAGE) -> str:
    rel = path.relative_to(package.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(package: Path = PACKAGE) -> nx.DiGraph:
    """graphcalc module -> the graphcalc modules it imports, anywhere in its code."""
    files = {_module_name(p, package): p for p in package.rglob("*.py")}
    packages = {_module_name(p, package) for p in package.rglob("__init__.py")}
    g = nx.DiGraph()
    g.add_nodes_from(files)
    for name, path in files.items():
        here = name if name in packages else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.rsplit(".", node.level - 1)[0] if node.level > 1 else here
                    mod = f"{base}.{node.module}" if node.module else base
                else:
                    mod = node.module or ""
                # `from . import flops` imports a submodule; `from .report import Report` a module
                subs = [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in files]
                targets = subs if len(subs) == len(node.names) else [mod] + subs
            for t in targets:
                while t not in files and "." in t:
                    t = t.rsplit(".", 1)[0]
                if t in files and t != name:
                    g.add_edge(name, t)
    return g


def module_cycles(g: nx.DiGraph) -> list[list[str]]:
    """Cycles between modules, leaving out a package and its own submodules."""
    inner = g.copy()
    for a, b in list(inner.edges):
        if b.startswith(a + ".") or a.startswith(b + "."):
            inner.remove_edge(a, b)
    return [sorted(c) for c in nx.simple_cycles(inner)]


def test_no_import_cycles():
    assert module_cycles(import_graph()) == []


def test_the_scan_sees_lazy_imports_and_cycles(tmp_path):
    pkg = tmp_path / "graphcalc"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from .a import f\n")
    (pkg / "a.py").write_text("from .b import g\n\ndef f():\n    return g()\n")
    (pkg / "b.py").write_text("def g():\n    from .a import f  # lazy: still a cycle\n")
    (pkg / "c.py").write_text("from . import a\n")
    g = import_graph(pkg)
    assert set(g.edges) >= {("graphcalc.a", "graphcalc.b"), ("graphcalc.b", "graphcalc.a"),
                            ("graphcalc.c", "graphcalc.a")}
    assert module_cycles(g) == [["graphcalc.a", "graphcalc.b"]]


# --- the pipeline's direction ---------------------------------------------------------------------

# The stages, in the order the pipeline runs them; a stage imports only those before it (and
# itself) and the shared modules. See each sub-package's docstring and docs/architecture.md.
LINES_LIMIT = 650  # "no module over about 600 lines"
OVER_LIMIT: dict = {}
STAGES = ["sources", "flops", "gpu", "fake", "passes", "ranks", "output", "commands"]
# Modules every stage shares: they import only one another (options also looks a card up in
# graphcalc.gpu, the one table of GPUs, when an Options names one).
SHARED = {"errors", "units", "outputs", "torchlogs", "report", "routing", "options", "version",
          "dynamo"}
SHARED_MAY_IMPORT = {"options": {"gpu"}}
FACADE = {"", "api"}  # graphcalc/__init__.py and graphcalc.api: the public API, built on all


def _where(module: str) -> str:
    """'graphcalc.fake.replay' -> 'fake'; 'graphcalc.errors' -> 'errors'; 'graphcalc' -> ''."""
    parts = module.split(".")[1:]
    return parts[0] if parts else ""


def direction_faults(g: nx.DiGraph) -> list[str]:
    faults = []
    for a, b in g.edges:
        here, there = _where(a), _where(b)
        if here == there or here in FACADE:
            continue
        if here in SHARED:
            ok = there in SHARED or there in SHARED_MAY_IMPORT.get(here, ())
        elif here in STAGES:
            ok = there in SHARED or (there in STAGES
                                     and STAGES.index(there) <= STAGES.index(here))
        else:
            ok = False
        if not ok:
            faults.append(f"{a} imports {b}")
    return sorted(faults)


def test_no_stage_imports_a_later_one():
    assert direction_faults(import_graph()) == []


def test_every_module_is_in_a_stage_or_shared_and_every_stage_says_what_it_holds():
    for path in PACKAGE.rglob("*.py"):
        where = _where(_module_name(path))
        assert where in FACADE or where in SHARED or where in STAGES, path
    for stage in STAGES:
        init = PACKAGE / stage / "__init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and "May import" in doc, f"{init} says what it holds and what it may import"


def test_no_module_is_over_about_600_lines():
    sizes = {str(p.relative_to(PACKAGE.parent)): len(p.read_text().splitlines())
             for folder in (PACKAGE, PACKAGE.parent / "cli") for p in folder.rglob("*.py")}
    assert any(p.startswith("cli/") for p in sizes)  # the command line's modules are counted
    assert {p: n for p, n in sizes.items() if n > LINES_LIMIT} == OVER_LIMIT


def test_the_direction_check_sees_a_stage_importing_a_later_one(tmp_path):
    pkg = tmp_path / "graphcalc"
    for stage in ("fake", "passes"):
        (pkg / stage).mkdir(parents=True)
        (pkg / stage / "__init__.py").write_text('"""May import nothing."""\n')
    (pkg / "__init__.py").write_text("")
    (pkg / "fake" / "replay.py").write_text("def f():\n    from graphcalc.passes import x\n")
    (pkg / "passes" / "x.py").write_text("from graphcalc.fake import replay\n")
    (pkg / "errors.py").write_text("from graphcalc.fake import replay\n")
    assert direction_faults(import_graph(pkg)) == [
        "graphcalc.errors imports graphcalc.fake.replay",
        "graphcalc.fake.replay imports graphcalc.passes.x"]


# --- start-up (issue 30): --version and --help import nothing heavy ----------------------------

def _modules_after(code: str) -> set[str]:
    import json
    import subprocess
    import sys

    probe = (f"import sys, json\ntry:\n    {code}\nexcept SystemExit:\n    pass\n"
             "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def test_version_and_help_import_neither_torch_nor_the_pipeline():
    for argv in (["--version"], ["--help"], ["analyze", "--help"]):
        loaded = _modules_after("sys.argv = ['graphcalc'] + " + repr(argv)
                                + "; from graphcalc_cli.app import main; main()")
        assert "torch" not in loaded and "graphcalc.fake.replay" not in loaded, argv


def test_import_graphcalc_is_light_and_the_api_loads_on_first_use():
    assert "torch" not in _modules_after("import graphcalc")
    loaded = _modules_after("import graphcalc; graphcalc.Options")
    assert "torch" in loaded and "graphcalc.output.formatting" in loaded


def test_bench_has_no_import_circle():
    bench = PACKAGE.parent / "bench"
    names = {p.stem for p in bench.glob("*.py")}
    g = nx.DiGraph()
    for p in bench.glob("*.py"):
        g.add_node(p.stem)
        for node in ast.walk(ast.parse(p.read_text(), str(p))):
            found = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            g.add_edges_from((p.stem, f) for f in found if f in names and f != p.stem)
    assert g.number_of_edges() >= 3  # the scan sees bench's own imports (accuracy, hf_models)
    assert list(nx.simple_cycles(g)) == []


# --- the replay without torch._dynamo (graphcalc.dynamo) ----------------------------------

_ANALYZE = ("import sys, json\n{before}\n"
            "from graphcalc.commands.analyze import analyze_file\n"
            "from graphcalc.options import Options\n"
            "report = analyze_file({spec!r}, Options(batch=4, optimizer={optim!r}))\n"
            "zero_grad = torch.optim.Optimizer.zero_grad.__wrapped__\n"
            "mark = zero_grad.__dict__.get('__dynamo_disable')\n"
            "print(json.dumps({{'report': report.to_dict(), 'dynamo': 'torch._dynamo' in "
            "sys.modules, 'mark': None if mark is None else 'itself' if mark is zero_grad else "
            "'wrapped'}}))\n")


def _analysed(spec: str, before: str = "import torch", optim: str = "adam") -> dict:
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _ANALYZE.format(before=before, spec=spec,
                                                                optim=optim)],
                         capture_output=True, text=True, cwd=PACKAGE.parent)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("spec, optim", [("samples/seed_cnn_bn.py", "adam"),
                                         ("samples/gpt2.py", "sgd")])
def test_a_replay_leaves_dynamo_unloaded_with_the_figures_of_a_process_that_loaded_it(spec, optim):
    """Fake tensors and optimizers ask torch._dynamo for a few flags, a no-op wrapper and four
    dataclasses: the stand-in gives them (1.2 s less per process), and the figures are those of a
    process where the real package had been imported first."""
    deferred = _analysed(spec, optim=optim)
    loaded = _analysed(spec, "import torch, torch._dynamo", optim)
    assert not deferred["dynamo"] and loaded["dynamo"]
    assert deferred["mark"] is None  # the optimizer's zero_grad was handed back, then forgotten
    assert deferred["report"] == loaded["report"]


def test_a_model_that_asks_for_dynamo_mid_step_loads_it_and_no_figure_moves(tmp_path):
    """Anything beyond the stand-in (here `torch._dynamo.is_compiling()` in the forward) imports
    the real package there and then, outside the replay's dispatch modes (its import-time
    tensors are not the step's); the functions handed back unwrapped wrap themselves again."""
    plain = tmp_path / "plain.py"
    plain.write_text(
        "import torch\nfrom torch import nn\n\n"
        "class M(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.a, self.b = nn.Linear(32, 64), nn.Linear(64, 10)\n\n"
        "    def forward(self, x):\n"
        "        return self.b(torch.relu(self.a(x)))\n\n"
        "def build_model():\n    return M()\n\n"
        "def example_inputs(batch):\n    return torch.randn(batch, 32)\n")
    asking = tmp_path / "asking.py"
    asking.write_text(plain.read_text().replace(
        "        return self.b(", "        assert not torch._dynamo.is_compiling()\n"
        "        return self.b("))
    loaded = _analysed(str(asking))
    # zero_grad, handed back unwrapped in the build, wrapped itself in the real disable after
    assert loaded["dynamo"] and loaded["mark"] == "wrapped"
    plain = _analysed(str(plain))["report"]
    for part in ("totals", "memory", "layers"):
        assert plain[part] == loaded["report"][part], part
