"""Data-parallel ranks: per-rank memory and communication under DDP, ZeRO-1/2 and FSDP, from one
replay (`distributed`).

May import: the shared modules and the stages before it (sources, flops, gpu, fake, passes).
"""
