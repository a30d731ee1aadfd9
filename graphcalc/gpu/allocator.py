"""PyTorch's CUDA caching allocator, simulated over a replay's allocations and frees.

What decides an out-of-memory on a GPU is what the allocator has *reserved* (cudaMalloc'd
segments, cached when their tensors die), not what is allocated. This module replays the stream
of allocations and frees (`tracking.LiveStorages.events`) through the rules of
c10/cuda/CUDACachingAllocator.cpp (DeviceCachingAllocator; read at pytorch/pytorch main, 2025,
the same in torch 2.4-2.13 for everything used here):

- `round_size`: every request is rounded up to a multiple of kMinBlockSize = 512 B (the
  roundup_power2_divisions option is off by default).
- `get_pool`: requests <= kSmallSize = 1 MiB go to the small pool, the rest to the large pool.
- `get_free_block`: the smallest cached free block of the pool that is at least the request,
  the lowest address among equal sizes (std::set ordered by (stream, size, ptr), lower_bound).
  With max_split_size set, a request below it never takes a block at or above it, and a request
  at or above it takes a block only if the block is less than request + kLargeBuffer.
- `get_allocation_size`: when nothing fits, a new segment: kSmallBuffer = 2 MiB for a small
  request, kLargeBuffer = 20 MiB for one under kMinLargeAlloc = 10 MiB, else the request rounded
  up to kRoundLarge = 2 MiB.
- `should_split`: the block is split and its remainder cached when the remainder is >= 512 B
  (small pool, or expandable segments), else when the remainder is > kSmallSize and the request
  is under max_split_size (large pool).
- `free_block` / `try_merge_blocks`: a freed block merges with its free neighbours of the same
  segment; the segment stays reserved.
- `malloc`: on a cudaMalloc past the device's capacity, first `release_available_cached_blocks`
  (only with max_split_size: free oversize cached segments), then `release_cached_blocks`
  (cudaFree every cached segment that is wholly free) and retry; if that fails too, OOM.
- expandable_segments (`PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True`): one segment per pool
  whose virtual address space covers 1 1/8 of the device; physical pages are mapped as needed,
  2 MiB pages for the small pool and 20 MiB for the large (`find_expandable_block`,
  `map_block`, `try_allocate_expandable_block`), at the lowest address with room; reserved is
  the mapped pages. On a capacity failure, free pages are unmapped (`unmap_block`).

Not modelled: streams other than the default one (record_stream, NCCL's stream), CUDA graphs'
private pools, garbage_collection_threshold, roundup_power2_divisions, and the real addresses
cudaMalloc returns (segments here get increasing addresses, which only orders equal-size blocks).
A storage resized in place (`resize_`, FSDP) is a new allocation then a free of the old one,
as `resize_bytes_cuda` does.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from dataclasses import dataclass
from typing import Iterable

K_MIN_BLOCK = 512
K_SMALL_SIZE = 1 << 20
K_SMALL_BUFFER = 2 << 20
K_LARGE_BUFFER = 20 << 20
K_MIN_LARGE_ALLOC = 10 << 20
K_ROUND_LARGE = 2 << 20


def round_size(size: int) -> int:
    if size < K_MIN_BLOCK:
        return K_MIN_BLOCK
    return -(-size // K_MIN_BLOCK) * K_MIN_BLOCK


def allocation_size(size: int) -> int:
    """The segment cudaMalloc'd for a request that no cached block serves."""
    if size <= K_SMALL_SIZE:
        return K_SMALL_BUFFER
    if size < K_MIN_LARGE_ALLOC:
        return K_LARGE_BUFFER
    return -(-size // K_ROUND_LARGE) * K_ROUND_LARGE


@dataclass(frozen=True)
class AllocatorResult:
    peak_reserved_bytes: int
    peak_allocated_bytes: int
    peak_reserved_event: int  # events consumed when reserved first reached its peak
    segments_at_peak: int  # segments (cudaMalloc'd, or expandable) held at that moment
    segment_allocations: int  # cudaMalloc calls (or page mappings) over the run
    expandable_segments: bool
    capacity_bytes: int | None  # what the allocator could reserve; None: unlimited
    oom: bool  # some allocation failed even after the cache was returned
    shortfall_bytes: int  # the most it was short by (0 without an OOM)
    first_oom_event: int | None
    released_on_capacity: int  # times the cache was returned to the driver to make room


class _Pool:
    __slots__ = ("small", "free", "unmapped")

    def __init__(self, small: bool):
        self.small = small
        self.free: list[tuple[int, int]] = []  # (size, addr) of cached free blocks, sorted
        self.unmapped: list[int] = []  # addresses of unmapped blocks (expandable), sorted


class CachingAllocator:
    """One device's DeviceCachingAllocator on its default stream.

    `capacity`: the bytes cudaMalloc can give before failing (the device's memory less the CUDA
    context); None for unlimited. `max_split_size`: PYTORCH_CUDA_ALLOC_CONF's max_split_size_mb,
    in bytes (None: unlimited, the default)."""

    def __init__(self, capacity: int | None = None, *, expandable_segments: bool = False,
                 max_split_size: int | None = None):
        self.capacity = capacity
        self.expandable = expandable_segments
        self.mss = max_split_size
        self.pools = (_Pool(True), _Pool(False))
        self.size: dict[int, int] = {}  # block address -> size
        self.prev: dict[int, int | None] = {}
        self.next: dict[int, int | None] = {}
        self.seg: dict[int, int] = {}  # block address -> segment base
        self.pool_of: dict[int, _Pool] = {}  # segment base -> pool
        self.allocated_blocks: set[int] = set()
        self.unmapped_blocks: set[int] = set()
        self.page: dict[int, int] = {}  # expandable segment base -> page size
        self.expandable_of: dict[bool, int] = {}  # pool small? -> its expandable segment base
        self.segments = 0
        self.allocated = 0
        self.reserved = 0
        self.segment_allocations = 0
        self.released_on_capacity = 0
        self.oom = False
        self.shortfall = 0
        self._next_base = 1 << 32
        if self.expandable:
            # the real segment reserves 1 1/8 of the device's memory of address space
            # (find_expandable_block); here it is only an address range, made large enough
            # that a run past the capacity (an OOM, simulated on) still fits in one
            self._space = 1 << 47

    # --- the public operations -------------------------------------------------------------

    def malloc(self, nbytes: int) -> int:
        """Allocate; returns the block's address. Past the capacity, records the OOM and the
        shortfall and goes on as if the device had the memory."""
        size = round_size(nbytes)
        pool = self.pools[0] if size <= K_SMALL_SIZE else self.pools[1]
        addr = self._get_free_block(pool, size)
        if addr is None:
            addr = self._alloc_block(pool, size)
            if addr is None and self.mss is not None and self._release_available(pool, size):
                addr = self._alloc_block(pool, size)
            if addr is None:
                self.released_on_capacity += 1
                self._release_cached()
                addr = self._alloc_block(pool, size)
            if addr is None:  # OOM: note how short it was, then pretend it was there
                need = self._need(pool, size)
                self.oom = True
                self.shortfall = max(self.shortfall, self.reserved + need - self.capacity)
                addr = self._alloc_block(pool, size, force=True)
        remaining = self.size[addr] - size
        if self.expandable or pool.small:
            split = remaining >= K_MIN_BLOCK
        else:
            split = (self.mss is None or size < self.mss) and remaining > K_SMALL_SIZE
        if split:
            rest = addr + size
            self._link(rest, remaining, addr, self.next[addr], self.seg[addr])
            self.size[addr] = size
            insort(pool.free, (remaining, rest))
        self.allocated_blocks.add(addr)
        # allocated_bytes counts the block as handed out, remainder included when it was not
        # split (alloc_found_block: increase_stat(allocated_bytes, block->size)): an 11 MiB
        # tensor in a new 12 MiB segment is 12 MiB allocated
        self.allocated += self.size[addr]
        return addr

    def free(self, addr: int) -> None:
        self.allocated_blocks.discard(addr)
        self.allocated -= self.size[addr]
        pool = self.pool_of[self.seg[addr]]
        addr = self._merge(addr, self.prev[addr], pool)
        addr = self._merge(addr, self.next[addr], pool)
        insort(pool.free, (self.size[addr], addr))

    # --- cached blocks ---------------------------------------------------------------------

    def _get_free_block(self, pool: _Pool, size: int) -> int | None:
        free = pool.free
        i = bisect_left(free, (size, -1))
        if i == len(free):
            return None
        if self.expandable:
            # the tail block of a segment can grow into the unmapped space after it: best fit
            # compares what a block can expand to (get_free_block, expandable_size)
            def grows_to(j):
                s, a = free[j]
                n = self.next[a]
                return s + (self.size[n] if n is not None and n in self.unmapped_blocks else 0)
            while i + 1 < len(free) and grows_to(i + 1) < grows_to(i):
                i += 1
        bsize, addr = free[i]
        if self.mss is not None:
            if size < self.mss <= bsize:
                return None
            if size >= self.mss and bsize >= size + K_LARGE_BUFFER:
                return None
        del free[i]
        return addr

    def _merge(self, dst: int, src: int | None, pool: _Pool) -> int:
        """try_merge_blocks: fold a free neighbour of the same kind into dst; dst's address
        after it (the lower of the two)."""
        if src is None or src in self.allocated_blocks \
                or (src in self.unmapped_blocks) != (dst in self.unmapped_blocks):
            return dst
        if src in self.unmapped_blocks:
            pool.unmapped.pop(bisect_left(pool.unmapped, src))
            self.unmapped_blocks.discard(src)
        else:
            free = pool.free
            free.pop(bisect_left(free, (self.size[src], src)))
        if self.prev[dst] == src:  # [src dst]: the merged block starts at src
            lo, hi = src, dst
        else:  # [dst src]
            lo, hi = dst, src
        self.size[lo] += self.size[hi]
        self.next[lo] = self.next[hi]
        if self.next[hi] is not None:
            self.prev[self.next[hi]] = lo
        if hi in self.unmapped_blocks:
            self.unmapped_blocks.discard(hi)
            self.unmapped_blocks.add(lo)
        for d in (self.size, self.prev, self.next, self.seg):
            del d[hi]
        return lo

    def _link(self, addr: int, size: int, prev: int | None, nxt: int | None, seg: int) -> None:
        self.size[addr] = size
        self.prev[addr] = prev
        self.next[addr] = nxt
        self.seg[addr] = seg
        if prev is not None:
            self.next[prev] = addr
        if nxt is not None:
            self.prev[nxt] = addr

    # --- segments --------------------------------------------------------------------------

    def _need(self, pool: _Pool, size: int) -> int:
        if not self.expandable:
            return allocation_size(size)
        page = K_SMALL_BUFFER if pool.small else K_LARGE_BUFFER
        return -(-size // page) * page

    def _alloc_block(self, pool: _Pool, size: int, force: bool = False) -> int | None:
        if self.expandable:
            return self._alloc_expandable(pool, size, force)
        nbytes = allocation_size(size)
        if not force and self.capacity is not None and self.reserved + nbytes > self.capacity:
            return None
        base = self._next_base
        self._next_base += nbytes + K_LARGE_BUFFER  # addresses only order equal-size blocks
        self._link(base, nbytes, None, None, base)
        self.pool_of[base] = pool
        self.reserved += nbytes
        self.segments += 1
        self.segment_allocations += 1
        return base

    def _release_available(self, pool: _Pool, size: int) -> bool:
        """release_available_cached_blocks (max_split_size only): cudaFree one oversize cached
        segment that is large enough, else the largest oversize ones until enough is freed."""
        key = max(size, self.mss)
        free = pool.free
        i = bisect_left(free, (key, -1))
        if i < len(free):
            self._release_segment(pool, free[i][1])
            return True
        released = 0
        j = len(free) - 1
        while released < key and j >= 0 and free[j][0] >= self.mss:
            s, a = free[j]
            released += s
            self._release_segment(pool, a)
            j -= 1
        return released >= key

    def _release_segment(self, pool: _Pool, addr: int) -> None:
        pool.free.pop(bisect_left(pool.free, (self.size[addr], addr)))
        self.reserved -= self.size[addr]
        self.segments -= 1
        del self.pool_of[addr]
        for d in (self.size, self.prev, self.next, self.seg):
            del d[addr]

    def _release_cached(self) -> None:
        """release_cached_blocks: cudaFree every cached segment with no block in use; under
        expandable segments, unmap every whole free page."""
        for pool in self.pools:
            for size, addr in list(pool.free):
                if self.expandable:
                    self._unmap(pool, addr)
                elif self.prev[addr] is None and self.next[addr] is None:
                    self._release_segment(pool, addr)

    # --- expandable segments ---------------------------------------------------------------

    def _alloc_expandable(self, pool: _Pool, size: int, force: bool) -> int | None:
        """try_allocate_expandable_block: the lowest address with room (a free block and the
        unmapped space after it), mapped page by page up to `size`."""
        cand = self._find_expandable(pool, size)
        if cand in self.unmapped_blocks:
            cand = self._map(pool, cand, min(self.size[cand], size), force)
            if cand is None:
                return None
        while self.size[cand] < size:
            nxt = self.next[cand]
            cand = self._map(pool, nxt, min(size - self.size[cand], self.size[nxt]), force)
            if cand is None:
                return None
        pool.free.pop(bisect_left(pool.free, (self.size[cand], cand)))
        return cand

    def _find_expandable(self, pool: _Pool, size: int) -> int:
        for u in pool.unmapped:
            c = u
            p = self.prev[u]
            if p is not None and p not in self.allocated_blocks:
                c = p
            room, b = 0, c
            while room < size and b is not None and b not in self.allocated_blocks:
                room += self.size[b]
                b = self.next[b]
            if room >= size:
                return c
        base = self._next_base
        self._next_base += self._space + K_LARGE_BUFFER
        self.page[base] = K_SMALL_BUFFER if pool.small else K_LARGE_BUFFER
        self.pool_of[base] = pool
        self.segments += 1
        self._link(base, self._space - self._space % self.page[base], None, None, base)
        self.unmapped_blocks.add(base)
        insort(pool.unmapped, base)
        return base

    def _map(self, pool: _Pool, addr: int, size: int, force: bool) -> int | None:
        """map_block: back [addr, addr + size) with whole pages; returns the free block that
        holds them, merged with its free neighbours."""
        base = self.seg[addr]
        page = self.page[base]
        mapped = -(-(addr + size - base) // page) * page - (addr - base)
        if not force and self.capacity is not None and self.reserved + mapped > self.capacity:
            return None
        pool.unmapped.pop(bisect_left(pool.unmapped, addr))
        self.unmapped_blocks.discard(addr)
        if mapped < self.size[addr]:
            rest = addr + mapped
            self._link(rest, self.size[addr] - mapped, addr, self.next[addr], base)
            self.size[addr] = mapped
            self.unmapped_blocks.add(rest)
            insort(pool.unmapped, rest)
        self.reserved += mapped
        self.segment_allocations += 1
        addr = self._merge(addr, self.prev[addr], pool)
        addr = self._merge(addr, self.next[addr], pool)
        insort(pool.free, (self.size[addr], addr))
        return addr

    def _unmap(self, pool: _Pool, addr: int) -> None:
        """unmap_block: give back the whole pages inside a free block."""
        base = self.seg[addr]
        page = self.page[base]
        size = self.size[addr]
        begin = -(-(addr - base) // page)
        end = (addr + size - base) // page
        if begin >= end:
            return
        pool.free.pop(bisect_left(pool.free, (size, addr)))
        start, length = base + begin * page, (end - begin) * page
        nxt = self.next[addr]
        if start > addr:  # the free part before the pages stays mapped
            self.size[addr] = start - addr
            insort(pool.free, (start - addr, addr))
            self._link(start, length, addr, nxt, base)
        else:
            self.size[addr] = length
        after = size - (start - addr) - length
        if after:
            self._link(start + length, after, start, nxt, base)
            insort(pool.free, (after, start + length))
        self.unmapped_blocks.add(start)
        self.reserved -= length
        u = self._merge(start, self.prev[start], pool)
        u = self._merge(u, self.next[u], pool)
        if self.prev[u] is None and self.next[u] is None:  # release_expandable_segment
            self.unmapped_blocks.discard(u)
            for d in (self.size, self.prev, self.next, self.seg):
                del d[u]
            del self.page[base], self.pool_of[base]
            self.segments -= 1
        else:
            insort(pool.unmapped, u)


def simulate(events: Iterable[tuple[int, int]], capacity: int | None = None, *,
             expandable_segments: bool = False,
             max_split_size: int | None = None) -> AllocatorResult:
    """Run the allocator over `events`, (storage serial, +bytes | -bytes) in order as
    tracking.LiveStorages records them: the first positive event of a serial allocates it, an
    event that brings it to zero frees it, any other change of a live serial resizes it."""
    a = CachingAllocator(capacity, expandable_segments=expandable_segments,
                         max_split_size=max_split_size)
    block: dict[int, int] = {}  # serial -> block address
    held: dict[int, int] = {}  # serial -> bytes
    peak_reserved = peak_allocated = 0
    peak_event = segments_at_peak = 0
    first_oom = None
    for i, (serial, delta) in enumerate(events):
        if delta == 0:
            continue
        old = held.get(serial, 0)
        new = old + delta
        if new > 0:
            addr = a.malloc(new)
            if old:
                a.free(block[serial])
            block[serial] = addr
            held[serial] = new
        elif serial in block:
            a.free(block.pop(serial))
            del held[serial]
        if a.oom and first_oom is None:
            first_oom = i + 1
        if a.reserved > peak_reserved:
            peak_reserved, peak_event, segments_at_peak = a.reserved, i + 1, a.segments
        if a.allocated > peak_allocated:
            peak_allocated = a.allocated
    return AllocatorResult(peak_reserved, peak_allocated, peak_event, segments_at_peak,
                           a.segment_allocations, expandable_segments, capacity, a.oom,
                           a.shortfall, first_oom, a.released_on_capacity)
