"""graphcalc: parameters, FLOPs and peak training memory of PyTorch models, statically.

    import graphcalc
    report = graphcalc.summary(model, input_size=(1, 28, 28), batch_size=64, optim="adam")
    report.totals.params, report.memory.peak_bytes, report.memory.breakdown, report.to_dict()

The package is laid out as the pipeline (docs/architecture.md): graphcalc.sources (where a model
comes from), graphcalc.flops (FLOP formulas), graphcalc.gpu (cards, CUDA, the caching
allocator), graphcalc.fake (the replay on fake tensors and the step graph it records),
graphcalc.passes (every figure, a pass over that graph), graphcalc.ranks (data-parallel ranks),
graphcalc.output (tables, JSON, pictures), graphcalc.commands (analyze, verify, fit, plan
checkpointing, budgets, trace); errors, units, options, report and routing are shared by all.
"""

from graphcalc.api import summary
from graphcalc.commands.analyze import analyze_file, analyze_module
from graphcalc.commands.measure import Measured, measure_step
from graphcalc.errors import (BudgetError, ConfigError, GraphcalcError, IncompleteError,
                              InternalError, ModelBuildError, ModelFileError, ModelNotFoundError,
                              RenderError, ShapeError, TraceError, UsageError)
from graphcalc.options import Options
from graphcalc.output import formatting as _formatting  # noqa: F401 (str(report), its HTML)
from graphcalc.report import Breakdown, Layer, Memory, Report, TimelinePoint, Totals
from graphcalc.version import __version__

__all__ = [
    "summary", "analyze_file", "analyze_module", "measure_step", "Measured", "Options",
    "Report", "Layer", "Totals", "Memory", "Breakdown", "TimelinePoint",
    "GraphcalcError", "UsageError", "ModelFileError", "ModelNotFoundError", "ModelBuildError",
    "ShapeError", "TraceError", "IncompleteError", "ConfigError", "RenderError", "BudgetError",
    "InternalError", "__version__",
]
