"""Budgets: parameters, FLOPs and peak memory a model must stay within, checked before it lands.

    [[tool.graphcalc.budget]]          # pyproject.toml; in graphcalc.toml, [[budget]] works too
    model = "models/net.py:build_model"
    batch = 256
    optim = "adam"
    dtype = "bf16"
    max_params = "25M"
    max_flops = "4.5G"                 # per training step, forward + backward
    max_peak_memory = "16GiB"
    max_growth = "5%"                  # against the committed baseline
    gpu = "a100-80gb"                  # optional: must fit this card (reserved + CUDA context);
                                       # peak memory is then that device total

The config is data, read with tomllib and never executed; model paths are relative to the config
file's folder. The baseline (`graphcalc-baseline.json` beside the config unless
`[tool.graphcalc] baseline` says otherwise) holds the figures `--update-baseline` wrote, for
`max_growth`. Results are cached by content hash (the model file, the local files it imports,
found by parsing its imports with `ast`, the budget's options, torch and graphcalc itself), so an
unchanged model is not traced again.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import json
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable

from . import loader
from .analyze import analyze_file
from .errors import ConfigError, GraphcalcError
from .options import Options
from .units import (format_bytes, format_count, format_percent, parse_bytes, parse_count,
                    parse_percent)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

CONFIG_NAMES = ("graphcalc.toml", "pyproject.toml")
DEFAULT_BASELINE = "graphcalc-baseline.json"
BASELINE_SCHEMA = 1
OPTION_KEYS = ("model", "name", "batch", "optim", "dtype", "amp", "device", "input", "gpu",
               "allow_incomplete")
LIMIT_KEYS = ("max_params", "max_flops", "max_peak_memory", "max_growth")
FIGURES = ("params", "flops", "peak_memory_bytes")  # the figures limits and growth apply to


@dataclass(frozen=True)
class Budget:
    """One [[budget]] entry, validated."""

    name: str                      # `name`, else the model as written; keys the baseline
    model: str                     # as written in the config
    model_path: Path               # absolute
    model_name: str | None         # the NAME of FILE:NAME
    options: Options
    inputs: tuple[str, ...]
    max_params: int | None
    max_flops: int | None
    max_peak_memory: int | None
    max_growth: float | None       # a fraction: 0.05 for "5%"
    allow_incomplete: bool = False  # judge figures graphcalc marks incomplete as if complete
    config_path: Path | None = None  # where it was read, and its place there (from 1; the worker's
    index: int = 0                   # way back to it)

    @property
    def spec(self) -> str:
        """FILE[:NAME] for the loader, with the absolute path."""
        return str(self.model_path) + (f":{self.model_name}" if self.model_name else "")

    def settings(self) -> dict:
        """What the figures depend on besides the files: recorded in the baseline and cache key."""
        return {**self.options.as_dict(), "input": list(self.inputs)}


@dataclass(frozen=True)
class Config:
    path: Path
    budgets: tuple[Budget, ...]
    baseline_path: Path

    @property
    def folder(self) -> Path:
        return self.path.parent


@dataclass(frozen=True)
class Figures:
    """What a budget is checked on, from one analysis (Report totals and memory)."""

    params: int
    flops_forward: int
    flops_backward: int
    peak_memory_bytes: int  # with a `gpu`: the device total (reserved + CUDA context)
    unknown_ops: tuple[str, ...] = ()
    opaque_layers: tuple[str, ...] = ()  # layers that read tensor values, analysed around
    gpu_required_bytes: int | None = None  # with a `gpu`: what the card must hold (GpuFit)
    gpu_capacity_bytes: int | None = None  # and what it has
    incomplete: tuple[str, ...] = ()  # why graphcalc cannot stand behind the figures (Report)

    @property
    def flops(self) -> int:
        return self.flops_forward + self.flops_backward

    def get(self, figure: str) -> int:
        return getattr(self, figure)

    def to_dict(self) -> dict:
        return {"params": self.params, "flops": self.flops, "flops_forward": self.flops_forward,
                "flops_backward": self.flops_backward,
                "peak_memory_bytes": self.peak_memory_bytes, "unknown_ops": list(self.unknown_ops),
                "opaque_layers": list(self.opaque_layers),
                "incomplete": list(self.incomplete)} \
            | ({"gpu_required_bytes": self.gpu_required_bytes,
                "gpu_capacity_bytes": self.gpu_capacity_bytes}
               if self.gpu_capacity_bytes is not None else {})

    @classmethod
    def from_dict(cls, d: dict) -> "Figures":
        return cls(params=int(d["params"]), flops_forward=int(d["flops_forward"]),
                   flops_backward=int(d["flops_backward"]),
                   peak_memory_bytes=int(d["peak_memory_bytes"]),
                   unknown_ops=tuple(d.get("unknown_ops", ())),
                   opaque_layers=tuple(d.get("opaque_layers", ())),
                   gpu_required_bytes=d.get("gpu_required_bytes"),
                   gpu_capacity_bytes=d.get("gpu_capacity_bytes"),
                   incomplete=tuple(d.get("incomplete", ())))


@dataclass(frozen=True)
class Check:
    """One line of the verdict: a figure against its limit, or its growth over the baseline."""

    figure: str                    # params | flops | peak_memory_bytes | gpu_fit
    kind: str                      # "limit" or "growth"
    value: float | None            # the figure; for growth the fraction (0.072), None: no baseline
    limit: float                   # the max_* value; for growth the fraction
    baseline: int | None = None    # growth: the baseline figure
    problem: str | None = None     # growth that cannot be computed: why (fails the check)

    @property
    def ok(self) -> bool:
        if self.problem is not None or self.value is None:
            return False
        if self.kind == "growth":  # fractions: 0.1 + 0.2 style rounding must not fail a budget
            return self.value <= self.limit + 1e-12
        return self.value <= self.limit

    @property
    def excess(self) -> float:
        """How far over: figure minus limit (or growth minus max_growth); 0 when within."""
        return 0 if self.ok or self.value is None else self.value - self.limit

    def to_dict(self) -> dict:
        return {"figure": self.figure, "kind": self.kind, "value": self.value,
                "limit": self.limit, "baseline": self.baseline, "ok": self.ok,
                "excess": self.excess, "problem": self.problem}


@dataclass(frozen=True)
class Outcome:
    budget: Budget
    figures: Figures | None  # None: the analysis failed (`error` says why)
    checks: tuple[Check, ...]
    cached: bool
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and all(c.ok for c in self.checks)

    def to_dict(self) -> dict:
        return {"name": self.budget.name, "model": self.budget.model,
                "config": self.budget.settings(), "cached": self.cached, "ok": self.ok,
                "error": self.error,
                "figures": self.figures.to_dict() if self.figures is not None else None,
                "checks": [c.to_dict() for c in self.checks]}


# --- the config -----------------------------------------------------------------------------------

def find_config(start: Path | None = None) -> Path:
    """graphcalc.toml, else a pyproject.toml with a [tool.graphcalc] table, from start upwards."""
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / "graphcalc.toml").is_file():
            return folder / "graphcalc.toml"
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file() and "graphcalc" in _read_toml(pyproject).get("tool", {}):
            return pyproject
    raise ConfigError(f"no budget config found from {start} upwards: add [[tool.graphcalc.budget]] "
                      "to pyproject.toml or write a graphcalc.toml")


def _read_toml(path: Path) -> dict:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read the config file {path}: {e}") from None


def _shown(path: Path) -> str:
    """A path as a user would write it: relative to the current folder when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def load_config(path: Path) -> Config:
    """Read and validate every budget of a config file; a bad key or value raises ConfigError."""
    path = Path(path).resolve()
    data = _read_toml(path)
    table = data.get("tool", {}).get("graphcalc")
    if path.name != "pyproject.toml":  # graphcalc.toml may drop the tool.graphcalc prefix
        top = {k: v for k, v in data.items() if k != "tool"}
        if top and table is not None:
            raise ConfigError(f"{_shown(path)} has both top-level keys and [tool.graphcalc]: "
                              "keep one")
        if table is None:
            table = top
            for key in table:
                if key not in ("budget", "baseline"):
                    raise ConfigError(f"unknown key '{key}' in {_shown(path)}: valid keys are "
                                      "budget and baseline")
    if not isinstance(table, dict) or not table.get("budget"):
        entry = "[[tool.graphcalc.budget]]" if path.name == "pyproject.toml" else "[[budget]]"
        raise ConfigError(f"{_shown(path)} has no {entry} entry")
    entries = table["budget"]
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(f"'budget' in {_shown(path)} must be an array of tables: write "
                          "[[tool.graphcalc.budget]]")
    baseline = table.get("baseline", DEFAULT_BASELINE)
    if not isinstance(baseline, str) or not baseline:
        raise ConfigError(f"'baseline' in {_shown(path)} must be a file name, got {baseline!r}")
    budgets = tuple(_budget(entry, i + 1, path) for i, entry in enumerate(entries))
    seen: dict[str, int] = {}
    for i, b in enumerate(budgets, 1):
        if b.name in seen:
            raise ConfigError(f"budgets {seen[b.name]} and {i} of {_shown(path)} are both named "
                              f"'{b.name}': give each a distinct `name`")
        seen[b.name] = i
    return Config(path=path, budgets=budgets, baseline_path=(path.parent / baseline).resolve())


def _budget(entry: dict, index: int, path: Path) -> Budget:
    label = f"budget {index}" + (f" ('{entry['model']}')" if isinstance(entry.get("model"), str)
                                 else "")
    where = f"in {label} of {_shown(path)}"

    def bad(key: str, why: str) -> ConfigError:
        return ConfigError(f"bad '{key}' {where}: {why}")

    for key in entry:
        if key not in OPTION_KEYS + LIMIT_KEYS:
            close = difflib.get_close_matches(key, OPTION_KEYS + LIMIT_KEYS, n=1)
            hint = f"did you mean '{close[0]}'?" if close else \
                f"valid keys are {', '.join(OPTION_KEYS + LIMIT_KEYS)}"
            raise ConfigError(f"unknown key '{key}' {where}: {hint}")
    model = entry.get("model")
    if model is None:
        raise ConfigError(f"{label} of {_shown(path)} has no 'model': give FILE[:NAME], relative "
                          "to the config file")
    if not isinstance(model, str) or not model.strip():
        raise bad("model", f"write FILE[:NAME] as a string, got {model!r}")
    file_part, model_name = loader.split_spec(model.strip())
    model_path = (path.parent / file_part).resolve()
    if not model_path.is_file():
        raise bad("model", f"model file not found: {_shown(model_path)}")
    name = entry.get("name", model)
    if not isinstance(name, str) or not name.strip():
        raise bad("name", f"write a non-empty string, got {name!r}")

    def text(key: str, default):
        value = entry.get(key, default)
        if value is not None and not isinstance(value, str):
            raise bad(key, f"write a string, got {value!r}")
        return value

    settings: dict = {}
    for key, field, value in (("batch", "batch", entry.get("batch", 1)),
                              ("dtype", "dtype", text("dtype", "fp32")),
                              ("optim", "optimizer", text("optim", "adam")),
                              ("amp", "amp", text("amp", None)),
                              ("device", "device", text("device", "cpu")),
                              ("gpu", "gpu", text("gpu", None))):
        settings[field] = value
        try:  # one key at a time, so that the message names the key at fault
            options = Options(**settings)
        except GraphcalcError as e:
            raise bad(key, str(e)) from None
    if options.gpu is not None and entry.get("device", "cuda") != "cuda":
        raise bad("gpu", f"a GPU is a CUDA step: drop device = {entry['device']!r}")
    inputs = entry.get("input", [])
    inputs = [inputs] if isinstance(inputs, str) else inputs
    if not isinstance(inputs, list) or not all(isinstance(s, str) for s in inputs):
        raise bad("input", f"write a shape string or a list of them, e.g. \"3x224x224\", got "
                           f"{entry['input']!r}")
    for spec in inputs:
        try:
            loader.InputSpec.parse(spec)
        except GraphcalcError as e:
            raise bad("input", str(e)) from None
    limits = {}
    exact_count = lambda v: parse_count(v, exact=True)  # noqa: E731 - a limit as written
    exact_bytes = lambda v: parse_bytes(v, exact=True)  # noqa: E731
    for key, parse in (("max_params", exact_count), ("max_flops", exact_count),
                       ("max_peak_memory", exact_bytes), ("max_growth", parse_percent)):
        if key in entry:
            try:
                limits[key] = parse(entry[key])
            except GraphcalcError as e:
                raise bad(key, str(e)) from None
    if not limits and options.gpu is None:  # a gpu is a limit of its own: it must fit
        raise ConfigError(f"{label} of {_shown(path)} sets no limit: give at least one of "
                          f"{', '.join(LIMIT_KEYS)}, or a gpu it must fit")
    allow = entry.get("allow_incomplete", False)
    if not isinstance(allow, bool):
        raise bad("allow_incomplete", f"write true or false, got {allow!r}")
    return Budget(name=name.strip(), model=model, model_path=model_path, model_name=model_name,
                  options=options, inputs=tuple(inputs), max_params=limits.get("max_params"),
                  max_flops=limits.get("max_flops"),
                  max_peak_memory=limits.get("max_peak_memory"),
                  max_growth=limits.get("max_growth"), allow_incomplete=allow,
                  config_path=path, index=index)


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

    from . import __version__

    h = hashlib.sha256(f"{__version__}\0{torch.__version__}\0".encode())
    package = Path(__file__).resolve().parent
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


# --- the baseline ---------------------------------------------------------------------------------

def read_baseline(path: Path) -> dict[str, dict]:
    """{budget name: {"config": ..., "params": ..., "flops": ..., "peak_memory_bytes": ...}}."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        entries = data["budgets"]
        if data.get("schema_version") != BASELINE_SCHEMA or not isinstance(entries, dict):
            raise ValueError
        for entry in entries.values():
            for figure in FIGURES:
                if int(entry[figure]) < 0:
                    raise ValueError
    except (OSError, ValueError, KeyError, TypeError, AttributeError, OverflowError):
        raise ConfigError(f"the baseline {_shown(path)} is not a graphcalc baseline (schema "
                          f"{BASELINE_SCHEMA}): rewrite it with `graphcalc check "
                          "--update-baseline`") from None
    return entries


def write_baseline(path: Path, outcomes: Iterable[Outcome], *, keep: dict[str, dict],
                   names: Iterable[str]) -> None:
    """Write the figures of `outcomes`, keeping the entries of `keep` that are still budgets."""
    names = set(names)
    entries = {name: entry for name, entry in keep.items() if name in names}
    for o in outcomes:
        entries[o.budget.name] = {"model": o.budget.model, "config": o.budget.settings(),
                                  **{figure: o.figures.get(figure) for figure in FIGURES}}
    text = json.dumps({"schema_version": BASELINE_SCHEMA,
                       "budgets": dict(sorted(entries.items()))}, indent=2)
    path.write_text(text + "\n")


# --- checking -------------------------------------------------------------------------------------

def analyse(budget: Budget) -> Figures:
    """The budget's figures from one analysis in this process (graphcalc.budget_worker runs it in
    a process of its own)."""
    report = analyze_file(budget.spec, budget.options, inputs=list(budget.inputs) or None)
    g = report.gpu if budget.options.gpu is not None else None
    return Figures(params=report.totals.params, flops_forward=report.totals.flops_forward,
                   flops_backward=report.totals.flops_backward,
                   peak_memory_bytes=g.device_total_bytes if g else report.memory.peak_bytes,
                   unknown_ops=tuple(op for op, _ in report.unknown_ops),
                   opaque_layers=tuple(path for path, _ in report.opaque),
                   gpu_required_bytes=g.required_bytes if g else None,
                   gpu_capacity_bytes=g.capacity_bytes if g else None,
                   incomplete=tuple(report.incomplete_reasons))


def _isolated(budget: Budget) -> tuple[Figures, tuple[Path, ...]]:
    """analyse() in a fresh interpreter (graphcalc.budget_worker): the figures and the project
    files the analysis imported. Whatever the model does to its process, this one goes on: no
    result, or an error result, is an error here."""
    import subprocess
    import tempfile

    from . import errors

    if budget.config_path is None:
        raise ConfigError(f"budget '{budget.name}' was not read from a config file")
    with tempfile.TemporaryDirectory(prefix="graphcalc-budget-") as tmp:
        result = Path(tmp) / "result.json"
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"]
                                            if env.get("PYTHONPATH") else "")
        proc = subprocess.run([sys.executable, "-m", "graphcalc.budget_worker",
                               str(budget.config_path), str(budget.index), str(result)],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=env, cwd=os.getcwd())
        # the model's prints: never on stdout, where --format json is
        sys.stderr.write(proc.stdout.decode(errors="replace"))
        if proc.returncode != 0 or not result.exists():
            how = (f"was killed by signal {-proc.returncode}" if proc.returncode < 0
                   else f"ended with exit code {proc.returncode}")
            tail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
            raise errors.ModelBuildError(
                f"the analysis of {budget.model} {how} before it gave figures (the model's code "
                f"ended the process: os._exit, a signal or a crash){': ' + tail[0] if tail[0] else ''}")
        try:
            data = json.loads(result.read_text())
        except (OSError, ValueError) as e:
            raise errors.ModelBuildError(f"the analysis of {budget.model} left a damaged result: "
                                         f"{e}") from None
    if not data.get("ok"):
        kind = getattr(errors, str(data.get("error_type")), None)
        kind = kind if isinstance(kind, type) and issubclass(kind, GraphcalcError) \
            else errors.ModelBuildError
        raise kind(str(data.get("error")))
    return Figures.from_dict(data["figures"]), tuple(Path(f) for f in data.get("files", ()))


def measure(budget: Budget, project: Path, cache: Cache | None = None) -> tuple[Figures, bool]:
    """The budget's figures, from the cache when its files and options are unchanged: the files
    the analysis really imported, as recorded with the figures, and those its imports name."""
    key = cache_key(budget, project) if cache else None
    if cache:
        hit = cache.get(key)
        if hit is not None:
            return hit, True
    figures, imported = _isolated(budget)
    if cache:
        cache.put(key, figures, imported)
        cache.record_imports(budget, imported)
    return figures, False


def evaluate(budget: Budget, figures: Figures, baseline: dict | None) -> tuple[Check, ...]:
    """Each figure against its max_*, then its growth over the baseline against max_growth."""
    checks = [Check(figure, "limit", figures.get(figure), limit)
              for figure, limit in (("params", budget.max_params), ("flops", budget.max_flops),
                                    ("peak_memory_bytes", budget.max_peak_memory))
              if limit is not None]
    if budget.options.gpu is not None and figures.gpu_capacity_bytes is not None:
        checks.append(Check("gpu_fit", "limit", figures.gpu_required_bytes,
                            figures.gpu_capacity_bytes))
    if figures.incomplete and not budget.allow_incomplete:
        # a figure graphcalc cannot stand behind is never judged within a limit
        checks.append(Check("complete", "complete", None, 0,
                            problem=f"incomplete figures ({'; '.join(figures.incomplete)}); "
                                    "set allow_incomplete = true in the budget to judge them "
                                    "anyway"))
    if budget.max_growth is None:
        return tuple(checks)
    problem = None
    if baseline is None:
        problem = "no baseline"
    elif baseline.get("config") != budget.settings():
        problem = f"baseline taken with {_differences(baseline.get('config'), budget)}"
    for figure in FIGURES:
        if problem:
            checks.append(Check(figure, "growth", None, budget.max_growth, problem=problem))
            continue
        base, now = int(baseline[figure]), figures.get(figure)
        if base == 0 and now:  # no ratio to a zero: a figure that appears fails the check
            checks.append(Check(figure, "growth", None, budget.max_growth, baseline=0,
                                problem="0 in the baseline"))
            continue
        growth = (now - base) / base if base else 0.0
        checks.append(Check(figure, "growth", growth, budget.max_growth, baseline=base))
    return tuple(checks)


def _differences(recorded, budget: Budget) -> str:
    if not isinstance(recorded, dict):
        return "other settings"
    now = budget.settings()
    diffs = [f"{k} {recorded.get(k)!r} (now {now[k]!r})" for k in now if recorded.get(k) != now[k]]
    return ", ".join(diffs) or "other settings"


@dataclass(frozen=True)
class CheckRun:
    config: Config
    outcomes: tuple[Outcome, ...]
    skipped: int                   # budgets not touched by the changed files
    baseline_written: bool

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes)

    def to_dict(self) -> dict:
        return {"schema_version": 1, "config_file": str(self.config.path),
                "baseline_file": str(self.config.baseline_path), "ok": self.ok,
                "skipped": self.skipped, "baseline_written": self.baseline_written,
                "budgets": [o.to_dict() for o in self.outcomes]}


def check(config: Config, *, changed: Iterable[str | Path] | None = None,
          cache: Cache | None = None, update_baseline: bool = False,
          on_budget: Callable[[Budget], None] | None = None) -> CheckRun:
    """Analyse the budgets (those `changed` touches, when given) and judge them.

    With update_baseline the figures are written to the baseline first, so growth is judged
    against them (zero) and only the absolute limits can fail.
    """
    budgets = config.budgets if changed is None else select(config, changed, cache)
    try:
        baseline = read_baseline(config.baseline_path)
    except ConfigError:
        if not update_baseline:
            raise
        baseline = {}  # damaged: --update-baseline, the advice given for it, writes it anew
    measured, failed = [], {}
    for budget in budgets:
        if on_budget:
            on_budget(budget)
        try:
            measured.append((budget, *measure(budget, config.folder, cache)))
        except GraphcalcError as e:  # that budget fails; the others are still checked
            failed[budget.name] = str(e)
    if update_baseline:
        provisional = [Outcome(b, f, (), cached) for b, f, cached in measured]
        write_baseline(config.baseline_path, provisional, keep=baseline,
                       names=[b.name for b in config.budgets])
        baseline = read_baseline(config.baseline_path)
    figures = {b.name: (f, cached) for b, f, cached in measured}
    outcomes = tuple(
        Outcome(b, None, (), False, error=failed[b.name]) if b.name in failed
        else Outcome(b, figures[b.name][0], evaluate(b, figures[b.name][0], baseline.get(b.name)),
                     figures[b.name][1])
        for b in budgets)
    return CheckRun(config, outcomes, skipped=len(config.budgets) - len(budgets),
                    baseline_written=update_baseline)


# --- text, in the units of graphcalc.units -----------------------------------------------------

LABELS = {"params": "params", "flops": "FLOPs", "peak_memory_bytes": "peak memory",
          "gpu_fit": "GPU memory", "complete": "figures"}


def amount(figure: str, value: float) -> str:
    return format_bytes(value) if figure in ("peak_memory_bytes", "gpu_fit") \
        else format_count(value)


def value_text(check: Check) -> str:
    """'26.9M'; growth: '+7.2% params'."""
    if check.kind == "complete":
        return "incomplete"
    if check.kind == "limit":
        return amount(check.figure, check.value)
    if check.value is None:  # a growth with no baseline to compare (the verdict says why)
        return "--"
    return f"{format_percent(check.value, signed=True)} {LABELS[check.figure]}"


def limit_text(check: Check) -> str:
    if check.kind == "complete":
        return "complete"
    if check.kind == "growth":
        return format_percent(check.limit, signed=True)
    return amount(check.figure, check.limit)


def verdict_text(check: Check) -> str:
    """'ok', 'OVER by 1.93M (+7.7%)', 'OVER (baseline 25.0M)', 'FAIL: no baseline: ...'."""
    if check.problem:
        return f"FAIL: {check.problem}"
    if check.kind == "growth":
        base = f"baseline {amount(check.figure, check.baseline)}"
        return f"ok ({base})" if check.ok else f"OVER ({base})"
    return "ok" if check.ok else f"OVER {_excess_text(check)}"


def _excess_text(check: Check) -> str:
    over = check.value - check.limit
    share = f" ({format_percent(over / check.limit, signed=True)})" if check.limit else ""
    return f"by {amount(check.figure, over)}{share}"


def failures_text(outcome: Outcome) -> str:
    """The budget's part of the closing sentence: "net: params over by 1.93M (+7.7%), +7.2%
    params"; "" when it holds."""
    if outcome.error is not None:
        return f"{outcome.budget.name}: not analysed: {outcome.error}"
    items: list[str] = []
    for check in outcome.checks:
        if check.ok:
            continue
        if check.kind == "complete":
            item = check.problem
        elif check.problem:
            item = f"{check.problem} (run `graphcalc check --update-baseline` and commit it)"
        elif check.kind == "growth":
            item = value_text(check)
        else:
            item = f"{LABELS[check.figure]} over {_excess_text(check)}"
        if item not in items:
            items.append(item)
    return f"{outcome.budget.name}: {', '.join(items)}" if items else ""
