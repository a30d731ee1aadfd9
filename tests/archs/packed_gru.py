"""A GRU text classifier on packed variable-length sequences (pack_padded_sequence + lengths)."""
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

VOCAB, MAX_LEN = 100, 12


class PackedGRU(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 16)
        self.rnn = nn.GRU(16, 32, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(64, 4)

    def forward(self, ids, lengths):
        packed = pack_padded_sequence(self.emb(ids), lengths, batch_first=True,
                                      enforce_sorted=False)
        out, _ = self.rnn(packed)
        out, lens = pad_packed_sequence(out, batch_first=True)
        return self.fc(out.sum(1) / lens.unsqueeze(1))


def build_model():
    return PackedGRU()


def example_inputs(batch_size):
    # lengths 1..MAX_LEN in turn: the packed batch holds sum(lengths) rows
    return (torch.randint(0, VOCAB, (batch_size, MAX_LEN)),
            torch.arange(batch_size) % MAX_LEN + 1)
