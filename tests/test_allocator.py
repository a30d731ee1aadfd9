"""The caching allocator simulation (graphcalc.gpu.allocator) on hand-made allocation sequences.

Every expected figure is derived by hand from c10/cuda/CUDACachingAllocator.cpp, whose constants
are kMinBlockSize 512 B, kSmallSize 1 MiB, kSmallBuffer 2 MiB, kMinLargeAlloc 10 MiB,
kLargeBuffer 20 MiB, kRoundLarge 2 MiB; the function each step follows is named beside it.
"""

from __future__ import annotations

import random

import pytest

from graphcalc.gpu.allocator import CachingAllocator, allocation_size, round_size, simulate

K, M = 1024, 1 << 20


def run(ops, **kw):
    """('a', name, bytes) allocates, ('f', name) frees: as LiveStorages' events."""
    serial, size, events = {}, {}, []
    for op in ops:
        if op[0] == "a":
            serial[op[1]] = len(serial)
            size[op[1]] = op[2]
            events.append((serial[op[1]], op[2]))
        else:
            events.append((serial[op[1]], -size[op[1]]))
    return simulate(events, **kw)


def test_constants_round_and_segment_sizes():
    # round_size: below 512 -> 512, else up to a multiple of 512
    assert (round_size(1), round_size(512), round_size(513)) == (512, 512, 1024)
    # get_allocation_size: <= 1 MiB -> 2 MiB; < 10 MiB -> 20 MiB; else up to 2 MiB
    assert allocation_size(1 * M) == 2 * M
    assert allocation_size(1 * M + 512) == 20 * M
    assert allocation_size(10 * M - 512) == 20 * M
    assert allocation_size(10 * M) == 10 * M
    assert allocation_size(11 * M) == 12 * M


def test_two_small_blocks_share_one_2mib_segment():
    # 600 KiB <= kSmallSize: small pool; no cached block -> a 2 MiB segment, split (remainder
    # 2 MiB - 600 KiB >= 512); the second 600 KiB takes the cached 1448 KiB remainder.
    r = run([("a", "x", 600 * K), ("a", "y", 600 * K)])
    assert (r.peak_reserved_bytes, r.segments_at_peak) == (2 * M, 1)
    assert r.peak_allocated_bytes == 1200 * K


def test_a_large_remainder_serves_a_later_request():
    # 3 MiB: large pool, < kMinLargeAlloc -> a 20 MiB segment, split (17 MiB > kSmallSize);
    # 5 MiB fits the cached 17 MiB: still one segment of 20 MiB.
    r = run([("a", "x", 3 * M), ("a", "y", 5 * M)])
    assert (r.peak_reserved_bytes, r.segments_at_peak, r.peak_allocated_bytes) == \
        (20 * M, 1, 8 * M)


def test_11mib_takes_a_12mib_segment_counted_whole_as_allocated():
    # >= kMinLargeAlloc: rounded up to kRoundLarge -> 12 MiB; the 1 MiB left is not
    # > kSmallSize, so no split, and alloc_found_block counts block->size: 12 MiB allocated,
    # as torch.cuda.memory_allocated reports it.
    r = run([("a", "x", 11 * M)])
    assert (r.peak_reserved_bytes, r.peak_allocated_bytes) == (12 * M, 12 * M)


def three_6mib():
    # 6 MiB -> 20 MiB segment [6 | 14 free]; 6 from the 14 -> [6 | 6 | 8]; 6 from the 8 ->
    # [6 | 6 | 6 | 2] (2 MiB > kSmallSize, split)
    return [("a", "a", 6 * M), ("a", "b", 6 * M), ("a", "c", 6 * M)]


def test_fragmentation_free_total_suffices_but_no_block_fits():
    # free a and c: [6 free | 6 | 8 free] (c merged with the 2 MiB after it): 14 MiB free, but
    # best fit for 9 MiB finds no block >= 9 -> a new 20 MiB segment (9 < kMinLargeAlloc).
    r = run(three_6mib() + [("f", "a"), ("f", "c"), ("a", "d", 9 * M)])
    assert (r.peak_reserved_bytes, r.segments_at_peak) == (40 * M, 2)
    assert r.peak_allocated_bytes == 18 * M  # 6 + 6 + 6 before the frees; then 6 + 9


def test_freeing_merges_neighbours_into_one_block():
    # free a, c, then b: b merges with both free neighbours -> one 20 MiB free block, which
    # serves 18 MiB (best fit) with no new segment.
    r = run(three_6mib() + [("f", "a"), ("f", "c"), ("f", "b"), ("a", "d", 18 * M)])
    assert (r.peak_reserved_bytes, r.segment_allocations) == (20 * M, 1)


def test_best_fit_takes_the_smallest_block_that_fits():
    # [6 a | 6 b | 6 c | 2]; free a and c -> free blocks 6 MiB and 8 MiB. 5 MiB takes the
    # 6 MiB one (smallest >= 5; remainder 1 MiB not split); then 7 MiB fits the 8 MiB one.
    a = CachingAllocator()
    x, y, z = (a.malloc(6 * M) for _ in range(3))
    a.free(x)
    a.free(z)
    assert a.malloc(5 * M) == x
    assert a.malloc(7 * M) == z
    assert (a.reserved, a.segments) == (20 * M, 1)


def test_cached_segments_are_returned_when_the_device_is_full():
    # 12 MiB segment, freed (cached: still reserved). 16 MiB finds no block; cudaMalloc of 16
    # would reach 28 MiB > 24 MiB: release_cached_blocks frees the whole cached 12 MiB segment,
    # the retry succeeds. Peak reserved 16 MiB (28 MiB without the limit).
    ops = [("a", "a", 12 * M), ("f", "a"), ("a", "b", 16 * M)]
    assert run(ops).peak_reserved_bytes == 28 * M
    r = run(ops, capacity=24 * M)
    assert (r.peak_reserved_bytes, r.oom, r.released_on_capacity) == (16 * M, False, 1)


def test_out_of_memory_reports_the_shortfall():
    # 12 MiB in use, 16 MiB more: nothing cached to release; 12 + 16 - 24 = 4 MiB short.
    r = run([("a", "a", 12 * M), ("a", "b", 16 * M)], capacity=24 * M)
    assert (r.oom, r.shortfall_bytes, r.first_oom_event) == (True, 4 * M, 2)


def test_a_split_segment_is_not_released():
    # 3 MiB -> [3 in use | 17 free] in one 20 MiB segment. 20 MiB: no cached block fits, a new
    # 20 MiB segment would make 40 > 30 MiB; release_cached_blocks frees only segments with no
    # block in use, so the free 17 MiB stays: OOM, 20 + 20 - 30 = 10 MiB short.
    r = run([("a", "a", 3 * M), ("a", "b", 20 * M)], capacity=30 * M)
    assert (r.oom, r.shortfall_bytes) == (True, 10 * M)


def test_max_split_size_keeps_oversize_blocks_whole():
    # max_split_size 16 MiB: a cached 20 MiB segment is oversize, so a 3 MiB request may not
    # take it (get_free_block) and gets its own 20 MiB segment; a 20 MiB request may (20 <
    # 20 + kLargeBuffer).
    ops = [("a", "a", 20 * M), ("f", "a"), ("a", "b", 3 * M)]
    assert run(ops).peak_reserved_bytes == 20 * M
    assert run(ops, max_split_size=16 * M).peak_reserved_bytes == 40 * M
    ops = [("a", "a", 20 * M), ("f", "a"), ("a", "b", 20 * M)]
    assert run(ops, max_split_size=16 * M).peak_reserved_bytes == 20 * M


def test_expandable_segments_map_pages_at_the_end():
    # expandable: the small pool maps 2 MiB pages, the large pool 20 MiB pages. 600 KiB maps
    # one 2 MiB page; 3 MiB maps one 20 MiB page, split (remainder >= 512 under expandable);
    # 25 MiB: the free 17 MiB tail plus the unmapped space after it has room: 8 MiB more is
    # mapped as one 20 MiB page. Reserved 2 + 40 = 42 MiB, against 2 + 20 + 26 = 48 MiB in
    # segments (25 MiB rounded up to 26, its own segment).
    ops = [("a", "s", 600 * K), ("a", "x", 3 * M), ("a", "y", 25 * M)]
    assert run(ops, expandable_segments=True).peak_reserved_bytes == 42 * M
    assert run(ops).peak_reserved_bytes == 48 * M
    # and the 11 MiB of a 20 MiB page is 11 MiB allocated (split), not 12
    assert run([("a", "x", 11 * M)], expandable_segments=True).peak_allocated_bytes == 11 * M


def test_expandable_segments_unmap_free_pages_when_full():
    # 30 MiB maps two 20 MiB pages; freed, they stay mapped (40 MiB reserved). 600 KiB needs
    # a 2 MiB small page: 42 > 40 -> release_cached_blocks unmaps both free pages, then maps.
    r = run([("a", "x", 30 * M), ("f", "x"), ("a", "s", 600 * K)], capacity=40 * M,
            expandable_segments=True)
    assert (r.peak_reserved_bytes, r.oom) == (40 * M, False)


@pytest.mark.parametrize("expandable", [False, True])
def test_random_streams_keep_the_books(expandable):
    """Invariants over a long random stream: reserved >= allocated >= live bytes; every block
    of a segment tiles it; all freed -> nothing allocated."""
    rng = random.Random(1)
    a = CachingAllocator(expandable_segments=expandable)
    live = {}
    for i in range(4000):
        if live and rng.random() < 0.45:
            key = rng.choice(list(live))
            a.free(live.pop(key)[0])
        else:
            n = 512 * rng.choice([rng.randint(1, 3000), rng.randint(1, 50000)])
            live[i] = (a.malloc(n), n)
        assert a.reserved >= a.allocated >= sum(n for _, n in live.values())
    for key in list(live):
        a.free(live.pop(key)[0])
    assert a.allocated == 0
    for addr, size in a.size.items():  # blocks tile their segment, no overlap
        nxt = a.next[addr]
        assert nxt is None or nxt == addr + size
    assert a.reserved == sum(s for b, s in a.size.items() if b not in a.unmapped_blocks)


def test_small_requests_allocated_equals_the_live_sum():
    # every small request splits its block exactly, so allocated is the sum of live sizes:
    # the tracker's own peak (what the replay reports as the peak).
    rng = random.Random(2)
    events, live, level, peak = [], [], 0, 0
    for s in range(3000):
        if live and rng.random() < 0.5:
            serial, n = live.pop(rng.randrange(len(live)))
            events.append((serial, -n))
            level -= n
        else:
            n = 512 * rng.randint(1, 2048)
            live.append((s, n))
            events.append((s, n))
            level += n
        peak = max(peak, level)
    assert simulate(events).peak_allocated_bytes == peak
