"""A conformer block (Gulati et al., 2020) over log-mel frames: half-step feed-forward, relative
-free multi-head self-attention, the convolution module (pointwise Conv1d + GLU, depthwise Conv1d,
BatchNorm1d, SiLU, pointwise Conv1d), a second half-step feed-forward, a final LayerNorm; a
Conv2d subsampling front end and a frame-wise classification loss (a CTC loss cannot be
replayed: torch's fake tensors give aten::_ctc_loss no output shape, since its saved alphas are
sized by the largest target length, a value)."""

import torch
from torch import nn
import torch.nn.functional as F

MELS, FRAMES, DIM, ALPHABET = 16, 24, 32, 10


class FeedForward(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(DIM), nn.Linear(DIM, 4 * DIM), nn.SiLU(),
                                 nn.Dropout(0.1), nn.Linear(4 * DIM, DIM), nn.Dropout(0.1))

    def forward(self, x):
        return x + 0.5 * self.net(x)


class ConvModule(nn.Module):
    def __init__(self, kernel=7):
        super().__init__()
        self.norm = nn.LayerNorm(DIM)
        self.pointwise1 = nn.Conv1d(DIM, 2 * DIM, 1)
        self.depthwise = nn.Conv1d(DIM, DIM, kernel, padding=kernel // 2, groups=DIM)
        self.bn = nn.BatchNorm1d(DIM)
        self.pointwise2 = nn.Conv1d(DIM, DIM, 1)

    def forward(self, x):  # (B, T, D)
        h = self.norm(x).transpose(1, 2)
        h = F.glu(self.pointwise1(h), dim=1)
        h = F.silu(self.bn(self.depthwise(h)))
        return x + self.pointwise2(h).transpose(1, 2)


class ConformerBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.ff1 = FeedForward()
        self.attn_norm = nn.LayerNorm(DIM)
        self.attn = nn.MultiheadAttention(DIM, 4, dropout=0.1, batch_first=True)
        self.conv = ConvModule()
        self.ff2 = FeedForward()
        self.norm = nn.LayerNorm(DIM)

    def forward(self, x):
        x = self.ff1(x)
        h = self.attn_norm(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return self.norm(self.ff2(self.conv(x)))


class Conformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.subsample = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU())
        self.proj = nn.Linear(4 * MELS // 2, DIM)
        self.block = ConformerBlock()
        self.out = nn.Linear(DIM, ALPHABET)

    def forward(self, mel):  # (B, T, MELS)
        h = self.subsample(mel.unsqueeze(1))  # (B, 4, T/2, MELS/2)
        b, c, t, f = h.shape
        h = self.proj(h.permute(0, 2, 1, 3).reshape(b, t, c * f))
        return self.out(self.block(h)).log_softmax(-1)


def example_inputs(batch_size):
    return torch.randn(batch_size, FRAMES, MELS)


def loss(log_probs, mel):
    b, t = log_probs.shape[:2]
    return F.nll_loss(log_probs.reshape(b * t, ALPHABET), torch.ones(b * t, dtype=torch.long))


def build_model():
    return Conformer()
