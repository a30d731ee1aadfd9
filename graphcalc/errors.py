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
    └── IncompleteError            --strict and some ops have no FLOP formula (exit 1)

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
