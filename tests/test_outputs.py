"""Outputs never damage a user's files (issue 27): no output over the model file being analysed,
no two outputs at one path, and every file written whole or not at all."""

from __future__ import annotations

import errno
import hashlib
import os

import pytest
from typer.testing import CliRunner

from graphcalc import outputs
from graphcalc.errors import RenderError
from graphcalc_cli.app import app

runner = CliRunner()
MODEL = "from torch import nn\ndef build_model():\n    return nn.Linear(8, 2)\n"


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("args", [
    ["analyze", "{m}", "-o", "{m}"],
    ["analyze", "{m}", "--svg", "{m}"],
    ["analyze", "{m}", "--timeline-svg", "{m}"],
    ["analyze", "{m}", "--snapshot", "{m}"],
    ["trace", "{m}", "-o", "{m}"],
    ["render", "{m}", "-o", "{m}"],
    ["fit", "{m}", "--memory", "1GiB", "--plot", "{m}"],
    ["analyze", "{m}", "--svg", "{d}/a.svg", "--timeline-svg", "{d}/./a.svg"],
    ["analyze", "{m}", "-o", "{d}/a.txt", "--snapshot", "{d}/a.txt"],
])
def test_an_output_never_overwrites_the_model_or_another_output(args, tmp_path):
    m = tmp_path / "net.py"
    m.write_text(MODEL)
    before = _digest(m)
    argv = [a.format(m=m, d=tmp_path) for a in args] + ["--input", "8"]
    result = runner.invoke(app, argv)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert _digest(m) == before
    assert not (tmp_path / "a.svg").exists() and not (tmp_path / "a.txt").exists()


def test_a_failed_write_leaves_the_old_file_whole(tmp_path, monkeypatch):
    target = tmp_path / "report.txt"
    target.write_text("the good report\n")

    def full(fd):  # the disk fills as the data reaches it
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(RenderError, match="No space left"):
        outputs.write_atomic(target, "x" * 100_000)
    monkeypatch.undo()
    assert target.read_text() == "the good report\n"
    assert [p.name for p in tmp_path.iterdir()] == ["report.txt"]  # no temporary left


def test_an_output_is_written_whole_and_keeps_its_mode(tmp_path):
    target = tmp_path / "out.svg"
    target.write_text("old")
    os.chmod(target, 0o640)
    outputs.write_atomic(target, "<svg/>")
    assert target.read_text() == "<svg/>" and (target.stat().st_mode & 0o777) == 0o640
    m = tmp_path / "net.py"
    m.write_text(MODEL)
    result = runner.invoke(app, ["analyze", str(m), "--input", "8", "-o",
                                 str(tmp_path / "r.json"), "-f", "json"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r.json").read_text().startswith("{")
