"""The GPU: the cards graphcalc knows (`gpus`: memory, compute capability, cuBLAS workspaces), what
CUDA's kernels and libraries do that the CPU's do not (`cuda`: 512-byte blocks, workspaces, the
attention kernel a card picks), PyTorch's caching allocator simulated on an allocation stream
(`allocator`) and the verdict for a card (`gpu_fit`: reserved peak + CUDA context against the
card's memory).

May import: the shared modules and graphcalc.sources, graphcalc.flops. Not the replay or later.
"""
