"""Which budgets a change touches (the model file and the local files it imports, found by parsing,
not running) and the figures cached by content hash (graphcalc.commands.budget).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Iterable


if sys.version_info >= (3, 11):
    pass
else:  # pragma: no cover - Python 3.10
    pass

from graphcalc.commands.budget_types import Budget, Config, Figures



# --- local imports --------------------------------------------------------------------------------

def _module_files(root: Path, dotted: str) -> list[Path]:
    """The files `import dotted` runs when looked up under root: package __init__s, the module."""
    found = []
    folder = root
    for part in dotted.split("."):
        if (folder / f"{part}.py").is_file():
            found.append(folder / f"{part}.py")
            break
        if (folder / part / "__init__.py").is_file():
            found.append(folder / part / "__init__.py")
        elif not (folder / part).is_dir():  # not here (namespace packages are folders)
            break
        folder = folder / part
    return found


def _imports_of(path: Path, roots: tuple[Path, ...]) -> set[Path]:
    """Local files one file imports, anywhere in it (functions too), found by parsing, not running."""
    try:
        tree = ast.parse(path.read_bytes(), str(path))
    except (SyntaxError, ValueError, OSError):
        return set()  # the loader says what is wrong with it when it runs
    found: set[Path] = set()

    def lookup(dotted: str, bases: Iterable[Path]) -> list[Path]:
        for base in bases:  # the first root that has it wins, as on sys.path
            files = _module_files(base, dotted)
            if files:
                return files
        return []

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.update(lookup(alias.name, roots))
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the importing file's package
                base = path.parent
                for _ in range(node.level - 1):
                    base = base.parent
                bases = (base,)
                if node.module is None and (base / "__init__.py").is_file():
                    found.add(base / "__init__.py")
            else:
                bases = roots
            for alias in node.names:  # `from pkg import sub` may name a submodule
                dotted = f"{node.module}.{alias.name}" if node.module else alias.name
                found.update(lookup(dotted, bases))
            if node.module:
                found.update(lookup(node.module, bases))
    return {f.resolve() for f in found}


def local_files(model_path: Path, project: Path) -> tuple[Path, ...]:
    """The model file and every local file it imports, transitively, sorted.

    Absolute imports are looked up where the loader finds them (the model file's folder, which it
    puts first on sys.path) and in the project folder (the config's), for an installed or
    PYTHONPATH package of the project itself; anything else is a library, not local.
    """
    model_path = model_path.resolve()
    roots = (model_path.parent, project.resolve())
    seen = {model_path}
    todo = [model_path]
    while todo:
        for f in _imports_of(todo.pop(), roots):
            if f not in seen:
                seen.add(f)
                todo.append(f)
    return tuple(sorted(seen))


def select(config: Config, changed: Iterable[str | Path],
           cache: "Cache | None" = None) -> tuple[Budget, ...]:
    """The budgets a change touches: those whose model file or local imports are among `changed`
    (the imports its source names, and the files its last analysis really imported, as the cache
    recorded them); all of them when the config or the baseline file changed. A budget never
    analysed with a cache is touched by any changed Python file: what it imports is not known."""
    changed = {Path(p).resolve() for p in changed}
    if config.path in changed or config.baseline_path in changed:
        return config.budgets
    python = {p for p in changed if p.suffix == ".py"}

    def touched(b: Budget) -> bool:
        if changed.intersection(local_files(b.model_path, config.folder)):
            return True
        recorded = cache.imports(b) if cache is not None else set()
        if recorded:
            return bool(changed & recorded)
        return bool(python)

    return tuple(b for b in config.budgets if touched(b))


# --- the cache ------------------------------------------------------------------------------------

def default_cache_dir() -> Path:
    """$GRAPHCALC_CACHE_DIR, else $XDG_CACHE_HOME/graphcalc, else ~/.cache/graphcalc: outside the
    repository, so nothing needs ignoring, and shared by clones of it."""
    if os.environ.get("GRAPHCALC_CACHE_DIR"):
        return Path(os.environ["GRAPHCALC_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "graphcalc"


@lru_cache(maxsize=1)
def _tool_digest() -> str:
    """graphcalc's version, its own source (an edit to a formula changes figures) and torch's."""
    import torch

    from graphcalc.version import __version__

    h = hashlib.sha256(f"{__version__}\0{torch.__version__}\0".encode())
    package = Path(__file__).resolve().parents[1]  # graphcalc, every stage of it
    for f in sorted(package.rglob("*.py")):
        h.update(f.relative_to(package).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def _base_key(budget: Budget) -> str:
    """sha256 over the budget's model, options and graphcalc: what the figures depend on besides
    the files' contents."""
    h = hashlib.sha256(_tool_digest().encode())
    h.update(json.dumps({"model": str(budget.model_path), "model_name": budget.model_name,
                         **budget.settings()}, sort_keys=True).encode())
    return h.hexdigest()


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def cache_key(budget: Budget, project: Path) -> str:
    """The base key and the contents of the model file and the local files its imports name."""
    h = hashlib.sha256(_base_key(budget).encode())
    for f in local_files(budget.model_path, project):
        h.update(b"\0" + os.path.relpath(f, budget.model_path.parent).encode() + b"\0")
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


class Cache:
    """Figures by cache key, one small JSON file each, with the files the analysis imported and
    their digests: an entry serves only while every one of them is unchanged."""

    def __init__(self, folder: Path):
        self.folder = Path(folder) / "budget"

    def get(self, key: str) -> Figures | None:
        try:
            d = json.loads((self.folder / f"{key}.json").read_text())
            files = d.get("files", {})
            if not isinstance(files, dict) or any(_digest(Path(f)) != h
                                                  for f, h in files.items()):
                return None  # a file the model imported changed (or the entry is damaged)
            figures = Figures.from_dict(d["figures"] if "figures" in d else d)
            for value in (figures.params, figures.flops_forward, figures.flops_backward,
                          figures.peak_memory_bytes):
                if value < 0:
                    return None
            return figures
        except (OSError, ValueError, KeyError, TypeError, AttributeError, OverflowError):
            return None  # absent or damaged: analyse again

    def put(self, key: str, figures: Figures, imported: Iterable[Path] = ()) -> None:
        files = {str(f): _digest(Path(f)) for f in imported}
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = self.folder / f"{key}.{os.getpid()}.tmp"
            tmp.write_text(json.dumps({"figures": figures.to_dict(), "files": files}))
            os.replace(tmp, self.folder / f"{key}.json")
        except OSError:
            pass  # a read-only cache costs time, never a wrong answer

    def record_imports(self, budget: Budget, imported: Iterable[Path]) -> None:
        """The files the budget's model imported, by budget (not by content): what `select`
        adds to the imports it finds by parsing."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / f"imports-{_base_key(budget)}.json"
            tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(sorted(str(f) for f in imported)))
            os.replace(tmp, path)
        except OSError:
            pass

    def imports(self, budget: Budget) -> set[Path]:
        try:
            data = json.loads((self.folder / f"imports-{_base_key(budget)}.json").read_text())
            return {Path(f).resolve() for f in data if isinstance(f, str)}
        except (OSError, ValueError, TypeError):
            return set()

