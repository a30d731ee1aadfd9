"""Where a model comes from: a Python file or notebook (`loader`: the model-file contract, the
model built on the meta device, example inputs, loss), a Hugging Face config (`hf`: a hub id or a
local config, random weights, never a download) and a `torch.export` program (`exported`).

May import: the shared modules (graphcalc.errors, units, options, report, ...). No later stage.
"""
