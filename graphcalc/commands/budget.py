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

import difflib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from graphcalc.commands.analyze import analyze_file
from graphcalc.commands.budget_cache import Cache, cache_key, select
from graphcalc.commands.budget_types import (BASELINE_SCHEMA, DEFAULT_BASELINE,
                                             FIGURES, LIMIT_KEYS, OPTION_KEYS, Budget, Check,
                                             Config, Figures, Outcome)
from graphcalc.errors import ConfigError, GraphcalcError
from graphcalc.options import Options
from graphcalc.sources import loader
from graphcalc.units import parse_bytes, parse_count, parse_percent

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


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
    """The budget's figures from one analysis in this process (graphcalc.commands.budget_worker runs it in
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
    """analyse() in a fresh interpreter (graphcalc.commands.budget_worker): the figures and the project
    files the analysis imported. Whatever the model does to its process, this one goes on: no
    result, or an error result, is an error here."""
    import subprocess
    import tempfile

    from graphcalc import errors

    if budget.config_path is None:
        raise ConfigError(f"budget '{budget.name}' was not read from a config file")
    with tempfile.TemporaryDirectory(prefix="graphcalc-budget-") as tmp:
        result = Path(tmp) / "result.json"
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"]
                                            if env.get("PYTHONPATH") else "")
        proc = subprocess.run([sys.executable, "-m", "graphcalc.commands.budget_worker",
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
