"""The replay: one training step run on fake tensors under a dispatch mode (`replay`), recording
every ATen op into the step graph (`stepgraph`: one torch.fx.Graph with each node's shape,
FLOPs, bytes allocated and freed, module, phase). The step itself, the same for a real run
(`step`); the storages live at each moment (`tracking`); what the replay knows of tensor values
and runs for real (`values`); what it changes in torch while it runs (`patches`); where real
kernels differ from their fake ones, on the CPU and on CUDA (`kernels`, `fake_vs_real`); layers
analysed around because they read tensor values (`opaque`); activation checkpointing as
torch.utils.checkpoint runs it (`checkpointing`); the replay at another batch read off
replays at three, where every storage is affine in the batch (`lines`).

May import: the shared modules, graphcalc.sources, graphcalc.flops, graphcalc.gpu. Not the
passes or later.
"""
