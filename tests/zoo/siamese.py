"""A siamese network: one encoder applied to both inputs (weights shared across the two calls),
the absolute difference of the embeddings into a similarity head, binary cross-entropy."""

import torch
from torch import nn
import torch.nn.functional as F


class Siamese(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 16))
        self.head = nn.Linear(16, 1)

    def forward(self, a, b):
        return self.head((self.encoder(a) - self.encoder(b)).abs()).squeeze(-1)


def example_inputs(batch_size):
    return torch.randn(batch_size, 20), torch.randn(batch_size, 20)


def loss(score, a, b):
    return F.binary_cross_entropy_with_logits(score, torch.ones_like(score))
