"""Load a model file: find the model, its example inputs and its training loss.

The contract (also in the README):
- `FILE[:NAME]`: NAME is an nn.Module instance, an nn.Module subclass (built with no arguments) or
  a zero-argument factory. Without NAME: `build_model()`, else a module-level `model`, else the one
  nn.Module subclass defined in the file.
- `example_inputs(batch_size)` returns a tensor, a tuple of tensors or a dict of keyword tensors.
- `loss(output, *inputs)` is the training loss; without it, `output.loss` when present, else the
  mean of the first tensor in the output.
Loading a file executes it, as importing it would.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import inspect
import itertools
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from graphcalc.dynamo import dynamo_deferred
from graphcalc.errors import ModelBuildError, ModelFileError, ModelNotFoundError, UsageError

_counter = itertools.count()


@dataclass
class ModelSource:
    """What a model file provides."""

    name: str
    build: Callable[[], nn.Module]
    example_inputs: Callable[[int], Any] | None
    loss: Callable[..., torch.Tensor] | None
    path: Path
    # A model by its Hugging Face config (graphcalc.sources.hf) is only ever built on the meta device for
    # an analysis: a 7B config built for real would allocate its 28 GB of weights.
    meta_only: bool = False
    hf_plan: Any = None  # graphcalc.sources.hf.Plan: the task and the batch's shapes


def _line_in(tb, path: Path) -> int | None:
    line = None
    for frame in traceback.extract_tb(tb):
        if Path(frame.filename).resolve() == path:
            line = frame.lineno
    return line


def _is_notebook(raw: bytes) -> bool:
    """A Jupyter notebook: JSON with cells (it compiles as a Python dict, then fails on `null`)."""
    if not raw.lstrip()[:1] == b"{":
        return False
    import json

    try:
        data = json.loads(raw)
    except ValueError:
        return False
    return isinstance(data, dict) and "cells" in data and "nbformat" in data


def import_file(path: Path):
    if not path.exists():
        raise ModelFileError(f"model file not found: {path}")
    if not path.is_file():
        raise ModelFileError(f"not a file: {path}")
    try:
        raw = path.read_bytes()
        # as Python reads a source file: a UTF-8 BOM or a coding line (PEP 263) says the encoding
        importlib.util.decode_source(raw)
    except OSError as e:
        raise ModelFileError(f"cannot read {path}: {e.strerror or e}") from None
    except (UnicodeDecodeError, LookupError, SyntaxError):
        raise ModelFileError(f"{path} is not a Python file (it is not text in the encoding "
                             "it declares, UTF-8 by default)") from None
    if _is_notebook(raw):
        raise ModelFileError(f"{path} is a Jupyter notebook, not a Python model file: in the "
                             "notebook, call graphcalc.summary(model, input_size=...) (see "
                             "samples/notebook.ipynb), or export its code with `jupyter nbconvert "
                             "--to script` and analyse that")
    try:
        compile(raw, str(path), "exec")
    except SyntaxError as e:
        raise ModelFileError(f"{path}:{e.lineno}: syntax error: {e.msg}") from None
    except ValueError as e:  # null bytes
        raise ModelFileError(f"{path} is not a Python file ({e})") from None
    module_name = f"_graphcalc_model_{next(_counter)}"
    # a source loader of its own: a model file need not end in .py
    spec = importlib.util.spec_from_file_location(
        module_name, path, loader=importlib.machinery.SourceFileLoader(module_name, str(path)))
    module = importlib.util.module_from_spec(spec)
    folder = str(path.parent)
    sys.path.insert(0, folder)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        line = _line_in(e.__traceback__, path.resolve())
        where = f"{path}:{line}" if line else str(path)
        raise ModelFileError(f"{where}: importing the model file failed: "
                             f"{type(e).__name__}: {e}") from e
    finally:
        if sys.path and sys.path[0] == folder:
            sys.path.pop(0)
    return module


def _defined_here(module, obj) -> bool:
    return getattr(obj, "__module__", None) == module.__name__


def _as_builder(module, name: str, obj) -> Callable[[], nn.Module]:
    if isinstance(obj, nn.Module):
        return lambda: obj
    if inspect.isclass(obj):
        if not issubclass(obj, nn.Module):
            raise ModelNotFoundError(f"'{name}' in {module.__file__} is a class but not an nn.Module")
        return obj
    if callable(obj):
        return obj
    raise ModelNotFoundError(
        f"'{name}' in {module.__file__} is not an nn.Module, an nn.Module subclass or a factory")


def candidates(module) -> list[str]:
    """What FILE:NAME could name in this file: its nn.Module instances, the nn.Module subclasses
    and the functions defined in it (factories), but not its example_inputs and loss."""
    names = []
    for n, obj in vars(module).items():
        if n.startswith("_") or n in ("example_inputs", "loss"):
            continue
        if isinstance(obj, nn.Module) or (
                _defined_here(module, obj) and (inspect.isfunction(obj) or (
                    inspect.isclass(obj) and issubclass(obj, nn.Module)))):
            names.append(n)
    return names


def find_model(module, name: str | None) -> tuple[str, Callable[[], nn.Module]]:
    path = module.__file__
    if name:
        if not hasattr(module, name):
            found = candidates(module)
            raise ModelNotFoundError(
                f"{path} has no '{name}'; " + (f"it defines {', '.join(found)}" if found else
                                               "it defines no nn.Module, nn.Module subclass or "
                                               "factory"))
        return name, _as_builder(module, name, getattr(module, name))
    if callable(getattr(module, "build_model", None)):
        return "build_model", module.build_model
    if isinstance(getattr(module, "model", None), nn.Module):
        return "model", _as_builder(module, "model", module.model)
    classes = [n for n, obj in vars(module).items()
               if inspect.isclass(obj) and issubclass(obj, nn.Module) and _defined_here(module, obj)]
    if len(classes) == 1:
        return classes[0], getattr(module, classes[0])
    if not classes:
        raise ModelNotFoundError(
            f"no model found in {path}: define build_model(), a module-level `model`, "
            "or one nn.Module subclass")
    raise ModelNotFoundError(
        f"several models in {path}: {', '.join(classes)}; pick one with {path}:NAME")


def split_spec(spec: str) -> tuple[str, str | None]:
    """'models/net.py:build' -> ('models/net.py', 'build'); a Windows drive letter is no NAME."""
    head = ""
    if len(spec) > 2 and spec[1] == ":" and spec[2] in "\\/":
        head, spec = spec[:2], spec[2:]
    file_part, _, name = spec.partition(":")
    return head + file_part, name or None


def load(spec: str, hf=None) -> ModelSource:
    """Load 'FILE[:NAME]', an exported program 'FILE.pt2', or a model by its Hugging Face name or
    config (`hf:NAME`, a config.json, a model folder: graphcalc.sources.hf, with the `hf` options, a
    graphcalc.sources.hf.HFOptions)."""
    from graphcalc.sources import hf as hf_configs  # no transformers import until a config is read

    if hf_configs.is_hf_spec(spec):
        return ModelSource(**hf_configs.load_source(spec, hf or hf_configs.HFOptions()))
    if hf is not None and not hf.is_default:
        raise UsageError("--task, --seq-len, --image-size, --audio-samples, --attn and --offline "
                         "apply to a Hugging Face name or config (hf:NAME, config.json, a model "
                         "folder), not to a model file")
    file_part, name = split_spec(spec)
    path = Path(file_part)
    if path.suffix == ".pt2":  # a torch.export archive: no Python model code (graphcalc.sources.exported)
        from graphcalc.sources.exported import load_exported

        exported = load_exported(path, name)
        return ModelSource(name=exported.name, build=exported.build,
                           example_inputs=exported.example_inputs, loss=None, path=path)
    module = import_file(path)
    model_name, build = find_model(module, name or None)
    ex = getattr(module, "example_inputs", None)
    loss = getattr(module, "loss", None)
    return ModelSource(name=f"{path.stem}:{model_name}" if name else path.stem, build=build,
                       example_inputs=ex if callable(ex) else None,
                       loss=loss if callable(loss) else None, path=path)


def build_model(source: ModelSource, device: str | None = "meta") -> nn.Module:
    """Build the model; on the meta device by default, so that no weight is allocated. Without
    torch._dynamo unless the model asks for it (`graphcalc.dynamo`: torch's initialisers on meta
    tensors would import it)."""
    try:
        if device is None:
            with dynamo_deferred():
                model = source.build()
        else:
            with torch.device(device), dynamo_deferred():
                model = source.build()
    except Exception as e:
        line = _line_in(e.__traceback__, source.path.resolve())
        where = f"{source.path}:{line}" if line else str(source.path)
        raise ModelBuildError(f"{where}: building the model failed: {type(e).__name__}: {e}") from e
    if not isinstance(model, nn.Module):
        raise ModelBuildError(
            f"{source.path}: the factory returned {type(model).__name__}, not an nn.Module")
    return model


# --- --input specs -------------------------------------------------------------------------------

_INPUT_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
                 "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
                 "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
                 "int64": torch.int64, "long": torch.int64, "int32": torch.int32,
                 "int": torch.int64, "bool": torch.bool}


def _dtype_of(text: str, name: str) -> torch.dtype:
    if name.lower() not in _INPUT_DTYPES:
        raise UsageError(f"input '{text}': unknown dtype '{name}' (choose one of "
                         f"{', '.join(_INPUT_DTYPES)})")
    return _INPUT_DTYPES[name.lower()]


@dataclass(frozen=True)
class InputSpec:
    """One input without its batch dimension, e.g. 3x224x224 or 128:int64.

    Nothing before the colon (`:int64`), or a dtype name alone (`int64`), is an input with no
    dimension but the batch: a vector of ids, shape (batch,). A dtype name is never a size, so
    neither form can be read two ways."""

    shape: tuple[int, ...]
    dtype: torch.dtype

    @classmethod
    def parse(cls, text: str) -> "InputSpec":
        text = text.strip()
        if text.lower() in _INPUT_DTYPES:
            text = ":" + text
        dims, colon, dtype_name = text.partition(":")
        if colon and not dims and dtype_name:
            return cls((), _dtype_of(text, dtype_name))
        dtype = torch.float32
        if dtype_name:
            dtype = _dtype_of(text, dtype_name)
        parts = dims.lower().replace(",", "x").split("x") if dims else []
        try:
            shape = tuple(int(p) for p in parts)
        except ValueError:
            shape = ()
        if not shape or any(d < 1 for d in shape):
            raise UsageError(f"input '{text}' does not parse: write sizes without the batch, "
                             "like 3x224x224 or 128:int64, or :int64 for the batch alone")
        return cls(shape, dtype)

    def make(self, batch: int) -> torch.Tensor:
        size = (batch, *self.shape)
        if self.dtype.is_floating_point:
            return torch.randn(size, dtype=self.dtype)
        if self.dtype == torch.bool:
            return torch.ones(size, dtype=torch.bool)
        return torch.zeros(size, dtype=self.dtype)  # token 0 is a valid id for any vocabulary


def inputs_from_specs(specs: list[InputSpec]) -> Callable[[int], Any]:
    def make(batch: int):
        tensors = tuple(s.make(batch) for s in specs)
        return tensors[0] if len(tensors) == 1 else tensors

    return make


# --- torch's global state ------------------------------------------------------------------------

@contextlib.contextmanager
def torch_state_kept():
    """What a model file may change of torch's global state (its default dtype and device, grad
    mode, anomaly mode) given back as it was when the block ends: an analysis leaves the
    process as it found it, so the next analysis in it (a notebook, fit's next batch) starts
    clean."""
    dtype = torch.get_default_dtype()
    device = torch.get_default_device() if hasattr(torch, "get_default_device") else None
    grad = torch.is_grad_enabled()
    anomaly = torch.is_anomaly_enabled()
    try:
        yield
    finally:
        torch.set_default_dtype(dtype)
        if device is not None:
            torch.set_default_device(None if device == torch.device("cpu") else device)
        torch.set_grad_enabled(grad)
        torch.set_anomaly_enabled(anomaly)


# --- the random generators ------------------------------------------------------------------------

@contextlib.contextmanager
def seeded(seed: int = 0):
    """torch's, Python's and NumPy's global generators seeded for the block and given back as
    they were: example inputs drawn with `random` or `np.random` (random lengths, a mask) are the
    same in a prediction and its real measurement, and the caller's own sequence does not move."""
    import random

    numpy = sys.modules.get("numpy")  # only if the caller (or the model file) uses it
    py_state = random.getstate()
    np_state = numpy.random.get_state() if numpy is not None else None
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            random.seed(seed)
            if numpy is not None:
                numpy.random.seed(seed)
            yield
    finally:
        random.setstate(py_state)
        numpy = numpy or sys.modules.get("numpy")
        if np_state is not None:
            numpy.random.set_state(np_state)


# --- lazy modules --------------------------------------------------------------------------------

LAZY_BATCH = 2  # a BatchNorm in training needs more than one sample; eval needs none


def has_lazy(model: nn.Module) -> bool:
    from torch.nn.parameter import is_lazy

    return any(is_lazy(t) for t in itertools.chain(model.parameters(), model.buffers()))


def materialize_lazy(model: nn.Module, make_inputs: Callable[[int], Any]) -> None:
    """Give a model with lazy modules (`nn.LazyLinear`...) its shapes as a training script does:
    one forward on a small batch before the optimizer is made. It runs under no_grad in eval
    mode, on the device the weights are on (meta for an analysis: nothing allocated), so the
    model's state is unchanged but for its lazy shapes."""
    if not has_lazy(model):
        return
    from torch.utils._pytree import tree_map

    first = next(itertools.chain(model.parameters(), model.buffers()))
    device = first.device

    def to_device(x):
        return x.to(device) if isinstance(x, torch.Tensor) else x

    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with seeded(), torch.no_grad():  # the caller's generators untouched
            inputs = tree_map(to_device, make_inputs(LAZY_BATCH))
            if isinstance(inputs, dict):
                model(**inputs)
            elif isinstance(inputs, (tuple, list)):
                model(*inputs)
            else:
                model(inputs)
    except Exception as e:
        raise ModelBuildError(f"the lazy modules could not take their shapes from a forward on "
                              f"the example inputs: {type(e).__name__}: {e}") from e
    finally:
        for m, training in modes.items():
            m.train(training)
    if has_lazy(model):
        raise ModelBuildError("a lazy module was not used by the forward, so its shapes are "
                              "unknown: its parameters are never initialized")
