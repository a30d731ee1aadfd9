"""EmbeddingBag in the other modes recommenders use: max pooling over fixed-size bags (2D
input) and sum with per_sample_weights over offsets, concatenated into a scoring MLP."""

import torch
from torch import nn
import torch.nn.functional as F

ROWS, DIM, BAG = 40, 8, 3


class BagModes(nn.Module):
    def __init__(self):
        super().__init__()
        self.maxbag = nn.EmbeddingBag(ROWS, DIM, mode="max")
        self.weighted = nn.EmbeddingBag(ROWS, DIM, mode="sum")
        self.mlp = nn.Sequential(nn.Linear(2 * DIM, 16), nn.ReLU(), nn.Linear(16, 1))

    def forward(self, bags, flat, offsets, weights):
        h = torch.cat([self.maxbag(bags), self.weighted(flat, offsets, per_sample_weights=weights)],
                      -1)
        return self.mlp(h).squeeze(-1)


def example_inputs(batch_size):
    return (torch.randint(0, ROWS, (batch_size, BAG)), torch.randint(0, ROWS, (batch_size * BAG,)),
            torch.arange(0, batch_size * BAG, BAG), torch.rand(batch_size * BAG))


def loss(score, bags, flat, offsets, weights):
    return F.mse_loss(score, torch.ones_like(score))
