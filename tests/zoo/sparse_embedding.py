"""A bag-of-words classifier with a large sparse-gradient embedding (nn.Embedding(sparse=True))
and a max_norm embedding, as fastText-style models and recommenders write them for SGD."""

import torch
from torch import nn
import torch.nn.functional as F

VOCAB, WORDS = 500, 6


class BagOfWords(nn.Module):
    def __init__(self):
        super().__init__()
        self.words = nn.Embedding(VOCAB, 16, sparse=True)
        self.tags = nn.Embedding(20, 16, max_norm=1.0)
        self.head = nn.Linear(16, 4)

    def forward(self, ids, tags):
        return self.head(self.words(ids).mean(1) + self.tags(tags))


def example_inputs(batch_size):
    return torch.randint(0, VOCAB, (batch_size, WORDS)), torch.randint(0, 20, (batch_size,))


def loss(logits, ids, tags):
    return F.cross_entropy(logits, torch.zeros(ids.shape[0], dtype=torch.long))
