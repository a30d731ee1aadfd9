"""A decoder-only language model on nn.TransformerEncoder with the causal mask from
nn.Transformer.generate_square_subsequent_mask and no padding mask (so torch detects the mask as
causal and attention runs with is_causal=True), tied input and output embeddings."""

import torch
from torch import nn
import torch.nn.functional as F

VOCAB, SEQ, DIM = 64, 10, 32


class CausalLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.tok = nn.Embedding(VOCAB, DIM)
        self.pos = nn.Embedding(SEQ, DIM)
        layer = nn.TransformerEncoderLayer(DIM, 4, 4 * DIM, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, num_layers=2)
        self.norm = nn.LayerNorm(DIM)

    def forward(self, ids):
        t = ids.shape[1]
        mask = nn.Transformer.generate_square_subsequent_mask(t, device=ids.device)
        h = self.blocks(self.tok(ids) + self.pos(torch.arange(t, device=ids.device)), mask=mask)
        return self.norm(h) @ self.tok.weight.t()


def example_inputs(batch_size):
    return torch.randint(0, VOCAB, (batch_size, SEQ))


def loss(logits, ids):
    return F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), ids[:, 1:].reshape(-1))
