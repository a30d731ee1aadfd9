"""A model exported with `torch.export` (a `.pt2` archive), analysed from the file alone: no
Python model code is imported.

`torch.export.load` reads the ExportedProgram (its ATen graph, weights and example inputs);
`torch.export.unflatten` gives it back its module hierarchy, so the replay sees the layers
(`conv1`, `layer1.0`...) as it does for a model file, and trains it: the exported graph's ATen ops
are the forward, autograd derives the backward, the optimizer steps its parameters. The batch
is the example inputs the export kept, or `--input`. A graph exported with static shapes runs at
its example batch only; one exported with a dynamic batch dimension (`torch.export.Dim`) at any.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from graphcalc.errors import ModelFileError, UsageError
from graphcalc.torchlogs import quiet

SUFFIX = ".pt2"


@contextlib.contextmanager
def _quiet():
    """torch.export's own notes: the traceback it logs before raising on a bad archive (the
    error says it in a sentence), and its deprecation warnings about its own formats."""
    logger = logging.getLogger("torch.export")
    drop = lambda record: not _shown_logs() and record.exc_info is None  # noqa: E731
    logger.addFilter(drop)
    try:
        with quiet(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        logger.removeFilter(drop)


def _shown_logs() -> bool:
    from graphcalc import torchlogs

    return torchlogs._shown


@dataclass(frozen=True)
class ExportedModel:
    """What `loader.load` makes its ModelSource of: the model's builder and its inputs."""

    name: str
    build: Callable[[], torch.nn.Module]
    example_inputs: Callable[[int], Any] | None


def load_exported(path: Path, name: str | None = None) -> ExportedModel:
    """An exported program, ready to build (see the module's docstring)."""
    if name:
        raise UsageError(f"{path} is an exported program: it holds one model, so no :{name}")
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    try:
        with _quiet():
            program = torch.export.load(str(path))
    except Exception as e:  # noqa: BLE001 - any failure to read the archive is the file's
        raise ModelFileError(f"{path} is not a torch.export archive torch "
                             f"{torch.__version__} can load: {type(e).__name__}: "
                             f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}"
                             ) from e

    types = _module_types(program)

    def build() -> torch.nn.Module:
        try:
            with _quiet():
                model = torch.export.unflatten(program)
        except Exception:  # noqa: BLE001 - the flat graph still runs, its ops at the root
            return program.module()
        for p, mod in model.named_modules():
            if p in types:  # the exported layer's own class name (Conv2d), not InterpreterModule
                mod.__class__ = _named(type(mod), types[p])
        return model

    return ExportedModel(path.stem, build, _example_inputs(program, path))


def _module_types(program) -> dict[str, str]:
    """Module path -> the class name it had when exported (the nodes' nn_module_stack)."""
    types = {}
    for node in program.graph.nodes:
        for p, qualified in (node.meta.get("nn_module_stack") or {}).values():
            types.setdefault(p, str(qualified).rsplit(".", 1)[-1])
    return types


_NAMED: dict[tuple[type, str], type] = {}


def _named(base: type, name: str) -> type:
    """A subclass of `base` that only carries the exported class name (what the table shows)."""
    cls = _NAMED.get((base, name))
    if cls is None:
        cls = _NAMED[(base, name)] = type(name, (base,), {"__module__": base.__module__})
    return cls


def _batch_is_dynamic(program) -> bool:
    """Whether the first user input's leading dimension is symbolic in the exported graph."""
    user = set(program.graph_signature.user_inputs)
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in user:
            val = node.meta.get("val")
            if isinstance(val, torch.Tensor) and val.dim() > 0:
                return not isinstance(val.shape[0], int)
    return False


def _example_inputs(program, path: Path) -> Callable[[int], Any] | None:
    examples = getattr(program, "example_inputs", None)
    if not examples:
        return None
    args, kwargs = examples
    tensors = [t for t in (*args, *kwargs.values()) if isinstance(t, torch.Tensor)]
    if not tensors or tensors[0].dim() == 0:
        return None
    example_batch = tensors[0].shape[0]
    dynamic = _batch_is_dynamic(program)

    def resized(t, batch: int):
        if not isinstance(t, torch.Tensor) or t.dim() == 0 or t.shape[0] != example_batch:
            return t
        reps = -(-batch // example_batch)  # the example's rows repeated: real values kept
        return t.repeat(reps, *([1] * (t.dim() - 1)))[:batch].clone()

    def make(batch: int):
        if batch != example_batch and not dynamic:
            raise UsageError(f"{path} was exported for batch {example_batch} (static shapes): "
                             f"analyse it with --batch {example_batch}, or export it with a "
                             "dynamic batch dimension (torch.export.Dim)")
        a = tuple(resized(t, batch) for t in args)
        k = {n: resized(t, batch) for n, t in kwargs.items()}
        if a and k:
            raise UsageError(f"{path} takes positional and keyword inputs: give them with "
                             "--input")
        return k if k else (a[0] if len(a) == 1 else a)

    return make
