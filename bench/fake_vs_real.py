"""Run every zoo model's training step on real and on fake tensors and list each op whose fake
outputs occupy other bytes than the real kernel's (graphcalc.fake.fake_vs_real), after the replay's
corrections (graphcalc.fake.kernels); `--raw` lists them without the corrections.

The zoo: samples/*.py, the HF models (bench/hf_models.py, when transformers is installed) and the
RNN models (bench/rnn_models.py). `--ops FILE` also writes every ATen op the zoo ran (merged
with the file's list), one a line, with its overload and FLOP class (counted / zero / unknown):
tests/test_zoo_ops.py reads it.

    python bench/fake_vs_real.py [--raw] [--ops bench/results/zoo_ops.txt] [NAME ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from graphcalc.fake import fake_vs_real  # noqa: E402
from graphcalc.sources import loader
from graphcalc.options import Options  # noqa: E402

BIG = {"resnet50", "vit_b16"}  # minutes on a laptop CPU at batch 1: left to --all


def zoo(include_big: bool):
    """(name, build, make_inputs, loss_fn) for every model."""
    for path in sorted((ROOT / "samples").glob("*.py")):
        if path.stem in BIG and not include_big:
            continue
        src = loader.load(str(path))
        if src.example_inputs is None:
            continue
        yield path.stem, (lambda src=src: loader.build_model(src, device=None)), \
            src.example_inputs, src.loss
    try:
        import hf_models
    except ImportError:
        hf_models = None
    if hf_models is not None:
        for name in sorted(hf_models.BUILDERS):
            _, _, make_inputs, loss_fn = hf_models.build(name)
            yield name, (lambda name=name: hf_models.build(name)[1]), make_inputs, loss_fn
    import rnn_models

    for name in rnn_models.BUILDERS:
        _, _, make_inputs, loss_fn = rnn_models.build(name)
        yield name, (lambda name=name: rnn_models.build(name)[1]), make_inputs, loss_fn


def resolve(op: str, overload: str):
    """torch.ops.aten.add.Tensor for ('aten::add', 'Tensor')."""
    ns, _, base = op.partition("::")
    return getattr(getattr(getattr(torch.ops, ns), base), overload)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="only these models")
    ap.add_argument("--raw", action="store_true", help="without the replay's corrections")
    ap.add_argument("--all", action="store_true", help="also " + ", ".join(sorted(BIG)))
    ap.add_argument("--amp", default=None, help="autocast dtype (bf16)")
    ap.add_argument("--ops", type=Path, help="write the ops the zoo ran to this file")
    args = ap.parse_args(argv)
    options = Options(batch=2, optimizer="adam", steps=1, amp=args.amp)
    ops: set[tuple[str, str]] = set()
    found = 0
    for name, build, make_inputs, loss_fn in zoo(args.all or bool(args.names)):
        if args.names and name not in args.names:
            continue
        start = time.perf_counter()
        torch.manual_seed(0)
        real = fake_vs_real.record_real(build(), make_inputs, options, loss_fn)
        torch.manual_seed(0)
        try:
            fake = fake_vs_real.record_fake(build(), make_inputs, options, loss_fn,
                                            corrected=not args.raw)
        except Exception as e:  # noqa: BLE001 - a model the fake step cannot run: say so
            print(f"{name}: the fake step failed: {type(e).__name__}: {e}".splitlines()[0])
            continue
        ops.update((r.op, r.overload) for r in real)
        diffs = fake_vs_real.differences(real, fake)
        kernels = [d for d in diffs if d.same_op]
        found += bool(kernels)
        summary = ", ".join(f"{op} x{n}" for op, n in
                            fake_vs_real.summarize(diffs, same_op=True).items())
        path = len(diffs) - len(kernels)
        print(f"{name}: {len(real)} ops, {summary or 'no kernel difference'}"
              + (f"; {path} ops on one side only (a branch on values)" if path else "")
              + f" ({time.perf_counter() - start:.1f} s)")
        for d in kernels[:5]:
            print(f"    {d}")
    if args.ops:
        from graphcalc import flops

        if args.ops.exists():  # runs with other options add to the list
            for line in args.ops.read_text().split():
                if "::" in line:
                    op, _, overload = line.rpartition(".")
                    ops.add((op, overload))
        lines = [f"{op}.{overload} {flops.classify(resolve(op, overload))}"
                 for op, overload in sorted(ops)]
        args.ops.write_text("\n".join(lines) + "\n")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
