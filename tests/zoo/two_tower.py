"""A two-tower retrieval model: a user tower (id embedding + EmbeddingBag of history, mean) and an
item tower (id + category embeddings), MLPs to one space, in-batch softmax over dot products."""

import torch
from torch import nn
import torch.nn.functional as F

USERS, ITEMS, CATS, HIST, DIM = 40, 60, 7, 5, 16


class TwoTower(nn.Module):
    def __init__(self):
        super().__init__()
        self.user_id = nn.Embedding(USERS, DIM)
        self.history = nn.EmbeddingBag(ITEMS, DIM, mode="mean")
        self.user_mlp = nn.Sequential(nn.Linear(2 * DIM, 32), nn.ReLU(), nn.Linear(32, DIM))
        self.item_id = nn.Embedding(ITEMS, DIM)
        self.category = nn.Embedding(CATS, DIM)
        self.item_mlp = nn.Sequential(nn.Linear(2 * DIM, 32), nn.ReLU(), nn.Linear(32, DIM))

    def forward(self, user, history, item, category):
        u = self.user_mlp(torch.cat([self.user_id(user), self.history(history)], -1))
        v = self.item_mlp(torch.cat([self.item_id(item), self.category(category)], -1))
        return F.normalize(u, dim=-1) @ F.normalize(v, dim=-1).t() / 0.1


def example_inputs(batch_size):
    return (torch.randint(0, USERS, (batch_size,)), torch.randint(0, ITEMS, (batch_size, HIST)),
            torch.randint(0, ITEMS, (batch_size,)), torch.randint(0, CATS, (batch_size,)))


def loss(scores, user, history, item, category):
    return F.cross_entropy(scores, torch.arange(scores.shape[0]))
