"""A post-norm attention block around nn.MultiheadAttention, called as users call it: with the
attention weights returned (need_weights defaults to True) and a causal attn_mask."""

import torch
from torch import nn

SEQ, DIM = 10, 24


class MHABlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(DIM, num_heads=3, dropout=0.1, batch_first=True)
        self.norm1 = nn.LayerNorm(DIM)
        self.ff = nn.Sequential(nn.Linear(DIM, 4 * DIM), nn.ReLU(), nn.Dropout(0.1),
                                nn.Linear(4 * DIM, DIM))
        self.norm2 = nn.LayerNorm(DIM)
        self.register_buffer("causal", torch.triu(torch.ones(SEQ, SEQ, dtype=torch.bool), 1))

    def forward(self, x):
        a, weights = self.attn(x, x, x, attn_mask=self.causal)
        x = self.norm1(x + a)
        return self.norm2(x + self.ff(x)), weights


def example_inputs(batch_size):
    return torch.randn(batch_size, SEQ, DIM)


def loss(output, x):
    y, weights = output
    return y.pow(2).mean() + weights.mean()
