"""A GRU sentence encoder over variable-length sentences, as users write it: pad, then
pack_padded_sequence with the lengths (on the CPU, sorted not required), a bidirectional GRU,
pad_packed_sequence back, a masked max-pool and a linear head."""

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
import torch.nn.functional as F

VOCAB, SEQ = 40, 7


class PackedGRU(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 12, padding_idx=0)
        self.gru = nn.GRU(12, 16, batch_first=True, bidirectional=True)
        self.head = nn.Linear(32, 3)

    def forward(self, ids, lengths):
        packed = pack_padded_sequence(self.emb(ids), lengths, batch_first=True,
                                      enforce_sorted=False)
        out, _ = self.gru(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=SEQ)
        return self.head(out.max(1).values)


def example_inputs(batch_size):
    lengths = torch.tensor([SEQ - i % 3 for i in range(batch_size)])
    return torch.randint(1, VOCAB, (batch_size, SEQ)), lengths


def loss(logits, ids, lengths):
    return F.cross_entropy(logits, torch.zeros(ids.shape[0], dtype=torch.long))
