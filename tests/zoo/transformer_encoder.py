"""A text classifier on nn.TransformerEncoder with a key padding mask: token and position
embeddings, two post-norm encoder layers with the defaults (so nested tensors in eval, under
no_grad), masked mean pooling, a linear head."""

import torch
from torch import nn
import torch.nn.functional as F

VOCAB, SEQ, DIM = 100, 12, 32


class EncoderClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.tok = nn.Embedding(VOCAB, DIM, padding_idx=0)
        self.pos = nn.Parameter(torch.zeros(1, SEQ, DIM))
        layer = nn.TransformerEncoderLayer(DIM, nhead=4, dim_feedforward=64, dropout=0.1,
                                           batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2)
        self.head = nn.Linear(DIM, 3)

    def forward(self, ids, pad_mask):
        h = self.encoder(self.tok(ids) + self.pos, src_key_padding_mask=pad_mask)
        keep = (~pad_mask).unsqueeze(-1).to(h.dtype)
        pooled = (h * keep).sum(1) / keep.sum(1).clamp(min=1)
        return self.head(pooled)


def example_inputs(batch_size):
    ids = torch.randint(1, VOCAB, (batch_size, SEQ))
    pad_mask = torch.zeros(batch_size, SEQ, dtype=torch.bool)
    pad_mask[:, SEQ - 3:] = True  # the last three positions are padding
    return ids, pad_mask


def loss(logits, ids, pad_mask):
    return F.cross_entropy(logits, torch.zeros(ids.shape[0], dtype=torch.long))
