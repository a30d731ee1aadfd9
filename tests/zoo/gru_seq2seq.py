"""A GRU encoder-decoder with additive (Bahdanau) attention, teacher forcing over the target,
as the seq2seq tutorials write it: a Python loop over decoder steps with a GRUCell."""

import torch
from torch import nn
import torch.nn.functional as F

SRC_VOCAB, TGT_VOCAB, SRC_LEN, TGT_LEN, EMB, HID = 50, 40, 7, 5, 16, 24


class Seq2Seq(nn.Module):
    def __init__(self):
        super().__init__()
        self.src_emb = nn.Embedding(SRC_VOCAB, EMB)
        self.encoder = nn.GRU(EMB, HID, batch_first=True, bidirectional=True)
        self.bridge = nn.Linear(2 * HID, HID)
        self.tgt_emb = nn.Embedding(TGT_VOCAB, EMB)
        self.attn_w = nn.Linear(2 * HID + HID, HID)
        self.attn_v = nn.Linear(HID, 1, bias=False)
        self.cell = nn.GRUCell(EMB + 2 * HID, HID)
        self.out = nn.Linear(HID, TGT_VOCAB)

    def forward(self, src, tgt):
        enc, h_n = self.encoder(self.src_emb(src))  # enc: (B, S, 2H)
        h = torch.tanh(self.bridge(torch.cat([h_n[0], h_n[1]], dim=-1)))
        logits = []
        for t in range(tgt.shape[1]):
            query = h.unsqueeze(1).expand(-1, enc.shape[1], -1)
            scores = self.attn_v(torch.tanh(self.attn_w(torch.cat([enc, query], -1))))
            weights = F.softmax(scores, dim=1)  # (B, S, 1)
            context = (weights * enc).sum(1)
            h = self.cell(torch.cat([self.tgt_emb(tgt[:, t]), context], -1), h)
            logits.append(self.out(h))
        return torch.stack(logits, 1)


def example_inputs(batch_size):
    return (torch.randint(0, SRC_VOCAB, (batch_size, SRC_LEN)),
            torch.randint(0, TGT_VOCAB, (batch_size, TGT_LEN)))


def loss(logits, src, tgt):
    return F.cross_entropy(logits.reshape(-1, TGT_VOCAB), tgt.reshape(-1))
