"""A DLRM-style recommender (Naumov et al., 2019), small: a bottom MLP over dense features,
one EmbeddingBag (sum) per sparse feature over offsets, the pairwise dot-product interaction of
all embeddings (upper triangle), a top MLP, a click logit."""

import torch
from torch import nn
import torch.nn.functional as F

DENSE, DIM, TABLES, ROWS, BAG = 13, 8, 3, 50, 4


class DLRM(nn.Module):
    def __init__(self):
        super().__init__()
        self.bottom = nn.Sequential(nn.Linear(DENSE, 32), nn.ReLU(), nn.Linear(32, DIM), nn.ReLU())
        self.tables = nn.ModuleList(nn.EmbeddingBag(ROWS, DIM, mode="sum") for _ in range(TABLES))
        n = TABLES + 1
        self.register_buffer("pairs", torch.triu_indices(n, n, offset=1), persistent=False)
        self.top = nn.Sequential(nn.Linear(DIM + n * (n - 1) // 2, 16), nn.ReLU(), nn.Linear(16, 1))

    def forward(self, dense, indices, offsets):
        x = self.bottom(dense)
        feats = [x] + [t(indices[i], offsets) for i, t in enumerate(self.tables)]
        z = torch.stack(feats, dim=1)  # (B, n, D)
        inter = torch.bmm(z, z.transpose(1, 2))  # (B, n, n)
        flat = inter[:, self.pairs[0], self.pairs[1]]
        return self.top(torch.cat([x, flat], dim=1)).squeeze(-1)


def example_inputs(batch_size):
    indices = torch.randint(0, ROWS, (TABLES, batch_size * BAG))
    offsets = torch.arange(0, batch_size * BAG, BAG)
    return torch.randn(batch_size, DENSE), indices, offsets


def loss(logit, dense, indices, offsets):
    return F.binary_cross_entropy_with_logits(logit, torch.ones_like(logit))
