"""Activation checkpointing: which modules a `--checkpoint` pattern names, the step with them
under `torch.utils.checkpoint.checkpoint(use_reentrant=False)`, and the forward FLOPs that the
checkpoints re-run in backward.

The same wrapping serves the prediction (the replay on fake tensors) and the measurement (a real
step): each matched module's `forward` is replaced, for the duration, by a checkpoint of itself,
as `checkpoint_wrapper` does, without renaming the module paths; it is put back after.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import re
from collections import Counter
from fnmatch import fnmatchcase
from typing import Callable, Iterable

from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from graphcalc.errors import UsageError

USER = "(checkpoint in the model)"  # recompute of a checkpoint the model's own code calls
_RUNNING: list[str] = []  # the checkpointed paths whose forward is running (first run or recompute)


def generalize(path: str) -> str:
    """`h.3.mlp` -> `h.*.mlp`: the pattern of a repeated block's members."""
    return ".".join("*" if part.isdigit() else part for part in path.split("."))


def matches(pattern: str, path: str) -> bool:
    """`*` stands for exactly one name between dots (`h.*` is h.0, h.1 ..., never h.0.mlp)."""
    want, have = pattern.split("."), path.split(".")
    return len(want) == len(have) and all(fnmatchcase(h, w) for w, h in zip(want, have))


def resolve(model: nn.Module, patterns: Iterable[str]) -> tuple[str, ...]:
    """The module paths the patterns name, in the model's order; a pattern that names none is
    one sentence with the closest paths and patterns."""
    paths = [p for p, _ in model.named_modules() if p]
    chosen: set[str] = set()
    for pattern in patterns:
        pattern = pattern.strip()
        hit = [p for p in paths if matches(pattern, p)]
        if not hit:
            raise UsageError(_no_match(pattern, paths))
        chosen.update(hit)
    return tuple(p for p in paths if p in chosen)


def _no_match(pattern: str, paths: list[str]) -> str:
    if not paths:
        return f"--checkpoint '{pattern}' matches no module: the model has no submodules"
    names = list(dict.fromkeys([generalize(p) for p in paths] + paths))
    close = difflib.get_close_matches(pattern, names, n=4, cutoff=0.5)
    if not close:
        close = list(dict.fromkeys(generalize(p) for p in paths if "." not in generalize(p)))[:4]
    return (f"--checkpoint '{pattern}' matches no module path (`*` is one name between dots); "
            f"close: {', '.join(close)}")


@contextlib.contextmanager
def checkpointed(model: nn.Module, paths: Iterable[str]):
    """Run each module at `paths` under `checkpoint(..., use_reentrant=False)` while inside."""
    mods = dict(model.named_modules())
    undo = []
    try:
        for path in paths:
            mod = mods[path]
            own = mod.__dict__.get("forward", _ABSENT)
            mod.forward = _checkpointed_forward(path, mod.forward)
            undo.append((mod, own))
        yield
    finally:
        for mod, own in reversed(undo):
            if own is _ABSENT:
                del mod.forward
            else:
                mod.forward = own


_ABSENT = object()


def _checkpointed_forward(path: str, forward: Callable) -> Callable:
    from torch.utils.checkpoint import checkpoint

    def run(*args, **kwargs):
        _RUNNING.append(path)
        try:
            return forward(*args, **kwargs)
        finally:
            _RUNNING.pop()

    @functools.wraps(forward)
    def checkpointed_forward(*args, **kwargs):
        return checkpoint(run, *args, use_reentrant=False, **kwargs)

    return checkpointed_forward


@contextlib.contextmanager
def recomputing(enter: Callable[[], None], leave: Callable[[], None]):
    """Call `enter` when a non-reentrant checkpoint starts re-running its forward in backward and
    `leave` when it stops. torch.utils.checkpoint re-runs it inside `_recomputation_hook` (its
    `_checkpoint_hook.unpack_hook`, torch 2.13): that class is wrapped while inside. Checkpoints
    the model calls itself are seen too."""
    import torch.utils.checkpoint as ckpt

    base = getattr(ckpt, "_recomputation_hook", None)
    if base is None:  # another torch: the recompute is not told apart (still in backward)
        yield
        return

    class Watched(base):
        def __enter__(self):
            super().__enter__()
            enter()
            return self

        def __exit__(self, *exc):
            leave()
            return super().__exit__(*exc)

    ckpt._recomputation_hook = Watched
    try:
        yield
    finally:
        ckpt._recomputation_hook = base


class RecomputeFlops:
    """The prediction's count: the registry's FLOPs of every op a checkpoint re-runs, by the
    checkpointed path (`USER` for the model's own checkpoint calls), in the replay's first step
    (the one whose FLOPs the report gives)."""

    def __init__(self):
        self.flops: Counter = Counter()
        self._modes: list[TorchDispatchMode] = []

    def reset(self) -> None:
        self.flops.clear()

    def _counting(self) -> bool:
        from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

        from graphcalc.fake.replay import StepRecorder

        return any(isinstance(m, StepRecorder) and m.count_flops
                   for m in _get_current_dispatch_mode_stack())

    def _enter(self) -> None:
        mode = _CostMode(self.flops) if self._counting() else contextlib.nullcontext()
        mode.__enter__()
        self._modes.append(mode)

    def _leave(self) -> None:
        self._modes.pop().__exit__(None, None, None)

    @contextlib.contextmanager
    def watching(self):
        with recomputing(self._enter, self._leave):
            yield self


class _CostMode(TorchDispatchMode):
    def __init__(self, flops: Counter):
        super().__init__()
        self.flops = flops

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        from graphcalc import flops

        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        cost = flops.cost_of(func, args, kwargs, out)
        if cost is not None and cost.macs:
            self.flops[_RUNNING[-1] if _RUNNING else USER] += 2 * cost.macs
        return out


@contextlib.contextmanager
def real_recompute_flops(custom_mapping):
    """The measurement's count: FlopCounterMode (with `custom_mapping`) around each re-run forward
    of a real step; yields a one-element list holding the total so far."""
    from torch.utils.flop_counter import FlopCounterMode

    total = [0]
    counters: list[FlopCounterMode] = []

    def enter():
        c = FlopCounterMode(display=False, custom_mapping=custom_mapping)
        c.__enter__()
        counters.append(c)

    def leave():
        c = counters.pop()
        c.__exit__(None, None, None)
        total[0] += c.get_total_flops()

    with recomputing(enter, leave):
        yield total


# --- the lines that apply a plan ------------------------------------------------------------------

def _regex(pattern: str) -> str:
    """The pattern as a regular expression: `*` one name, or within a name any run of
    characters but a dot; `?` one character; `[0-7]` a character class, as fnmatch reads them."""
    def part(seg: str) -> str:
        if seg == "*":
            return "[^.]+"
        return re.sub(r"\\\*", "[^.]*", re.sub(r"\\\?", "[^.]", re.sub(
            r"\\\[(.*?)\\\]", lambda m: "[" + m.group(1).replace("\\-", "-") + "]",
            re.escape(seg))))

    return r"\.".join(part(seg) for seg in pattern.split("."))


def apply_code(patterns: Iterable[str]) -> str:
    """Python that applies the checkpointing of `patterns` to `model` with torch's own wrapper
    (the modules are picked by path before wrapping, which renames them)."""
    patterns = list(patterns)
    regex = "|".join(_regex(p) for p in patterns)
    return "\n".join([
        "import re",
        "from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (",
        "    apply_activation_checkpointing, checkpoint_wrapper)",
        "",
        f"chosen = re.compile(r\"{regex}\")  # --checkpoint {' --checkpoint '.join(patterns)}",
        "targets = {m for name, m in model.named_modules() if chosen.fullmatch(name)}",
        "apply_activation_checkpointing(model, checkpoint_wrapper_fn=checkpoint_wrapper,",
        "                               check_fn=lambda m: m in targets)",
    ])
