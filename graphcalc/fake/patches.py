"""What the replay changes in torch while it runs, each a context manager: the saved-tensor hooks
step aside while torch.utils.checkpoint saves its inputs; the step replayed as on CUDA (device
"cuda" on fake tensors, CUDA's autocast lists); the heap frozen for the replay; causal masks
known; nn.MultiheadAttention's fast path off, as in training.
"""

from __future__ import annotations

import contextlib
import gc
import weakref

import torch

from graphcalc.gpu import cuda
from graphcalc.options import Options

@contextlib.contextmanager
def _saved_tensors_hooks_beside_checkpoints(pack, unpack):
    """saved_tensors_hooks(pack, unpack), set aside while torch.utils.checkpoint saves a
    checkpoint's inputs: a tensor saved under hooks unpacks as a new object, so `query is key`
    would no longer hold when the checkpoint re-runs nn.MultiheadAttention, which takes another
    path then (and the recompute fails "different metadata", where the real step runs). The
    inputs saved there are the caller's tensors, never new memory, so nothing is missed."""
    import torch.utils.checkpoint as ckpt

    graph = torch.autograd.graph
    # where the inputs are saved: _CheckpointFrame.save_inputs (torch 2.13), or
    # _NoopSaveInputs.apply (torch 2.11 and before)
    frame = getattr(ckpt, "_CheckpointFrame", None)
    if frame is not None and hasattr(frame, "save_inputs"):
        owner, name = frame, "save_inputs"
    elif getattr(ckpt, "_NoopSaveInputs", None) is not None:
        owner, name = ckpt._NoopSaveInputs, "apply"
    else:
        owner = name = None
    depth = [0]  # saved_tensors_hooks entered above ours (a checkpoint's own)
    base_enter, base_exit = graph.saved_tensors_hooks.__enter__, graph.saved_tensors_hooks.__exit__

    def enter(self):
        depth[0] += 1
        return base_enter(self)

    def exit_(self, *exc):
        depth[0] -= 1
        return base_exit(self, *exc)

    with graph.saved_tensors_hooks(pack, unpack):
        if owner is None:  # another torch: as before
            yield
            return
        base_save = owner.__dict__[name]
        call = base_save.__get__(None, owner) if isinstance(base_save, classmethod) else base_save

        def save(*args, **kwargs):
            if depth[0]:  # inside another checkpoint's hooks: not ours on top
                return call(*args, **kwargs)
            torch._C._autograd._pop_saved_tensors_default_hooks()
            try:
                return call(*args, **kwargs)
            finally:
                torch._C._autograd._push_saved_tensors_default_hooks(pack, unpack)

        setattr(owner, name, save)
        graph.saved_tensors_hooks.__enter__, graph.saved_tensors_hooks.__exit__ = enter, exit_
        try:
            yield
        finally:
            setattr(owner, name, base_save)
            graph.saved_tensors_hooks.__enter__ = base_enter
            graph.saved_tensors_hooks.__exit__ = base_exit


# The largest tensor (elements) computed for real from the batch: token ids or a padding mask
# (B x S), never an attention map (B x S x S) or activations at a training batch.


@contextlib.contextmanager
def _as_on_cuda(options: Options, rec=None):
    """What a CUDA step runs that the CPU's kernels do not (graphcalc.gpu.cuda), while the replay
    runs; the attention kernels chosen go to `rec.sdpa_backends`."""
    if options.device != "cuda":
        yield
        return
    target = options.cuda_target
    sdpa = cuda.SdpaAsOnCuda(target)
    autocast = cuda.cuda_autocast(options.amp_dtype) if options.amp else contextlib.nullcontext()
    if rec is not None:
        rec.cublas_bytes = target.cublas_workspace_bytes
        rec.conv_workspaces = True
    try:
        with autocast, sdpa, cuda.cuda_dropout():
            yield
    finally:
        if rec is not None:
            rec.sdpa_backends = dict(sdpa.chosen)


@contextlib.contextmanager
def _heap_frozen():
    """What lives before the replay (torch, the model) is set aside from the collector while it
    runs (`gc.freeze`): a full collection, which the step graph's many nodes bring about, then
    scans only what the replay made (a ResNet-50 step: 0.05 s instead of 0.2-0.4 s). The replay's
    own objects, its fake tensors among them, are collected as before; what was set aside lived
    before it, and what of it turns into garbage meanwhile waits for a collection after it.
    Left alone where the process froze its own heap already."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@contextlib.contextmanager
def _causal_masks_known():
    """nn.TransformerEncoder and nn.TransformerDecoder ask whether their mask is causal by
    comparing its values with a causal mask (`transformer._detect_is_causal_mask`), which fake
    tensors cannot answer: the whole encoder or decoder went opaque. The masks torch makes
    (`nn.Transformer.generate_square_subsequent_mask`) are remembered as they are made, so the
    answer is the real one: causal exactly when the size asked is theirs (one edited in place
    afterwards would be misread). Any other mask goes to torch's own check."""
    tmod = torch.nn.modules.transformer
    generate = getattr(tmod, "_generate_square_subsequent_mask", None)
    detect = getattr(tmod, "_detect_is_causal_mask", None)
    if generate is None or detect is None:
        yield
        return
    made: dict[int, weakref.ref] = {}

    def generate_remembered(sz, *args, **kwargs):
        mask = generate(sz, *args, **kwargs)
        made[id(mask)] = weakref.ref(mask)
        return mask

    def detect_known(mask, is_causal=None, size=None):
        ref = made.get(id(mask)) if is_causal is None and mask is not None else None
        if ref is None or ref() is not mask:
            return detect(mask, is_causal, size)
        sz = size if size is not None else mask.size(-2)
        return tuple(mask.shape) == (sz, sz)

    tmod._generate_square_subsequent_mask = generate_remembered
    tmod._detect_is_causal_mask = detect_known
    try:
        yield
    finally:
        tmod._generate_square_subsequent_mask = generate
        tmod._detect_is_causal_mask = detect


@contextlib.contextmanager
def _without_mha_fastpath():
    """nn.MultiheadAttention and nn.TransformerEncoder(Layer) take a fast path in eval mode under
    no_grad: fused kernels and, with a padding mask, nested tensors, which fake tensors cannot
    run (aten::_nested_tensor_from_mask has no fake kernel). Off, they run their plain path."""
    mha = getattr(torch.backends, "mha", None)
    if mha is None or not hasattr(mha, "set_fastpath_enabled"):
        yield
        return
    was = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(was)
