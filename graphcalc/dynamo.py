"""torch._dynamo, paid only where it is used.

Fake tensors import `torch._dynamo.config` when a FakeTensorMode is made; every function torch
marks `torch._disable_dynamo` (the fake tensors' dispatch, the optimizers' `step` and
`zero_grad`) imports `torch._dynamo` on its first call to wrap itself in `torch._dynamo.disable`;
the optimizers' `step` calls `torch._dynamo.graph_break()`; making a fake tensor of a real one
imports `torch._dynamo.source` for the names it gives the tensor and its parts (guards and
symbolic shapes read them; a replay has neither). Importing the package runs all of dynamo (its
bytecode tracer, the symbolic shapes): about 1.2 s, as much again as `import torch`, for a few
flags, a wrapper that with no compilation running only calls the function, a function that
does nothing outside one, and four small dataclasses.

`dynamo_deferred()` stands in for the package while a model is built and a step replayed:
`torch._dynamo.config` is the real module (light: torch's config machinery); `disable(fn)` gives
`fn` back and remembers it; `graph_break()` does nothing, as torch's outside a compilation;
`torch._dynamo.source` holds `ConstantSource`, `AttrSource`, `EphemeralSource` and
`RandomValueSource` as dataclasses of the same fields on torch's own `Source` (`torch._guards`,
loaded with torch). Anything else asked of them (a model that calls `torch.compile` or
`torch._dynamo.is_compiling`, a submodule) loads the real package at that moment, as a plain
import would have, outside the replay's dispatch modes and the build's meta device (its
import-time tensors are neither the step's nor meta), and forgets the functions it had handed
back unwrapped, so that each wraps itself on its next call. At the end the stand-in is taken out
the same way: the process is left as if dynamo had never been touched, or with the real package
where something loaded it. Where dynamo is loaded already, or this torch's `Source` is not what
the stand-ins extend, nothing is stood in for.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import inspect
import sys
import types

import torch
from torch.utils._python_dispatch import _disable_current_modes

_NAME = "torch._dynamo"
_SOURCE = _NAME + ".source"
_MARK = "__dynamo_disable"  # where torch._compile._disable_dynamo caches the wrapped function


class _Standin(types.ModuleType):
    """`torch._dynamo` while it is deferred: `config` and `disable`; the rest loads the package."""

    def __init__(self, path: list[str]):
        super().__init__(_NAME)
        self.__path__ = path
        self.__package__ = _NAME
        self.handed_back: list = []
        self.real: types.ModuleType | None = None

    def disable(self, fn=None, recursive=True, *, reason=None, wrapping=True):
        if fn is None:
            return lambda f: self.disable(f, recursive, reason=reason, wrapping=wrapping)
        self.handed_back.append(fn)
        return fn

    @staticmethod
    def graph_break(msg: str = "") -> None:
        """Outside a compilation, as torch's: nothing (the optimizers' `step` calls it)."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.load(), name)

    def load(self) -> types.ModuleType:
        """The real package, in the stand-in's place from now on."""
        if self.real is None:
            self.withdraw()
            with torch._C.DisableTorchFunction(), _disable_current_modes():
                self.real = importlib.import_module(_NAME)
            torch._dynamo = self.real
        return self.real

    def withdraw(self):
        self.forget()
        for name in (_NAME, _SOURCE):
            if isinstance(sys.modules.get(name), (_Standin, _SourceStandin)):
                del sys.modules[name]

    def forget(self):
        for fn in self.handed_back:
            if getattr(fn, "__dict__", {}).get(_MARK) is fn:
                del fn.__dict__[_MARK]
        self.handed_back.clear()


def _source_classes() -> dict[str, type] | None:
    """The four classes `torch._dynamo.source` is asked for while it is deferred; None where this
    torch's `Source` is not the frozen dataclass they extend (the package is then imported as
    before)."""
    try:
        from torch._guards import ChainedSource, Source

        frozen = dataclasses.dataclass(frozen=True)

        @frozen
        class ConstantSource(Source):
            source_name: str

            @property
            def _name_template(self) -> str:
                return self.source_name

        @frozen
        class AttrSource(ChainedSource):
            member: str

            @property
            def _name_template(self) -> str:
                return "{0}." + self.member

        @frozen
        class EphemeralSource(Source):
            desc: str | None = None

            @property
            def _name_template(self) -> str:
                return f"<ephemeral{': ' + self.desc if self.desc is not None else ''}>"

            def is_ephemeral(self) -> bool:
                return True

        @frozen
        class RandomValueSource(Source):
            random_call_index: int

            @property
            def _name_template(self) -> str:
                return f"random_value_{self.random_call_index}"
    except (ImportError, TypeError, AttributeError):
        return None
    classes = (ConstantSource, AttrSource, EphemeralSource, RandomValueSource)
    if callable(inspect.getattr_static(Source, "name", None)):
        # an older torch's `Source.name()` is a method (torch 2.13's a cached property that
        # reads `_name_template`)
        for c in classes:
            c.name = (lambda self: self._name_template.format(self.base.name())) \
                if issubclass(c, ChainedSource) else (lambda self: self._name_template)
    return {c.__name__: c for c in classes}


_SOURCES = _source_classes()


class _SourceStandin(types.ModuleType):
    """`torch._dynamo.source` while the package is deferred: what fake tensors import from it
    whatever the tensor (`FakeTensorConverter.from_real_tensor`); the rest loads the package."""

    def __init__(self, package: _Standin):
        super().__init__(_SOURCE)
        self.package = package
        self.__dict__.update(_SOURCES)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        self.package.load()
        return getattr(importlib.import_module(_SOURCE), name)


@contextlib.contextmanager
def dynamo_deferred():
    """See the module. A no-op where torch._dynamo is loaded already (or is being loaded), or
    where this torch keeps it elsewhere than a package beside `torch`."""
    if _NAME in sys.modules or _SOURCES is None:
        yield
        return
    spec = importlib.util.find_spec(_NAME)
    if spec is None or not spec.submodule_search_locations:
        yield
        return
    standin = _Standin(list(spec.submodule_search_locations))
    had = "_dynamo" in torch.__dict__
    sys.modules[_NAME] = standin
    sys.modules[_SOURCE] = standin.source = _SourceStandin(standin)
    torch._dynamo = standin
    try:
        # set by hand: where a deferral before this one imported it, the import binds nothing
        standin.config = importlib.import_module(_NAME + ".config")
        yield
    finally:
        if standin.real is None:
            standin.withdraw()
            if torch.__dict__.get("_dynamo") is standin and not had:
                del torch._dynamo
