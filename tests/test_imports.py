"""No import cycles inside graphcalc: the layout is a pipeline (load -> replay -> cost -> memory
-> report -> render), each module importing only those before it.

An AST scan of every module's imports, those inside functions (lazy) included: a lazy import
hides a cycle from the interpreter, not from the design. A package importing its own submodules
(graphcalc/__init__.py re-exporting the API, graphcalc.flops loading its formula files) and a
submodule importing its package's registry are not cycles between modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

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
