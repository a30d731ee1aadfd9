"""Weight sharing across calls: one residual MLP block applied three times (a universal-
transformer / ALBERT-style loop), one pooling module reused at three points, and an output head
tied to the input projection's weight (its transpose)."""

import torch
from torch import nn
import torch.nn.functional as F


class Step(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.fc = nn.Linear(d, d)

    def forward(self, x):
        return x + F.gelu(self.fc(self.norm(x)))


class Looped(nn.Module):
    def __init__(self, d=16):
        super().__init__()
        self.conv = nn.Conv1d(4, 4, 3, padding=1)
        self.pool = nn.MaxPool1d(2)
        self.inp = nn.Linear(8, d, bias=False)
        self.step = Step(d)

    def forward(self, x):  # (B, 4, 64)
        for _ in range(3):
            x = self.pool(F.relu(self.conv(x)))  # 64 -> 32 -> 16 -> 8
        h = self.inp(x)
        for _ in range(3):
            h = self.step(h)
        return F.linear(h, self.inp.weight.t())  # the tied output head


def example_inputs(batch_size):
    return torch.randn(batch_size, 4, 64)


def build_model():
    return Looped()
