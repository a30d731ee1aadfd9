"""GPT-2 as samples/gpt2.py writes it (blocks h.0..h.3 of ln_1, attn, ln_2, mlp), at a tiny
size so that a real CPU step takes a fraction of a second: the checkpointing tests' model."""

import importlib.util
from pathlib import Path

import torch

_spec = importlib.util.spec_from_file_location(
    "_gpt2_sample", Path(__file__).resolve().parents[2] / "samples" / "gpt2.py")
gpt2 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpt2)

VOCAB, SEQ = 512, 32
loss = gpt2.loss


def build_model():
    return gpt2.build_model(n_layer=4, n_embd=64, n_head=4, vocab_size=VOCAB, block_size=SEQ)


def example_inputs(batch_size):
    return torch.randint(0, VOCAB, (batch_size, SEQ))
