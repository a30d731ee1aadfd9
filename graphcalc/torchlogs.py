"""Keep torch's own error logs out of the user's terminal while graphcalc replays a step.

When a fake-tensor kernel fails (inputs that do not fit the model), torch logs the error with its
whole traceback (`log.exception` in `torch._subclasses.fake_tensor`, about 80 lines per failing
op) before raising it. graphcalc catches that exception and says it in one sentence naming the
layer, so the log is noise printed before the answer. Around the replay those records are
dropped: only the ones that carry a traceback (torch re-raises their exception, which graphcalc
explains), only on the loggers named here, and the filter is removed afterwards. Everything else
torch logs (`TORCH_LOGS=...`) still gets through. `show(True)` (the CLI's `--debug`) keeps them.
"""

from __future__ import annotations

import contextlib
import functools
import logging

LOGGERS = ("torch._subclasses.fake_tensor",)

_shown = False


def show(on: bool = True) -> None:
    """Let torch's error logs through during replays (for debugging graphcalc or a model)."""
    global _shown
    _shown = on


@contextlib.contextmanager
def quiet():
    """Drop the traceback-carrying records of `LOGGERS` for the duration of the block."""
    if _shown:
        yield
        return
    loggers = [logging.getLogger(name) for name in LOGGERS]

    def without_traceback(record: logging.LogRecord) -> bool:  # one per block: nesting is safe
        return record.exc_info is None

    for logger in loggers:
        logger.addFilter(without_traceback)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(without_traceback)


def quietly(fn):
    """`fn` run inside `quiet()`."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        with quiet():
            return fn(*args, **kwargs)

    return run
