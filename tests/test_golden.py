"""Nothing moved: every sample's and zoo model's JSON report, on the CPU and as on CUDA, fp32 and
bf16 autocast, SGD and Adam, is the same bytes as before the redesign (issue 29).

`tests/data/golden.json` holds, per model and combination, the SHA-256 of the bytes
`graphcalc analyze MODEL --batch 2 ... -f json` printed (or of its one-line error and exit code)
and the headline figures, so that a difference says which figure moved. It was written from the
tree before any module moved, with

    .venv/bin/python tests/test_golden.py --write tests/data/golden.json

and a test compares the present tree's bytes with it.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "data" / "golden.json"
MODELS = sorted(list((ROOT / "samples").glob("*.py"))
                + list((ROOT / "tests" / "zoo").glob("*.py")), key=lambda p: p.name)
APP_MODULE = "graphcalc_cli.app"
COMBOS = [(device, amp, optim) for device in ("cpu", "cuda") for amp in ("fp32", "bf16")
          for optim in ("sgd", "adam")]


def _key(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def _figures(model: Path, device: str, amp: str, optim: str) -> dict:
    """The bytes analyze prints for one combination, hashed, with its headline figures."""
    from typer.testing import CliRunner

    if APP_MODULE == "cli.app":  # --write from a checkout: that checkout's CLI
        from cli.app import app
    else:
        from graphcalc_cli.app import app

    args = ["analyze", str(model), "--batch", "2", "--device", device, "--optim", optim,
            "-f", "json"] + (["--amp", "bf16"] if amp == "bf16" else [])
    result = CliRunner().invoke(app, args)
    text = result.stdout if result.exit_code == 0 else result.output
    # the model's path is in the report: the same bytes wherever the tree is checked out
    text = text.replace(str(ROOT), "<root>")
    out = {"exit": result.exit_code, "sha256": hashlib.sha256(text.encode()).hexdigest()}
    if result.exit_code == 0:
        d = json.loads(text)
        out |= {"peak_bytes": d["memory"]["peak_bytes"], "flops": d["totals"]["flops_forward"] + d["totals"]["flops_backward"],
                "params": d["totals"]["params"]}
    else:
        out["error"] = text.strip()[:300]
    return out


def _combo_name(device: str, amp: str, optim: str) -> str:
    return f"{device}-{amp}-{optim}"


def model_figures(model: Path) -> dict:
    return {_combo_name(*c): _figures(model, *c) for c in COMBOS}


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS, ids=_key)
def test_every_report_is_the_same_bytes_as_before_the_redesign(model):
    golden = json.loads(GOLDEN.read_text())
    assert _key(model) in golden, f"{_key(model)} has no golden report: write them again"
    before, now = golden[_key(model)], model_figures(model)
    moved = {c: (before[c], now[c]) for c in before if before[c] != now[c]}
    assert not moved, "\n".join(f"{c}: before {b}, now {a}" for c, (b, a) in moved.items())


def test_an_analysis_gives_the_same_bytes_whatever_ran_before_it_in_the_process():
    # bf16 autocast's cast cache is a hash map by address: the casts it held died in a
    # different order each run, and the stacked timeline's points between two of those frees
    # moved by a few hundred bytes from one run to the next (the tracker now orders each run of
    # frees between two ops by serial)
    model = ROOT / "samples" / "seed_cnn.py"
    first = _figures(model, "cpu", "bf16", "sgd")
    _figures(ROOT / "samples" / "mnist_mlp.py", "cpu", "bf16", "adam")
    assert _figures(model, "cpu", "bf16", "sgd") == first
    assert _figures(model, "cpu", "bf16", "sgd") == first


def test_the_golden_file_covers_every_model_and_combination():
    golden = json.loads(GOLDEN.read_text())
    assert set(golden) == {_key(m) for m in MODELS}
    for figures in golden.values():
        assert set(figures) == {_combo_name(*c) for c in COMBOS}
        assert all(len(f["sha256"]) == 64 for f in figures.values())


if __name__ == "__main__":  # python tests/test_golden.py --write PATH
    if len(sys.argv) != 3 or sys.argv[1] != "--write":
        sys.exit("usage: python tests/test_golden.py --write PATH")
    sys.path.insert(0, str(ROOT))
    APP_MODULE = "cli.app"
    written = {}
    for m in MODELS:
        written[_key(m)] = model_figures(m)
        print(_key(m), {c: f.get("peak_bytes", f["exit"]) for c, f in written[_key(m)].items()},
              flush=True)
    Path(sys.argv[2]).write_text(json.dumps(written, indent=1, sort_keys=True) + "\n")
