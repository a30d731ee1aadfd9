"""Find ops whose fake kernel allocates differently from the real one: run the same training step
on real tensors and on fake tensors, and compare, op by op, the bytes of every new storage each op
returns.

The replay's peak is exact only if every op's fake outputs occupy what the real kernel's do; a
meta kernel that returns an empty workspace (oneDNN's LSTM) makes the figure silently low. The
two runs execute the same ops in the same order (fake tensors change what kernels compute, not
which ops autograd and the optimizer call), so they are aligned by op name (difflib, which also
reports an op one side ran and the other did not). The fake run applies the corrections the
replay applies (`graphcalc.fake.kernels.real_outputs`) unless `corrected=False`, so with every rule in
place the comparison comes back empty.

Used by tests and by `bench/fake_vs_real.py` over the samples, the HF models and the RNN zoo.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.nn.utils.stateless import _reparametrize_module
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from graphcalc.fake import kernels
from graphcalc.flops import op_name
from graphcalc.options import Options, make_optimizer
from graphcalc.fake.values import KnownValues, _run
from graphcalc.fake.replay import fake_parameters
from graphcalc.fake.step import prepare_inputs, training_step
from graphcalc.fake.tracking import LiveStorages


@dataclass(frozen=True)
class OpRecord:
    op: str
    new_bytes: tuple[int, ...]  # bytes of each storage the op returned that was new, in order
    overload: str = "default"  # the overload that ran (add: Tensor), for a lookup later


@dataclass(frozen=True)
class OpDifference:
    op: str
    index: int  # the op's position in the real run (-1: the fake run alone ran it)
    real: tuple[int, ...] | None  # None: the real run did not run it here
    fake: tuple[int, ...] | None

    @property
    def same_op(self) -> bool:
        """Both runs ran the op here and its storages differ (a kernel that allocates
        differently); False where one run alone ran it (the model took another branch on
        values, e.g. a mask test that fake tensors cannot answer)."""
        return self.real is not None and self.fake is not None

    def __str__(self) -> str:
        def fmt(v):
            return "absent" if v is None else "[" + ", ".join(f"{b:,}" for b in v) + "] B"
        return f"#{self.index} {self.op}: real {fmt(self.real)}, fake {fmt(self.fake)}"


class _OpSizes(TorchDispatchMode):
    """Records every op and the new storages it returns; `correct` mirrors the replay."""

    def __init__(self, correct: bool):
        super().__init__()
        self.correct = correct
        self.tracker = LiveStorages(keep_events=False)
        self.ops: list[OpRecord] = []
        self.phase = "batch"
        self.values = KnownValues()
        self.values.tracker = self.tracker

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.correct:  # the replay's own dispatch: known input values run for real
            out = _run(func, args, kwargs or {}, self.phase, self.values)
        else:
            out = func(*args, **(kwargs or {}))
        name = op_name(func)
        if name.startswith("prim::"):
            return out  # metadata queries (prim::device) that fake tensors alone make
        sizes = None
        if self.correct:
            out, sizes = kernels.real_outputs(func, args, out, kwargs)
        first_new = self.tracker._next
        new: dict[int, int] = {}  # serial -> bytes: a storage returned twice is one storage
        for i, t in enumerate(tree_leaves(out)):
            if isinstance(t, torch.Tensor):
                serial = self.tracker.track(t, sizes.get(i) if sizes else None)
                if serial is not None and serial >= first_new:
                    new[serial] = self.tracker._bytes_of[serial]
        self.ops.append(OpRecord(name, tuple(new.values()),
                                 getattr(func, "_overloadname", "default")))
        return out


def _step(model: nn.Module, inputs, loss_fn, options: Options, params, recorder) -> None:
    recorder.phase = "setup"
    optimizer = make_optimizer(options.optimizer, params)
    with recorder:
        for _ in range(options.steps):
            training_step(model, inputs, loss_fn, optimizer, amp_dtype=options.amp_dtype,
                          device_type="cpu",
                          on_phase=lambda phase: setattr(recorder, "phase", phase))


def record_real(model: nn.Module, make_inputs: Callable[[int], Any], options: Options,
                loss_fn=None) -> list[OpRecord]:
    """The ops of `options.steps` real CPU steps of `model` (built for real)."""
    model = model.to(dtype=options.torch_dtype)
    model.train()
    inputs = prepare_inputs(make_inputs(options.batch), options, "cpu")
    params = [p for p in {id(p): p for p in model.parameters()}.values() if p.requires_grad]
    rec = _OpSizes(correct=False)
    try:
        _step(model, inputs, loss_fn, options, params, rec)
    finally:
        rec.tracker.close()
    return rec.ops


def record_fake(model: nn.Module, make_inputs: Callable[[int], Any], options: Options,
                loss_fn=None, *, corrected: bool = True) -> list[OpRecord]:
    """The same steps on fake CPU tensors, as the replay runs them."""
    rec = _OpSizes(correct=corrected)
    was_training = model.training
    try:
        with FakeTensorMode(allow_non_fake_inputs=True):
            fakes = fake_parameters(model, options.torch_dtype, "cpu")
            with rec:  # the batch as the replay makes it (its known values), not compared
                inputs = prepare_inputs(make_inputs(options.batch), options, "cpu")
            rec.tracker.close()
            rec.tracker = rec.values.tracker = LiveStorages(keep_events=False)
            rec.ops.clear()
            params = list({id(f): f for f in fakes.values() if f.requires_grad}.values())
            model.train()
            with _reparametrize_module(model, fakes):
                _step(model, inputs, loss_fn, options, params, rec)
    finally:
        model.train(was_training)
        rec.tracker.close()
    return rec.ops


def differences(real: list[OpRecord], fake: list[OpRecord]) -> list[OpDifference]:
    """Every op whose new storages differ in number or bytes, and every op one run alone ran."""
    matcher = difflib.SequenceMatcher(None, [r.op for r in real], [f.op for f in fake],
                                      autojunk=False)
    out = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            for i, j in zip(range(i1, i2), range(j1, j2)):
                if real[i].new_bytes != fake[j].new_bytes:
                    out.append(OpDifference(real[i].op, i, real[i].new_bytes, fake[j].new_bytes))
            continue
        out.extend(OpDifference(real[i].op, i, real[i].new_bytes, None) for i in range(i1, i2))
        out.extend(OpDifference(fake[j].op, -1, None, fake[j].new_bytes) for j in range(j1, j2))
    return out


def compare(build: Callable[[], nn.Module], make_inputs: Callable[[int], Any], options: Options,
            loss_fn=None, *, corrected: bool = True, seed: int = 0) -> list[OpDifference]:
    """Build the model twice (`build()`), run the step for real and on fake tensors, and list
    the ops whose returned storages differ."""
    torch.manual_seed(seed)
    real = record_real(build(), make_inputs, options, loss_fn)
    torch.manual_seed(seed)
    fake = record_fake(build(), make_inputs, options, loss_fn, corrected=corrected)
    return differences(real, fake)


def summarize(diffs: list[OpDifference], same_op: bool | None = None) -> dict[str, int]:
    """op -> how many of its calls differ (only those with `same_op` as given, if given)."""
    counts: dict[str, int] = {}
    for d in diffs:
        if same_op is None or d.same_op == same_op:
            counts[d.op] = counts.get(d.op, 0) + 1
    return counts
