"""Measure real data-parallel training steps: N processes on this machine, gloo, CPU.

The ground truth the per-rank prediction (`graphcalc.ranks.distributed`) is checked against. Each rank
builds the model for real, wraps it as a user would (`DistributedDataParallel`, or FSDP2's
`fully_shard` on every unit of `distributed.shard_units` and then on the root), runs real steps
and counts its live tensor storages as `measure.measure_step` does, with two things a plain
dispatch mode would get wrong made right:

- a DTensor is a wrapper whose own "storage" has the global size: its local shard is counted;
- FSDP frees and re-allocates the unsharded parameters with `storage.resize_`, which is no ATen
  op: FSDP's own `alloc_storage` / `free_storage` report each resize to the tracker.

What no dispatch mode sees either way: the DDP reducer's buffers when it is built outside the
count (it is built inside here). gloo's reduce-scatter copies its input inside the collective;
that copy is counted (its storage first shows when the rank's chunk is split out of it). Its
free is racy (presumably gloo's worker thread letting go of the work): usually as the collective
returns, sometimes a few ops later, when a run can measure a higher peak than the next.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable

import torch
from torch import nn

from graphcalc.options import Options
from graphcalc.commands.measure import counted_steps
from graphcalc.fake.step import prepare_inputs
from graphcalc.fake.tracking import LiveStorages, plain_tensors


@dataclass(frozen=True)
class RankMeasured:
    rank: int
    peak_bytes: int
    step_peaks: tuple[int, ...]
    step_seconds: float


def wrap(model: nn.Module, options: Options) -> nn.Module:
    """The model as each rank trains it under `options.shard` (process group already up)."""
    from graphcalc.ranks import distributed

    if options.shard == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, bucket_cap_mb=distributed.DDP_BUCKET_MIB)
    if options.shard == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh("cpu", (options.world_size,))
        modules = dict(model.named_modules())
        for path in distributed.shard_units(model):
            fully_shard(modules[path], mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model
    raise NotImplementedError(f"no real run for --shard {options.shard} (ddp and fsdp only)")


@contextlib.contextmanager
def _fsdp_resizes(tracker: LiveStorages):
    """Report FSDP's storage resizes (unshard / reshard of parameters) to the tracker."""
    from torch.distributed.fsdp._fully_shard import _fsdp_param

    alloc, free = _fsdp_param.alloc_storage, _fsdp_param.free_storage

    def counted(fn):
        def resize(tensor):
            fn(tensor)
            for t in plain_tensors(tensor):
                tracker.resized(t)
        return resize

    _fsdp_param.alloc_storage, _fsdp_param.free_storage = counted(alloc), counted(free)
    try:
        yield
    finally:
        _fsdp_param.alloc_storage, _fsdp_param.free_storage = alloc, free


def measure_rank(model: nn.Module, make_inputs: Callable[[int], Any], options: Options, *,
                 loss_fn=None, rank: int = 0) -> RankMeasured:
    """Run `options.steps` real steps of this rank (process group already up) and measure, with
    the modules `options.checkpoint` names under torch.utils.checkpoint (before DDP or FSDP
    wraps the model)."""
    from graphcalc.fake.checkpointing import checkpointed, resolve

    paths = resolve(model, options.checkpoint) if options.checkpoint else ()
    with checkpointed(model, paths):
        return _measure_rank(model, make_inputs, options, loss_fn, rank)


def _measure_rank(model, make_inputs, options: Options, loss_fn, rank: int) -> RankMeasured:
    model = model.to(dtype=options.torch_dtype)
    model.train()
    torch.manual_seed(rank)  # each rank its own data, as a DistributedSampler gives
    inputs = prepare_inputs(make_inputs(options.batch), options, torch.device("cpu"))
    # Wrapped inside the count: DDP's gradient buckets are made there.
    step_peaks, times = counted_steps(
        model, inputs, loss_fn, options, prepare=lambda m: wrap(m, options),
        context=_fsdp_resizes if options.shard == "fsdp" else None)
    return RankMeasured(rank, max(step_peaks), tuple(step_peaks), min(times))


def _rank_main(job_file: str, rank: int) -> None:
    """One rank, in its own process: the job (spec, inputs, options) comes in a JSON file."""
    import torch.distributed as dist

    from graphcalc.sources import loader
    from graphcalc.commands.analyze import resolve_inputs

    with open(job_file) as f:
        job = json.load(f)
    options = Options(**job["options"])
    torch.set_num_threads(1)  # the ranks share this machine's cores
    dist.init_process_group("gloo", init_method=f"file://{job['store']}", rank=rank,
                            world_size=options.world_size)
    try:
        from graphcalc.sources.hf import HFOptions

        source = loader.load(job["spec"], HFOptions(**job["hf"]) if job.get("hf") else None)
        torch.manual_seed(0)  # the same initial weights on every rank
        model = loader.build_model(source, device=None)
        measured = measure_rank(model, resolve_inputs(source, job["inputs"]), options,
                                loss_fn=source.loss, rank=rank)
        with open(f"{job_file}.{rank}", "w") as f:
            json.dump(asdict(measured), f)
        # No rank lets go of its connections while the other may still be in gloo: a rank that
        # tore down first once aborted its peer ("terminate called without an active exception").
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _die_with_parent() -> None:
    """In a rank, before it runs: on Linux, SIGKILL it when graphcalc dies, even by SIGKILL."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _end(procs: list[subprocess.Popen], grace_s: float = 5.0) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def measure_distributed(spec: str, options: Options, *, inputs: list[str] | None = None,
                        timeout_s: float = 1800, hf=None) -> tuple[RankMeasured, ...]:
    """Launch `options.world_size` processes on this machine as torchrun would (one per rank,
    gloo on CPU), run the steps on each and return what each rank measured, by rank."""
    with tempfile.TemporaryDirectory(prefix="graphcalc-dist-") as tmp:
        job_file = os.path.join(tmp, "job.json")
        opts = {f.name: getattr(options, f.name) for f in fields(options)}
        with open(job_file, "w") as f:
            json.dump({"spec": spec, "inputs": inputs, "options": opts,
                       "hf": asdict(hf) if hf is not None else None,
                       "store": os.path.join(tmp, "store")}, f)
        procs: list[subprocess.Popen] = []
        failed = []
        try:
            for rank in range(options.world_size):
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", __name__, job_file, str(rank)],
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                    preexec_fn=_die_with_parent))
            for rank, p in enumerate(procs):
                try:
                    out, _ = p.communicate(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    raise RuntimeError(f"rank {rank} did not finish in {timeout_s:.0f} s") \
                        from None
                if p.returncode != 0:
                    failed.append(f"rank {rank} exited {p.returncode}: {out.strip()[-2000:]}")
        finally:
            # stopped (SIGTERM, Ctrl-C, a timeout, a failed rank): no rank outlives the run, and
            # the temporary folder goes with the `with`
            _end(procs)
        if failed:
            raise RuntimeError("; ".join(failed))
        measured = []
        for rank in range(options.world_size):
            with open(f"{job_file}.{rank}") as f:
                d = json.load(f)
            measured.append(RankMeasured(d["rank"], d["peak_bytes"], tuple(d["step_peaks"]),
                                         d["step_seconds"]))
    return tuple(measured)


if __name__ == "__main__":
    _rank_main(sys.argv[1], int(sys.argv[2]))
    # The measurement is on disk and the group is down. Leave without the interpreter's
    # finalization, where gloo's worker threads letting go of their last work (tensors with Python
    # references) can abort the process (pytorch/pytorch#179291 describes the crash).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
