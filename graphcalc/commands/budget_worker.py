"""One budget's analysis in a process of its own: `python -m graphcalc.commands.budget_worker CONFIG INDEX
RESULT`.

`graphcalc check` runs in CI and pre-commit, where nobody reads the output: the model code it
analyses must not decide its exit code or leak into the next budget. So each budget is analysed
here, in a fresh interpreter (torch's global state, the default dtype among it, as a new process
has it), and the figures come back through the RESULT file, written last and atomically. A model
that calls `sys.exit`, raises a BaseException, calls `os._exit` or is killed by a signal leaves no
result, or an error result: the parent (graphcalc.commands.budget.measure) fails that budget, visibly. The
model's prints go to this process's stdout, which the parent hands to its own stderr.

The result also lists the files the analysis really imported from the project (every module in
`sys.modules` afterwards whose file lies under the config's folder or the model's, outside the
interpreter's own prefixes): what the cache keys on and what pre-commit selects by, beyond the
imports `ast` can see (a `src/` layout, an import by name).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def _imported(folders: list[Path]) -> list[str]:
    skip = {Path(p).resolve() for p in {sys.prefix, sys.base_prefix, sys.exec_prefix}}
    skip.add(Path(__file__).resolve().parents[1])  # graphcalc itself
    found = set()
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if not file:
            continue
        try:
            path = Path(file).resolve()
        except (OSError, RuntimeError):
            continue
        if path.suffix != ".py" or any(s in path.parents for s in skip):
            continue
        if any(f in path.parents for f in folders):
            found.add(str(path))
    return sorted(found)


def _write(result: Path, payload: dict) -> None:
    tmp = result.with_name(result.name + ".tmp")
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, result)


def main(argv: list[str]) -> int:
    config_path, index, result = Path(argv[0]), int(argv[1]), Path(argv[2])
    try:
        from graphcalc.commands.budget import analyse, load_config
        from graphcalc.errors import GraphcalcError

        config = load_config(config_path)
        budget = config.budgets[index - 1]  # Budget.index counts from 1, as the messages do
        try:
            figures = analyse(budget)
        except GraphcalcError as e:
            _write(result, {"ok": False, "error": str(e), "error_type": type(e).__name__})
            return 0
        files = _imported([config.folder.resolve(), budget.model_path.parent.resolve()])
        _write(result, {"ok": True, "figures": figures.to_dict(), "files": files})
        return 0
    except SystemExit as e:
        _write(result, {"ok": False, "error_type": "ModelBuildError",
                        "error": f"the model called sys.exit({e.code!r}) while graphcalc analysed "
                                 "it: no figures"})
        return 0
    except BaseException as e:  # noqa: BLE001 - the model's, reported as such
        _write(result, {"ok": False, "error_type": "ModelBuildError",
                        "error": f"the model raised {type(e).__name__}: {e}; no figures"})
        return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip interpreter finalization: the result is on disk
