"""`graphcalc.summary(model, ...)`: the figures of `graphcalc analyze`, one call in a notebook.

It runs the same code path as the command line (`analyze.analyze_module`) and returns the same
frozen `Report`, whose `to_dict()` is exactly what `graphcalc analyze --format json` writes.
"""

from __future__ import annotations

import sys
from typing import Any, Sequence

import torch
from torch import nn
from torch.utils._pytree import tree_map

from graphcalc.commands.analyze import analyze_module
from graphcalc.errors import UsageError
from graphcalc.sources.loader import seeded, torch_state_kept
from graphcalc.options import Options
from graphcalc.report import Report


def _shapes(input_size) -> list[tuple[int, ...]]:
    """(1, 28, 28) -> one shape; [(3, 32, 32), (10,)] -> two."""
    if isinstance(input_size, (list, tuple)) and input_size and all(
            isinstance(s, (list, tuple, torch.Size)) for s in input_size):
        shapes = [tuple(s) for s in input_size]
    elif isinstance(input_size, (list, tuple, torch.Size)):
        shapes = [tuple(input_size)]
    else:
        raise UsageError(f"input_size must be a shape like (3, 224, 224) or a list of shapes, "
                         f"got {input_size!r}")
    for s in shapes:
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in s):
            raise UsageError(f"input_size {s} must hold positive whole numbers")
    return shapes


def _batch_dim(batch_dim) -> int:
    if not isinstance(batch_dim, int) or isinstance(batch_dim, bool) or batch_dim < 0:
        raise UsageError(f"batch_dim must be a dimension index, 0 or more, got {batch_dim!r}")
    return batch_dim


def _from_sizes(input_size, dtypes, batch_dim: int = 0) -> Any:
    shapes = _shapes(input_size)
    if isinstance(dtypes, torch.dtype):
        dtypes = [dtypes]
    dtypes = list(dtypes) if dtypes is not None else [torch.float32] * len(shapes)
    if len(dtypes) != len(shapes):
        raise UsageError(f"{len(dtypes)} dtypes given for {len(shapes)} input shapes")
    for d in dtypes:
        if not isinstance(d, torch.dtype):
            raise UsageError(f"dtypes must hold torch dtypes (torch.long...), got {d!r}")
    for s in shapes:
        if batch_dim > len(s):
            raise UsageError(f"batch_dim {batch_dim} is past the end of input_size {s} (the "
                             f"batch goes at position 0 to {len(s)} of the shape)")

    def make(batch: int):
        # the batch dimension inserted at batch_dim: (seq, features) with batch_dim=1 is
        # (seq, batch, features), for sequence-first models
        full = [(*s[:batch_dim], batch, *s[batch_dim:]) for s in shapes]
        tensors = tuple(torch.randn(f, dtype=d) if d.is_floating_point
                        else torch.zeros(f, dtype=d) for f, d in zip(full, dtypes))
        return tensors[0] if len(tensors) == 1 else tensors

    return make


def _from_data(input_data, batch_size: int | None, batch_dim: int = 0) -> tuple[Any, int]:
    tensors = [t for t in (input_data.values() if isinstance(input_data, dict)
                           else input_data if isinstance(input_data, (tuple, list))
                           else [input_data]) if isinstance(t, torch.Tensor)]
    if not tensors:
        raise UsageError("input_data holds no tensor")
    first = tensors[0]
    if first.dim() <= batch_dim:
        raise UsageError(f"batch_dim {batch_dim}: the first tensor of input_data has "
                         f"{first.dim()} dimension(s), shape {tuple(first.shape)}")
    data_batch = first.shape[batch_dim]
    data = input_data if not isinstance(input_data, list) else tuple(input_data)

    def make(batch: int):
        if batch == data_batch:
            # The data itself, values included: a padding mask or lengths the model reads.
            return tree_map(lambda t: t.detach().clone() if isinstance(t, torch.Tensor) else t,
                            data)

        def like(t):
            if not isinstance(t, torch.Tensor):
                return t
            shape = list(t.shape)
            if t.dim() > batch_dim and shape[batch_dim] == data_batch:
                shape[batch_dim] = batch
            if t.is_floating_point():
                return torch.randn(shape, dtype=t.dtype)
            return torch.zeros(shape, dtype=t.dtype)

        return tree_map(like, data)

    return make, data_batch if batch_size is None else batch_size


def _from_module_file(model: nn.Module, name: str):
    module = sys.modules.get(type(model).__module__)
    return getattr(module, name, None) if module is not None else None


def summary(model: nn.Module, input_size=None, *, input_data=None, batch_size: int | None = None,
            dtypes: Sequence[torch.dtype] | None = None, dtype: str = "fp32",
            optim: str = "adam", amp: str | None = None, device: str = "cpu",
            depth: int | None = None, loss=None, name: str | None = None,
            batch_dim: int = 0, checkpoint: Sequence[str] = (),
            verbose: bool = False, gpu: str | None = None, memory=None) -> Report:
    """Analyse `model` as `graphcalc analyze` would, without running it for real.

    model: an nn.Module on any device, the meta device included. It is left as it was: same
        parameters, buffers, device, dtype, train/eval mode and requires_grad flags.
    input_size: a shape without the batch dimension, or a list of shapes (`dtypes=` for integer
        token ids), as torchsummary takes it. Or input_data: a tensor, a tuple of tensors or a dict
        of keyword tensors, analysed as given (values included: a padding mask the model reads)
        at its own batch; `batch_size` resizes dimension `batch_dim` (0, or 1 for sequence-first
        inputs) of the tensors that have the data's batch there, with random values. With
        input_size the batch is inserted at `batch_dim` of each shape. With neither, the
        `example_inputs(batch_size)` of the model's module is used.
    dtype, optim, amp, device, depth: as on the command line. Bad values raise a GraphcalcError
        subclass whose message is the sentence the command line prints.
    gpu, memory: as --gpu and --memory ("a100-80gb", "24GiB" or bytes): the step on that card,
        `report.gpu` (reserved memory, CUDA context, the verdict); either implies device cuda.
    loss: the training loss `loss(output, *inputs)`; by default the module's `loss`, else
        `output.loss`, else the mean of the output.
    checkpoint: module path patterns run under torch.utils.checkpoint, as `--checkpoint`.
    """
    if not isinstance(model, nn.Module):
        raise UsageError(f"model must be an nn.Module, got {type(model).__name__}")
    if input_size is not None and input_data is not None:
        raise UsageError("give input_size or input_data, not both")
    batch_dim = _batch_dim(batch_dim)
    if batch_dim and input_size is None and input_data is None:
        raise UsageError("batch_dim applies to input_size or input_data; the module's "
                         "example_inputs(batch_size) places its batch itself")
    if dtypes is not None and input_size is None:
        raise UsageError("dtypes applies to input_size (input_data carries its own dtypes)")
    if loss is not None and not callable(loss):
        raise UsageError(f"loss must be a function loss(output, *inputs), got {loss!r}")
    if name is not None and not isinstance(name, str):
        raise UsageError(f"name must be a string, got {name!r}")
    if isinstance(checkpoint, str):  # one pattern, not its letters
        checkpoint = (checkpoint,)
    if input_data is not None:
        make_inputs, batch = _from_data(input_data, batch_size, batch_dim)
    elif input_size is not None:
        make_inputs = _from_sizes(input_size, dtypes, batch_dim)
        batch = 1 if batch_size is None else batch_size
    else:
        make_inputs = _from_module_file(model, "example_inputs")
        batch = 1 if batch_size is None else batch_size
        if not callable(make_inputs):
            raise UsageError("give input_size or input_data: the model's module defines no "
                             "example_inputs(batch_size)")
    if depth is not None and (not isinstance(depth, int) or depth < 0):
        raise UsageError(f"depth must be 0 or more, got {depth!r}")
    from graphcalc.units import parse_bytes

    options = Options(batch=batch, dtype=dtype, optimizer=optim, amp=amp, device=device, gpu=gpu,
                      gpu_memory=None if memory is None else parse_bytes(memory),
                      checkpoint=tuple(checkpoint))
    loss_fn = loss if loss is not None else _from_module_file(model, "loss")
    if loss_fn is not None and not callable(loss_fn):
        loss_fn = None
    # the caller's torch, Python and NumPy generators, and torch's global state, left as they were
    with seeded(), torch_state_kept():
        report = analyze_module(model, make_inputs, options, loss_fn=loss_fn,
                                name=name or type(model).__name__).at_depth(depth)
    if verbose:
        print(report)
    return report
