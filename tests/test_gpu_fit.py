"""The verdict (graphcalc.gpu.gpu_fit) on hand-made allocation streams: reserved + CUDA context
against the card, with the allocator returning its cache when a cudaMalloc would pass it."""

from __future__ import annotations

from graphcalc.gpu.gpu_fit import gpu_fit, gpu_fit_unsimulated
from graphcalc.gpu.gpus import CUDA_CONTEXT_BYTES
from graphcalc.options import Options

M = 1 << 20
# 12 MiB (a 12 MiB segment), freed and cached; then 16 MiB: no cached block fits, a new 16 MiB
# segment (CUDACachingAllocator.cpp get_allocation_size: >= 10 MiB rounds to 2 MiB).
EVENTS = [(0, 12 * M), (0, -12 * M), (1, 16 * M)]
# what the verdict keeps free for the replay's error: 2% of the allocated peak (16 MiB), in
# 512-byte blocks
MARGIN = -(-int(16 * M * 0.02) // 512) * 512


def verdict(card_bytes):
    return gpu_fit(EVENTS, [], Options(gpu_memory=card_bytes))


def test_fits_with_the_headroom():
    g = verdict(CUDA_CONTEXT_BYTES + 40 * M)  # 12 + 16 = 28 MiB reserved, no limit reached
    assert (g.fits, g.peak_reserved_bytes, g.released_cache) == (True, 28 * M, False)
    assert g.device_total_bytes == 28 * M + CUDA_CONTEXT_BYTES
    assert g.headroom_bytes == 12 * M - MARGIN and g.required_bytes == g.device_total_bytes
    assert g.estimate_margin_bytes == MARGIN


def test_fits_only_after_the_cache_is_returned():
    # 24 MiB for the allocator (less the margin): the 16 MiB cudaMalloc would make 28 MiB, so
    # the cached 12 MiB segment is freed first (release_cached_blocks): 16 MiB reserved, 8 MiB
    # less the margin to spare
    g = verdict(CUDA_CONTEXT_BYTES + 24 * M)
    assert (g.fits, g.released_cache, g.peak_reserved_bytes) == (True, True, 16 * M)
    assert g.headroom_bytes == 8 * M - MARGIN


def test_the_margin_is_judged():
    # 16 MiB and a little for the allocator: enough for the step, not for the margin
    assert verdict(CUDA_CONTEXT_BYTES + 16 * M + MARGIN).fits
    assert not verdict(CUDA_CONTEXT_BYTES + 16 * M + MARGIN - 512).fits


def test_does_not_fit_short_by_what_the_failing_allocation_lacked():
    # 12 MiB for the allocator, less the margin: after the cache is returned the 16 MiB segment
    # lacks 4 MiB and the margin
    g = verdict(CUDA_CONTEXT_BYTES + 12 * M)
    assert (g.fits, g.short_by_bytes) == (False, 4 * M + MARGIN)
    assert g.required_bytes == g.capacity_bytes + 4 * M + MARGIN
    assert g.device_total_bytes == 28 * M + CUDA_CONTEXT_BYTES  # what it takes with no limit


def test_no_card_no_verdict():
    g = gpu_fit(EVENTS, [], Options(device="cuda"))
    assert (g.fits, g.capacity_bytes, g.headroom_bytes, g.gpu) == (None, None, None, None)
    assert g.peak_reserved_bytes == 28 * M


def test_a_named_card_brings_its_memory_and_workspace():
    g = gpu_fit(EVENTS, [], Options(gpu="h200"))
    assert (g.gpu, g.compute_capability, g.cublas_workspace_bytes) == ("H200 141GB", "sm90",
                                                                        32 * M)
    assert g.capacity_bytes == 143156 * M and g.fits


def test_a_sharded_rank_is_judged_on_its_peak_allocated():
    g = gpu_fit_unsimulated(10 * M, Options(gpu_memory=CUDA_CONTEXT_BYTES + 8 * M))
    assert (g.reserved_simulated, g.fits, g.short_by_bytes) == (False, False, 2 * M)


def test_bf16_on_a_card_without_it_is_a_caveat():
    assert gpu_fit(EVENTS, [], Options(gpu="t4", amp="bf16")).caveats
    assert "no native bf16" in gpu_fit(EVENTS, [], Options(gpu="v100-16gb", dtype="bf16")).caveats[0]
    assert not gpu_fit(EVENTS, [], Options(gpu="a10g", amp="bf16")).caveats
