"""PyTorch's translation tutorial (nn.Transformer, sequence first), small."""
import math, torch
from torch import nn
import torch.nn.functional as F
SRC_V, TGT_V, S, T, E = 200, 220, 10, 9, 32
class PositionalEncoding(nn.Module):
    def __init__(self, emb, dropout, maxlen=64):
        super().__init__()
        den = torch.exp(-torch.arange(0, emb, 2) * math.log(10000) / emb)
        pos = torch.arange(0, maxlen).reshape(maxlen, 1)
        pe = torch.zeros((maxlen, emb)); pe[:, 0::2] = torch.sin(pos * den); pe[:, 1::2] = torch.cos(pos * den)
        self.dropout = nn.Dropout(dropout); self.register_buffer("pos_embedding", pe.unsqueeze(-2))
    def forward(self, x):
        return self.dropout(x + self.pos_embedding[:x.size(0), :])
class Seq2SeqTransformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.transformer = nn.Transformer(d_model=E, nhead=4, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=64, dropout=0.1)
        self.generator = nn.Linear(E, TGT_V)
        self.src_tok = nn.Embedding(SRC_V, E); self.tgt_tok = nn.Embedding(TGT_V, E)
        self.pe = PositionalEncoding(E, 0.1)
    def forward(self, src, tgt, src_mask, tgt_mask, src_padding_mask, tgt_padding_mask, memory_key_padding_mask):
        s = self.pe(self.src_tok(src) * math.sqrt(E)); t = self.pe(self.tgt_tok(tgt) * math.sqrt(E))
        outs = self.transformer(s, t, src_mask, tgt_mask, None, src_padding_mask, tgt_padding_mask, memory_key_padding_mask)
        return self.generator(outs)
def build_model(): return Seq2SeqTransformer()
def example_inputs(b):
    src = torch.randint(4, SRC_V, (S, b)); tgt = torch.randint(4, TGT_V, (T, b))
    src_mask = torch.zeros((S, S))
    tgt_mask = torch.triu(torch.ones((T, T)), diagonal=1).masked_fill(torch.triu(torch.ones((T, T)), diagonal=1) == 1, float("-inf"))
    src_pad = torch.zeros((b, S), dtype=torch.bool); src_pad[:, -2:] = True
    tgt_pad = torch.zeros((b, T), dtype=torch.bool)
    return src, tgt, src_mask, tgt_mask, src_pad, tgt_pad, src_pad.clone()
def loss(out, src, tgt, *rest):
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), tgt.reshape(-1))
