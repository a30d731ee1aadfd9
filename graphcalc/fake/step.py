"""The training step itself, the same for the replay on fake tensors and a real run
(graphcalc.commands.measure): the example batch, the forward, the loss (the model file's
`loss()`, the model's own `output.loss`, or the output's mean) and the step that runs them.
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Any, Callable

import torch
from torch import nn
from torch.utils._pytree import tree_leaves, tree_map

from graphcalc.errors import ModelFault, model_fault
from graphcalc.options import Options

# --- the step ------------------------------------------------------------------------------------

def call_model(model: nn.Module, inputs):
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


LOSS_GIVEN = "loss()"  # the model file's loss(output, *inputs) (or summary's loss=)
LOSS_OWN = "output.loss"  # the model computes its own (Hugging Face with labels)
LOSS_MEAN = "output.mean()"  # neither: the mean of the first floating-point output


def default_loss(output, *args, **kwargs) -> torch.Tensor:
    return _default_loss(output)[0]


def _default_loss(output) -> tuple[torch.Tensor, str]:
    loss = getattr(output, "loss", None)
    if loss is None and isinstance(output, dict):
        loss = output.get("loss")
    if isinstance(loss, torch.Tensor):
        return loss, LOSS_OWN
    for t in tree_leaves(output):
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            return t.mean(), LOSS_MEAN
    raise model_fault(TypeError("the model's output holds no floating-point tensor to take a "
                                "loss of"))


class LossCallError(TypeError, ModelFault):
    """The model file's loss() cannot take the batch as the step passes it."""


def compute_loss(loss_fn, output, inputs, kind: list | None = None) -> torch.Tensor:
    """The step's loss: `loss_fn(output, *inputs)` (keywords for a dict batch), else the
    output's own `loss`, else its mean; `kind` (a list) is told which it was."""
    if loss_fn is None:
        loss, how = _default_loss(output)
        if kind is not None:
            kind.append(how)
        return loss
    if kind is not None:
        kind.append(LOSS_GIVEN)
    args, kwargs = ((output,), dict(inputs)) if isinstance(inputs, dict) else \
        ((output, *inputs), {}) if isinstance(inputs, (tuple, list)) else ((output, inputs), {})
    try:
        inspect.signature(loss_fn).bind(*args, **kwargs)
    except TypeError as e:
        passed = ("output, " + ", ".join(f"{k}=" for k in kwargs)) if kwargs else \
            f"output and {len(args) - 1} input(s)"
        raise LossCallError(f"loss() cannot take what the step passes it ({passed}): {e}") \
            from None
    except ValueError:  # a builtin without a signature: call it and see
        pass
    return loss_fn(*args, **kwargs)


def training_step(model, inputs, loss_fn, optimizer, *, amp_dtype=None, device_type="cpu",
                  on_phase: Callable[[str], None] = lambda phase: None,
                  loss_kind: list | None = None) -> None:
    """One step as the tutorials write it; `output` and `loss` live until the step returns."""
    optimizer.zero_grad(set_to_none=True)
    autocast = (torch.autocast(device_type, dtype=amp_dtype) if amp_dtype is not None
                else contextlib.nullcontext())
    on_phase("forward")
    with autocast:
        output = call_model(model, inputs)
        on_phase("loss")
        loss = compute_loss(loss_fn, output, inputs, loss_kind)
    on_phase("backward")
    loss.backward()
    on_phase("optimizer")
    optimizer.step()
    on_phase("end")


def example_batch(make_inputs: Callable[[int], Any], batch: int):
    """`make_inputs(batch)` drawn from a fixed seed, leaving the caller's random state alone: the
    prediction and a real measurement see the same values (random lengths, a random mask)."""
    from graphcalc.sources.loader import seeded

    with seeded(0):
        return make_inputs(batch)


def prepare_inputs(inputs, options: Options, device) -> Any:
    """The batch on `device`; floating inputs follow the model's dtype, as users of
    `model.to(dtype)` cast their batch (under autocast they stay fp32)."""
    seen = set()

    def prepare(t):
        if not isinstance(t, torch.Tensor):
            return t
        if options.amp is None and t.is_floating_point():
            t = t.to(options.torch_dtype)
        # one CPU tensor twice in the batch ({"input_ids": ids, "labels": ids}): each .to('cuda')
        # makes its own copy on the GPU
        again = id(t) in seen
        seen.add(id(t))
        return t.to(device, copy=again and options.device == "cuda")

    return tree_map(prepare, inputs)
