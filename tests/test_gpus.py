"""The GPU table (graphcalc.gpu.gpus): names as people type them and as nvidia-smi prints them, and
the figures that follow from the compute capability (sources in the module docstring)."""

from __future__ import annotations

import pytest

from graphcalc.errors import UsageError
from graphcalc.gpu.gpus import CUDA_CONTEXT_BYTES, CUDA_CONTEXT_RANGE, GPUS, MiB, find_gpu


@pytest.mark.parametrize("name,key", [
    ("A100-80GB", "a100-80gb"), ("a100_80gb", "a100-80gb"), ("NVIDIA A100-SXM4-80GB", "a100-80gb"),
    ("NVIDIA A100 80GB PCIe", "a100-80gb"), ("NVIDIA A100-SXM4-40GB", "a100-40gb"),
    ("RTX 4090", "rtx4090"), ("NVIDIA GeForce RTX 4090", "rtx4090"), ("4090", "rtx4090"),
    ("NVIDIA H100 80GB HBM3", "h100-sxm"), ("NVIDIA H100 PCIe", "h100-pcie"),
    ("NVIDIA H200", "h200"), ("Tesla T4", "t4"), ("Tesla V100-SXM2-16GB", "v100-16gb"),
    ("NVIDIA L4", "l4"), ("NVIDIA A10G", "a10g"), ("NVIDIA L40S", "l40s"),
    ("NVIDIA RTX A6000", "a6000"), ("GeForce RTX 3090", "rtx3090"), ("V100 32GB", "v100-32gb"),
])
def test_names_as_typed_and_as_nvidia_smi_prints_them(name, key):
    assert find_gpu(name).gpu.key == key


def test_a_name_matched_only_in_part_says_how_it_was_read():
    assert find_gpu("NVIDIA A100-SXM4-80GB").note is None  # nvidia-smi's name: exact
    assert find_gpu("l40").gpu.key == "l40s" and "read as the L40S 48GB" in find_gpu("l40").note


def test_h100_alone_is_the_sxm_card_and_says_so():
    r = find_gpu("h100")
    assert r.gpu.key == "h100-sxm"
    assert "h100-pcie" in r.note


@pytest.mark.parametrize("name,listed", [("a100", ("a100-80gb", "a100-40gb")),
                                         ("v100", ("v100-16gb", "v100-32gb"))])
def test_a_name_for_cards_of_different_memory_is_refused_with_the_choices(name, listed):
    with pytest.raises(UsageError) as e:
        find_gpu(name)
    assert all(k in str(e.value) for k in listed)
    assert str(e.value).count(".") <= 1 and "\n" not in str(e.value)


def test_an_unknown_name_lists_close_matches():
    with pytest.raises(UsageError, match="unknown GPU 'h1000'.*h100.*--memory"):
        find_gpu("h1000")
    with pytest.raises(UsageError, match="unknown GPU 'mi300x'"):
        find_gpu("mi300x")


def test_figures_from_the_compute_capability():
    by = {g.key: g for g in GPUS}
    # bf16 and flash attention: sm80 and later; the T4 (sm75) and V100 (sm70) have neither
    assert [k for k, g in by.items() if not g.bf16] == ["t4", "v100-16gb", "v100-32gb"]
    assert by["a100-40gb"].flash_attention and not by["t4"].flash_attention
    assert all(g.mem_efficient_attention for g in GPUS)
    # cuBLAS workspace (CublasHandlePool.cpp parseChosenWorkspaceSize): 4096 KiB x 2 + 16 KiB x 8
    # = 8,519,680 B, 4096 KiB x 8 = 32 MiB on sm90 (H100, H200)
    assert by["a100-80gb"].cublas_workspace_bytes == 8_519_680
    assert by["h100-sxm"].cublas_workspace_bytes == by["h200"].cublas_workspace_bytes == 32 * MiB
    assert by["rtx4090"].cublas_workspace_bytes == 8_519_680  # sm89 is not sm90


def test_memory_is_the_drivers_figure_below_the_marketed_size():
    for g in GPUS:  # never above the nominal size in GiB, never far below it
        assert 0.88 * g.nominal_gb * 10**9 < g.memory_bytes <= g.nominal_gb * 2**30, g.key
    assert find_gpu("a100-40gb").gpu.memory_bytes == 42_298_834_944  # deviceQuery's bytes
    lo, hi = CUDA_CONTEXT_RANGE
    assert lo <= CUDA_CONTEXT_BYTES <= hi


def test_every_name_maps_to_one_card():
    from graphcalc.gpu.gpus import _INDEX, _compact
    for g in GPUS:
        for n in (g.key, g.name, *g.aliases):
            assert _INDEX[_compact(n)] is g, n
