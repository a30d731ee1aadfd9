"""The one exception tree of graphcalc.

    GraphcalcError                 exit 2 unless a subclass says otherwise
    ├── UsageError                 a bad option value (batch, dtype, optimizer, input spec)
    ├── ModelFileError             the model file is missing, not Python, or fails to import
    ├── ModelNotFoundError         no model, or several candidates, in the file
    ├── ModelBuildError            the factory or class raised while building the model
    ├── ShapeError                 the inputs do not fit the model (names the layer)
    ├── TraceError                 the step could not be replayed on fake tensors
    ├── ConfigError                a bad budget config or baseline file (names the key and file)
    ├── RenderError                a picture cannot be made: unknown format, no engine, unwritable
    ├── BudgetError                a budget is exceeded (exit 1)
    ├── IncompleteError            --strict and some ops have no FLOP formula (exit 1)
    └── InternalError              a fault inside graphcalc itself, a bug (exit 3)

Only the command line turns these into exit codes; the library raises them with a message that is
one sentence a user can act on.
"""

from __future__ import annotations


class GraphcalcError(Exception):
    exit_code = 2

    def __init__(self, message: str, *, where: str | None = None):
        super().__init__(message)
        self.message = message
        self.where = where

    def __str__(self) -> str:  # one sentence, as the CLI prints it
        return self.message


class UsageError(GraphcalcError):
    pass


class ModelFileError(GraphcalcError):
    pass


class ModelNotFoundError(GraphcalcError):
    pass


class ModelBuildError(GraphcalcError):
    pass


class ShapeError(GraphcalcError):
    pass


class TraceError(GraphcalcError):
    pass


class ConfigError(GraphcalcError):
    pass


class RenderError(GraphcalcError):
    pass


class BudgetError(GraphcalcError):
    exit_code = 1


class IncompleteError(GraphcalcError):
    exit_code = 1


class InternalError(GraphcalcError):
    """graphcalc's own code failed while it ran the model: not the model's fault, whatever the
    model is (every command reports it so, exit 3)."""

    exit_code = 3


class ModelFault(Exception):
    """Mixed into exceptions graphcalc raises on the model's behalf where a real kernel would
    refuse the step (operands of two dtypes, an index past a table): the model's fault although
    graphcalc's code raised it."""


def model_fault(e: BaseException) -> BaseException:
    e._graphcalc_model_fault = True
    return e


def raised_inside_graphcalc(e: BaseException) -> str | None:
    """Where `e` was raised when that is graphcalc's own code ("graphcalc/fake/replay.py:412"), and
    it is not an error graphcalc raised on the model's behalf; else None."""
    import os

    if getattr(e, "_graphcalc_model_fault", False) or isinstance(e, (GraphcalcError, ModelFault)):
        return None
    tb = e.__traceback__
    if tb is None:
        return None
    while tb.tb_next is not None:
        tb = tb.tb_next
    here = os.path.dirname(os.path.abspath(__file__))
    filename = os.path.abspath(tb.tb_frame.f_code.co_filename)
    if os.path.dirname(filename) == here or filename.startswith(here + os.sep):
        return f"graphcalc/{os.path.relpath(filename, here)}:{tb.tb_lineno}"
    return None
