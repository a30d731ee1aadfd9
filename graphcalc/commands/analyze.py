"""The pipeline: load -> replay the step on fake tensors -> cost each layer -> walk memory -> report."""

from __future__ import annotations

import weakref

from dataclasses import replace
from typing import Any, Callable

import torch
from torch import nn

from graphcalc.fake import checkpointing
from graphcalc.sources import loader
from graphcalc.errors import (GraphcalcError, InternalError, ModelFileError, ShapeError, TraceError,
                     UsageError, raised_inside_graphcalc)
from graphcalc.options import Options
from graphcalc.output import formatting as _formatting  # noqa: F401 (str(report), HTML)
from graphcalc.routing import ROUTINGS
from graphcalc.fake.replay import LOSS, OPTIMIZER, Replay, replay
from graphcalc.fake.step import LossCallError
from graphcalc.fake.opaque import is_data_dependent, reason_of
from graphcalc.report import TRACER, TRACER_OPAQUE, FlowNode, Layer, Memory, Report, Totals
from graphcalc.passes.timeline import kernels, step_timeline  # noqa: F401 (step_timeline: its old home)
from graphcalc.passes.graphpasses import (graph_flops, graph_memory, graph_outputs, layer_flops,
                                          layer_flow, layer_outputs, op_flops)
from graphcalc.fake.stepgraph import layer_name


def _flow(g) -> tuple[FlowNode, ...]:
    """The report's stretches of the first forward, from the contracted graph
    (`graphpasses.layer_flow`)."""
    return tuple(FlowNode(*key, d["context"], d["order"], d["shapes"], d["out_bytes"],
                          tuple(d["ops"])) for key, d in g.nodes(data=True))


def _parameter_rows(model: nn.Module):
    """Own parameters per module path, each distinct tensor counted once at its first owner."""
    seen: dict[int, str] = {}
    rows = {}
    for path, mod in model.named_modules():
        params = trainable = buffers = 0
        shared = []
        for pname, p in mod.named_parameters(recurse=False, remove_duplicate=False):
            owner = seen.get(id(p))
            if owner is not None:
                shared.append(f"{pname} = {owner}")
                continue
            seen[id(p)] = f"{path + '.' if path else ''}{pname}"
            params += p.numel()
            trainable += p.numel() if p.requires_grad else 0
        for bname, b in mod.named_buffers(recurse=False, remove_duplicate=False):
            if b is None or id(b) in seen:
                continue
            seen[id(b)] = f"{path}.{bname}"
            buffers += b.numel()
        rows[path] = (params, trainable, buffers, tuple(shared))
    return rows


def _layers(model: nn.Module, sg) -> tuple[Layer, ...]:
    """The report's rows, one per module (and the loss, where it ran ops of its own), with
    their parameters; every other figure is a pass over the step graph (`graph_flops`,
    `graph_outputs`)."""
    prows = _parameter_rows(model)
    names = {layer_name(path): (path, type(mod).__name__) for path, mod in model.named_modules()}
    ran = set(layer_flops(sg)) | set(layer_outputs(sg))
    if LOSS in ran:
        names[LOSS] = (LOSS, "loss")
    out = []
    for name, (path, kind) in names.items():
        params, trainable, buffers, shared = prows.get(path, (0, 0, 0, ()))
        out.append(Layer(
            name=name, type=kind, depth=0 if path in ("", LOSS) else path.count(".") + 1,
            output_shapes=(), output_dtype=None, params=params, trainable_params=trainable,
            frozen_params=params - trainable, buffers=buffers, flops_forward=0, flops_backward=0,
            macs_forward=0, bias_adds_forward=0, activation_bytes=0, saved_bytes=0, calls=0,
            shared=shared, unknown_ops=()))
    # Ops recorded outside any module of the model (should not happen) still count, so rows sum
    # to the totals.
    for name in sorted(ran - set(names)):
        out.append(Layer(name, "other", 0, (), None, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, (), ()))
    return tuple(out)


def analyze_module(model: nn.Module, make_inputs: Callable[[int], Any], options: Options, *,
                   loss_fn=None, name: str | None = None,
                   on_replay: Callable[[Replay], None] | None = None) -> Report:
    """Analyse a model: every figure of the report, from one replay of the step on fake tensors,
    with the modules `options.checkpoint` names under torch.utils.checkpoint. `on_replay` is
    handed the replay itself (its every event: graphcalc.output.snapshot)."""
    check_batch_responds(make_inputs, options.batch)
    loader.materialize_lazy(model, make_inputs)
    paths = checkpointing.resolve(model, options.checkpoint) if options.checkpoint else ()
    recompute = checkpointing.RecomputeFlops()
    with checkpointing.checkpointed(model, paths), recompute.watching():
        report = _analyze(model, make_inputs, options, loss_fn, name, recompute, on_replay)
    flops = tuple(sorted(recompute.flops.items()))
    if not paths and not flops:
        return report
    return replace(report, checkpointed=paths, recompute=flops,
                   totals=replace(report.totals, flops_recompute=sum(recompute.flops.values())))


_RESPONDS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
PROBE_BATCHES = (7, 11)  # above the floors inputs set (max(batch, 3)), and small


def check_batch_responds(make_inputs, batch: int) -> None:
    """Refuse inputs that ignore the batch asked for: when `make_inputs` gives the same shapes at
    two small batches, the step analysed is not one of `batch` samples, and every figure (and
    `fit`'s answer) would be for a batch nobody asked for."""
    try:
        known = _RESPONDS.get(make_inputs)
    except TypeError:  # not weak-referenceable: check each time
        known = None
    if known is None:
        from torch.utils._pytree import tree_leaves

        from graphcalc.fake.step import example_batch

        try:
            a, b = ([tuple(t.shape) for t in tree_leaves(example_batch(make_inputs, n))
                     if isinstance(t, torch.Tensor)] for n in PROBE_BATCHES)
        except Exception:  # noqa: BLE001 - the analysis itself reports a failing input
            return
        known = (not a) or a != b
        try:
            _RESPONDS[make_inputs] = known
        except TypeError:
            pass
    if not known:
        raise UsageError(f"the inputs ignore the batch size: example_inputs gives the same shapes "
                         f"at batch {PROBE_BATCHES[0]} and {PROBE_BATCHES[1]}, so a step of "
                         f"batch {batch} cannot be analysed; make example_inputs(batch_size) "
                         "build batch_size samples")


def _analyze(model, make_inputs, options: Options, loss_fn, name, recompute,
             on_replay=None) -> Report:
    opaque: dict[str, str] = {}
    while True:
        try:
            recompute.reset()
            rp = replay(model, make_inputs, loss_fn, options, opaque=opaque, graph=True)
            break
        except GraphcalcError:
            raise
        except Exception as e:  # the model's own code failed under fake tensors
            if raised_inside_graphcalc(e) is not None:
                raise _explain(e, model) from e
            owner = getattr(e, "_graphcalc_owner", None) or ""
            if not is_data_dependent(e) or owner.startswith("[") or owner in opaque:
                raise _explain(e, model) from e
            if owner == "":  # the model's own forward reads values: nothing left to analyse
                raise TraceError(f"the model's own forward {reason_of(e)}, which a static "
                                 "analysis cannot see; move that code into a submodule so that "
                                 "the rest can be analysed around it") from e
            # One layer reads tensor values: analyse the rest around it (graphcalc.fake.opaque).
            opaque[owner] = reason_of(e)
    if on_replay is not None:
        on_replay(rp)
    # The rows' FLOPs, calls, shapes, outputs and saved bytes: passes over the step graph
    # (graphcalc.passes.graphpasses)
    layers, unknown = graph_flops(_layers(model, rp.step_graph), rp.step_graph)
    layers, saved_bytes = graph_outputs(layers, rp.step_graph)
    recomputed = dict(recompute.flops)  # the first replay's; another (routing) counts again
    routing_peaks: tuple[tuple[str, int], ...] = ()
    if rp.recorder.values.routers:
        # Routing reads values: the spread between the routings, one more replay (same layers).
        peaks = {options.routing: rp.recorder.tracker.peak}
        for other in ROUTINGS:
            if other not in peaks:
                alt = replay(model, make_inputs, loss_fn, replace(options, routing=other),
                             opaque=opaque)
                peaks[other] = alt.recorder.tracker.peak
        routing_peaks = tuple(sorted(peaks.items()))
    params = sum(layer.params for layer in layers)
    trainable = sum(layer.trainable_params for layer in layers)
    totals = Totals(
        params=params, trainable_params=trainable, frozen_params=params - trainable,
        buffers=sum(layer.buffers for layer in layers),
        flops_forward=sum(layer.flops_forward for layer in layers),
        flops_backward=sum(layer.flops_backward for layer in layers),
        macs_forward=sum(layer.macs_forward for layer in layers),
        mult_adds_with_bias=sum(layer.macs_forward + layer.bias_adds_forward for layer in layers),
        saved_bytes=saved_bytes)
    memory = graph_memory(
        rp.step_graph, device=options.device, inference_peak_bytes=rp.inference_peak,
        optimizer_state_bytes=rp.state_bytes, **kernels(rp, options))
    if rp.inference_error:
        memory = replace(memory, inference_error=rp.inference_error)
    dist = None
    if options.distributed:
        from graphcalc.ranks.distributed import rank_memory

        memory, dist = rank_memory(model, rp, options)
    gpu = _gpu(rp, options, memory) if options.device == "cuda" else None
    flow = layer_flow(rp.step_graph)  # the picture's layer graph: the op graph contracted
    recompute.flops.clear()
    recompute.flops.update(recomputed)
    return Report(model=name or type(model).__name__, config=options.as_dict(), totals=totals,
                  memory=memory, layers=layers, unknown_ops=unknown, distributed=dist,
                  op_flops=op_flops(rp.step_graph),
                  loss=rp.loss_kind,
                  tracer=TRACER_OPAQUE if opaque else TRACER,
                  opaque=tuple((layer_name(p), why) for p, why in opaque.items()),
                  memory_gaps=tuple(rp.recorder.memory_gaps.items()),
                  edges=tuple((a, b, d["shape"]) for a, b, d in sorted(
                      flow.edges(data=True), key=lambda e: e[2]["order"])),
                  flow=_flow(flow),
                  flow_inputs=flow.graph["inputs"], flow_outputs=flow.graph["outputs"],
                  run_order=tuple(layer_name(p) for p in rp.recorder.first_run),
                  value_reads=tuple((op, tuple(layer_name(p) for p in where))
                                    for op, where in rp.recorder.values.reads.items()),
                  routers=tuple((layer_name(p), e, k)
                                for p, (e, k) in rp.recorder.values.routers.items()),
                  routing=options.routing, routing_peaks=routing_peaks, gpu=gpu)


def _gpu(rp: Replay, options: Options, memory: Memory):
    """The report's GPU section: reserved memory from the simulated caching allocator and, with a
    GPU or a memory size, the verdict (graphcalc.gpu.gpu_fit)."""
    from graphcalc.gpu.gpu_fit import gpu_fit, gpu_fit_unsimulated

    if options.distributed:
        return gpu_fit_unsimulated(memory.peak_bytes, options)
    return gpu_fit(rp.recorder.tracker.events, rp.recorder.marks, options,
                   name_of=lambda owner: OPTIMIZER if owner == OPTIMIZER else layer_name(owner),
                   estimated=rp.recorder.estimated)


def _first(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _explain(e: Exception, model: nn.Module) -> GraphcalcError:
    inside = raised_inside_graphcalc(e)
    if inside is not None:  # graphcalc's own code failed: a bug, never the model's
        return InternalError(f"internal error at {inside} while replaying the step: "
                             f"{type(e).__name__}: {_first(e)} (a bug in graphcalc, not in the "
                             "model; rerun with --debug for the traceback)")
    owner = getattr(e, "_graphcalc_owner", None)
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, LossCallError):  # the model file's loss() and the batch disagree
        return ModelFileError(f"{msg}; loss is called as loss(output, *inputs), with the "
                              "batch's keywords when example_inputs returns a dict")
    where = layer_name(owner or "")
    if is_data_dependent(e):
        return TraceError(f"layer '{where}' reads tensor values (.item(), .tolist() or "
                          f"a branch on a tensor), which a static analysis cannot see: {msg}")
    return ShapeError(f"the model failed on the given inputs in layer '{where}': {msg}")


def resolve_inputs(source: loader.ModelSource, inputs: list[str] | None):
    """--input specs when given, else the file's example_inputs."""
    if inputs and source.hf_plan is not None:
        raise UsageError("--input does not apply to a Hugging Face config: its batch is made for "
                         "--task; set its size with --seq-len, --image-size or --audio-samples")
    if inputs:
        return loader.inputs_from_specs([loader.InputSpec.parse(s) for s in inputs])
    if source.example_inputs is not None:
        return source.example_inputs
    raise UsageError(f"{source.path} defines no example_inputs(batch_size): give the input "
                     "shape with --input, e.g. --input 3x224x224")


def analyze_file(spec: str, options: Options, *, inputs: list[str] | None = None,
                 on_replay: Callable[[Replay], None] | None = None, hf=None) -> Report:
    """`graphcalc analyze FILE[:NAME]`: load the file, build the model on meta, analyse. `hf`:
    the graphcalc.sources.hf.HFOptions of a model by its Hugging Face name or config."""
    with loader.torch_state_kept():
        return _analyze_file(spec, options, inputs, on_replay, hf)


def _analyze_file(spec: str, options: Options, inputs, on_replay, hf) -> Report:
    source = loader.load(spec, hf)
    make_inputs = resolve_inputs(source, inputs)
    try:
        model = loader.build_model(source, device="meta")
        return analyze_module(model, make_inputs, options, loss_fn=source.loss, name=source.name,
                              on_replay=on_replay)
    except (ShapeError, TraceError) as first:
        plan = source.hf_plan
        if plan is not None and plan.seq_len and plan.max_positions \
                and plan.seq_len > plan.max_positions[1] and "index out of range" in str(first):
            attr, most = plan.max_positions
            raise UsageError(f"--seq-len {plan.seq_len} is past the config's {attr} ({most}), "
                             f"and this model's position table has no row for it: {first}") \
                from None
        if source.meta_only:
            raise
        # Some models compute real values at build time (a constant table, not a buffer) that do
        # not survive the meta device: build those for real and try again.
        try:
            model = loader.build_model(source, device=None)
        except GraphcalcError:
            raise first from None
        return analyze_module(model, make_inputs, options, loss_fn=source.loss, name=source.name,
                              on_replay=on_replay)
