"""graphcalc: parameters, FLOPs and peak training memory of PyTorch models, statically.

    import graphcalc
    report = graphcalc.summary(model, input_size=(1, 28, 28), batch_size=64, optim="adam")
    report.totals.params, report.memory.peak_bytes, report.memory.breakdown, report.to_dict()
"""

from .analyze import analyze_file, analyze_module
from .api import summary
from . import formatting as _formatting  # noqa: F401 (registers str(report) and its HTML)
from .errors import (BudgetError, ConfigError, GraphcalcError, IncompleteError, InternalError,
                     ModelBuildError, ModelFileError, ModelNotFoundError, RenderError, ShapeError,
                     TraceError, UsageError)
from .measure import Measured, measure_step
from .options import Options
from .report import Breakdown, Layer, Memory, Report, TimelinePoint, Totals

__version__ = "0.1.0"

__all__ = [
    "summary", "analyze_file", "analyze_module", "measure_step", "Measured", "Options",
    "Report", "Layer", "Totals", "Memory", "Breakdown", "TimelinePoint",
    "GraphcalcError", "UsageError", "ModelFileError", "ModelNotFoundError", "ModelBuildError",
    "ShapeError", "TraceError", "IncompleteError", "ConfigError", "RenderError", "BudgetError",
    "InternalError", "__version__",
]
