"""A translation model on nn.Transformer (encoder and decoder), as the tutorial writes it: token
embeddings scaled by sqrt(d), a sinusoidal positional table (a buffer), a causal tgt_mask from
nn.Transformer.generate_square_subsequent_mask, padding masks for source and target, a generator
head and a cross-entropy with ignore_index on the padding."""

import math

import torch
from torch import nn
import torch.nn.functional as F

VOCAB, SRC, TGT, DIM, PAD = 50, 9, 7, 32, 0


class PositionalEncoding(nn.Module):
    def __init__(self, dim, max_len=64):
        super().__init__()
        pos = torch.arange(max_len).unsqueeze(1)
        div = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
        pe = torch.zeros(max_len, dim)
        pe[:, 0::2] = torch.sin(pos * div)
        pe[:, 1::2] = torch.cos(pos * div)
        self.register_buffer("pe", pe)

    def forward(self, x):
        return x + self.pe[: x.shape[1]]


class Translator(nn.Module):
    def __init__(self):
        super().__init__()
        self.src_emb = nn.Embedding(VOCAB, DIM, padding_idx=PAD)
        self.tgt_emb = nn.Embedding(VOCAB, DIM, padding_idx=PAD)
        self.pos = PositionalEncoding(DIM)
        self.transformer = nn.Transformer(DIM, nhead=4, num_encoder_layers=1,
                                          num_decoder_layers=1, dim_feedforward=64,
                                          dropout=0.1, batch_first=True)
        self.generator = nn.Linear(DIM, VOCAB)

    def forward(self, src, tgt):
        scale = math.sqrt(DIM)
        tgt_mask = nn.Transformer.generate_square_subsequent_mask(tgt.shape[1])
        h = self.transformer(self.pos(self.src_emb(src) * scale),
                             self.pos(self.tgt_emb(tgt) * scale), tgt_mask=tgt_mask,
                             src_key_padding_mask=src == PAD, tgt_key_padding_mask=tgt == PAD,
                             memory_key_padding_mask=src == PAD)
        return self.generator(h)


def build_model():
    return Translator()


def example_inputs(batch_size):
    src = torch.randint(1, VOCAB, (batch_size, SRC))
    src[:, -2:] = PAD
    tgt = torch.randint(1, VOCAB, (batch_size, TGT))
    tgt[:, -1] = PAD
    return src, tgt


def loss(logits, src, tgt):
    return F.cross_entropy(logits.reshape(-1, VOCAB), tgt.reshape(-1), ignore_index=PAD)
