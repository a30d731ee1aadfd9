"""`graphcalc` on the command line: a thin adapter over the graphcalc library.

The commands live by what they do (analysis: analyze, compare; training: verify, fit; planning:
check, plan; pictures: render, trace); what they share, each option declared once, is in common.
This is the only place where exceptions become exit codes (common._command):
0 ok; 1 a check failed (budget exceeded, --strict with unknown ops, verify over tolerance);
2 bad input (file, model, options, shapes); 3 an internal error (a bug: run with --debug).
"""

from __future__ import annotations

from . import analysis, training, planning, pictures  # noqa: F401,I001 - registers in this order
from .common import _on_sigterm, app

__all__ = ["app", "main"]


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, _on_sigterm)
    app()


if __name__ == "__main__":
    main()
