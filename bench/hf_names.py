"""accelerate's estimate, graphcalc's prediction and a real CPU step, side by side, for models given
by their Hugging Face config (the README's table under "Models by name").

    .venv/bin/python bench/hf_names.py            # writes bench/results/hf_names.md

The configs are the published config.json fields of openai-community/gpt2,
google-bert/bert-base-uncased and google/vit-base-patch16-224, a small Llama written here, and
meta-llama/Meta-Llama-3-8B (analysed only: its real step needs 130 GB). Each is written to a
temporary folder and given to graphcalc as a model folder: nothing is downloaded.

accelerate's figure follows `accelerate estimate-memory` (src/accelerate/commands/estimate.py,
read for this script; accelerate is not installed here): `create_empty_model` builds
`AutoModel.from_config(config, torch_dtype=torch.float32)` on the meta device (the base model,
no task head), `calculate_maximum_sizes` sums the bytes of its parameters (each tied tensor once)
and buffers (`compute_module_sizes` over `named_module_tensors`), and `estimate_training_usage`
answers, for float32, max(model 1x, gradients 1x, optimizer 2x, step 4x) = 4x that size: the
"Training using Adam" column, "for a batch size of 1", with no activations.

graphcalc's figure is `graphcalc analyze DIR --task T --batch B --seq-len S --optim adam` (fp32,
CPU); the measured one is the peak of live tensor storage bytes in two real CPU steps of the
same model built from the same config with random weights (graphcalc.commands.measure, as `verify`).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from graphcalc.sources import loader  # noqa: E402
from graphcalc.commands.analyze import analyze_module  # noqa: E402
from graphcalc.sources.hf import HFOptions  # noqa: E402
from graphcalc.commands.measure import measure_step  # noqa: E402
from graphcalc.options import Options  # noqa: E402
from graphcalc.units import format_bytes  # noqa: E402

GPT2 = {"model_type": "gpt2", "activation_function": "gelu_new", "n_ctx": 1024, "n_embd": 768,
        "n_head": 12, "n_layer": 12, "n_positions": 1024, "vocab_size": 50257,
        "bos_token_id": 50256, "eos_token_id": 50256, "layer_norm_epsilon": 1e-05}
BERT = {"model_type": "bert", "hidden_size": 768, "intermediate_size": 3072,
        "max_position_embeddings": 512, "num_attention_heads": 12, "num_hidden_layers": 12,
        "type_vocab_size": 2, "vocab_size": 30522, "pad_token_id": 0, "hidden_act": "gelu"}
VIT = {"model_type": "vit", "hidden_size": 768, "image_size": 224, "intermediate_size": 3072,
       "num_attention_heads": 12, "num_channels": 3, "num_hidden_layers": 12, "patch_size": 16,
       "qkv_bias": True}
SMALL_LLAMA = {"model_type": "llama", "hidden_size": 512, "intermediate_size": 1376,
               "num_attention_heads": 8, "num_key_value_heads": 4, "num_hidden_layers": 8,
               "max_position_embeddings": 2048, "vocab_size": 32000, "bos_token_id": 1,
               "eos_token_id": 2}
LLAMA3_8B = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 4096,
             "intermediate_size": 14336, "num_attention_heads": 32, "num_key_value_heads": 8,
             "num_hidden_layers": 32, "max_position_embeddings": 8192, "vocab_size": 128256,
             "rope_theta": 500000.0, "rms_norm_eps": 1e-05, "tie_word_embeddings": False,
             "bos_token_id": 128000, "eos_token_id": 128001, "torch_dtype": "bfloat16"}

# (label, config, HFOptions, batch, run a real step)
ROWS = [
    ("openai-community/gpt2", GPT2, HFOptions(seq_len=512), 1, True),
    ("openai-community/gpt2", GPT2, HFOptions(seq_len=512), 8, True),
    ("google-bert/bert-base-uncased", BERT, HFOptions(seq_len=128), 8, True),
    ("google/vit-base-patch16-224", VIT, HFOptions(), 8, True),
    ("small Llama (8 x 512, GQA)", SMALL_LLAMA, HFOptions(seq_len=1024), 4, True),
    ("meta-llama/Meta-Llama-3-8B", LLAMA3_8B, HFOptions(seq_len=2048), 1, False),
]


def accelerate_estimate(config_dir: str) -> int:
    """`accelerate estimate-memory`'s "Training using Adam" for float32 (see the docstring)."""
    import transformers

    config = transformers.AutoConfig.from_pretrained(config_dir)
    with torch.device("meta"):
        model = transformers.AutoModel.from_config(config, dtype=torch.float32)
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    size += sum(b.numel() * b.element_size() for b in model.buffers())
    sizes = {"model": size, "gradients": size, "optimizer": 2 * size, "step": 4 * size}
    return max(sizes.values())


def main() -> None:
    lines = ["| model (config) | task, batch | params | accelerate (Adam, fp32) | graphcalc "
             "| real CPU step | graphcalc error | accelerate error |",
             "|---|---|---|---|---|---|---|---|"]
    for label, config, hf, batch, real in ROWS:
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "config.json").write_text(json.dumps(config))
            acc = accelerate_estimate(folder)
            source = loader.load(folder, hf)
            options = Options(batch=batch, optimizer="adam")
            start = time.perf_counter()
            report = analyze_module(loader.build_model(source, device="meta"),
                                    source.example_inputs, options, loss_fn=source.loss,
                                    name=source.name)
            took = time.perf_counter() - start
            measured = None
            if real:
                torch.manual_seed(0)
                measured = measure_step(loader.build_model(source, device=None),
                                        source.example_inputs, options,
                                        loss_fn=source.loss).peak_bytes
        predicted = report.memory.peak_bytes
        what = f"{source.hf_plan.describe()}, batch {batch}"

        def err(value):
            return "--" if measured is None else f"{100 * (value - measured) / measured:+.1f}%"

        lines.append(f"| {label} | {what} | {report.totals.params:,} | {format_bytes(acc)} | "
                     f"{format_bytes(predicted)} | "
                     f"{'--' if measured is None else format_bytes(measured)} | "
                     f"{err(predicted)} | {err(acc)} |")
        print(lines[-1], f"(analysis {took:.1f} s)", flush=True)
    text = "\n".join(lines) + "\n"
    out = ROOT / "bench" / "results" / "hf_names.md"
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
