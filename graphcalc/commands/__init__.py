"""The commands built on the pipeline: analyze a model (`analyze`), measure real steps and
compare (`measure`, `measure_distributed`, `verify`, with `fit`), plan activation checkpointing
(`recompute`), check budgets in a process of their own (`budget`, `budget_worker`), export the
step graph (`trace`). The CLI (cli/, graphcalc_cli) is a thin adapter over these.

May import: the shared modules and every stage before it.
"""
