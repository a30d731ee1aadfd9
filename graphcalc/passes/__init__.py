"""Passes over the step graph: every figure of the report is read off the graph the replay
recorded (`graphpasses`: FLOPs per layer and per op, outputs and saved bytes, the memory walk,
the layer flow), the memory timeline and its stack (`timeline`), the layer graph a picture draws
(`graph`), runs of identical blocks (`repeats`) and what checkpointing some modules would do
to the peak and the FLOPs (`recompute`: the estimates `--checkpoint auto` chooses with).

May import: the shared modules and the stages before it (sources, flops, gpu, fake).
"""
