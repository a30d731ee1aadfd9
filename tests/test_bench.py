"""The accuracy benchmark runs here as it would on a GPU machine (`--device cuda` there)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from conftest import ROOT


def test_accuracy_bench_on_cpu(tmp_path):
    out = tmp_path / "acc.md"
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "accuracy.py"), "--quick",
                          "--only", "seed_cnn", "--only", "mnist", "--out", str(out)],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    text = out.read_text()
    assert "| seed_cnn | adam | fp32 |" in text
    assert "under-estimates 0" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when CUDA is absent")
def test_accuracy_bench_refuses_cuda_without_a_gpu(tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "accuracy.py"), "--device", "cuda",
                          "--out", str(tmp_path / "x.md")],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert run.returncode == 2
    assert "CUDA is not available" in run.stderr
