"""A character-level language model (Karpathy's char-rnn), with a vanilla tanh nn.RNN of two
layers, not batch_first, dropout between the layers, a linear decoder on every step."""

import torch
from torch import nn
import torch.nn.functional as F

VOCAB, SEQ = 30, 8


class CharRNN(nn.Module):
    def __init__(self, hidden=20):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 12)
        self.rnn = nn.RNN(12, hidden, num_layers=2, dropout=0.2)
        self.dec = nn.Linear(hidden, VOCAB)

    def forward(self, ids):  # (SEQ, B)
        out, _ = self.rnn(self.emb(ids))
        return self.dec(out)


def example_inputs(batch_size):
    return torch.randint(0, VOCAB, (SEQ, batch_size))


def loss(logits, ids):
    return F.cross_entropy(logits[:-1].reshape(-1, VOCAB), ids[1:].reshape(-1))
