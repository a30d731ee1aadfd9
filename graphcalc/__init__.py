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

from graphcalc.version import __version__

# The public API, imported on first use (PEP 562): `import graphcalc` and `graphcalc --version`
# cost nothing of torch's; the first name used pays for the pipeline (torch, fake tensors).
_PUBLIC = {
    "summary": "graphcalc.api",
    "analyze_file": "graphcalc.commands.analyze", "analyze_module": "graphcalc.commands.analyze",
    "measure_step": "graphcalc.commands.measure", "Measured": "graphcalc.commands.measure",
    "Options": "graphcalc.options",
    **{name: "graphcalc.report" for name in ("Report", "Layer", "Totals", "Memory", "Breakdown",
                                             "TimelinePoint")},
    **{name: "graphcalc.errors" for name in (
        "GraphcalcError", "UsageError", "ModelFileError", "ModelNotFoundError", "ModelBuildError",
        "ShapeError", "TraceError", "IncompleteError", "ConfigError", "RenderError",
        "BudgetError", "InternalError")},
}


def __getattr__(name: str):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'graphcalc' has no attribute {name!r}")
    import importlib

    importlib.import_module("graphcalc.output.formatting")  # str(report), its HTML
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "summary", "analyze_file", "analyze_module", "measure_step", "Measured", "Options",
    "Report", "Layer", "Totals", "Memory", "Breakdown", "TimelinePoint",
    "GraphcalcError", "UsageError", "ModelFileError", "ModelNotFoundError", "ModelBuildError",
    "ShapeError", "TraceError", "IncompleteError", "ConfigError", "RenderError", "BudgetError",
    "InternalError", "__version__",
]
