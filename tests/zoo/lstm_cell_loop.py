"""An LSTMCell unrolled by hand over time (as attention decoders and RL agents write it), with
the hidden state carried across steps and a per-step output head."""

import torch
from torch import nn
import torch.nn.functional as F

STEPS, FEATURES, HIDDEN = 6, 10, 16


class CellLoop(nn.Module):
    def __init__(self):
        super().__init__()
        self.cell = nn.LSTMCell(FEATURES, HIDDEN)
        self.out = nn.Linear(HIDDEN, 2)

    def forward(self, x):  # (B, STEPS, FEATURES)
        h = x.new_zeros(x.shape[0], HIDDEN)
        c = torch.zeros_like(h)
        outs = []
        for t in range(x.shape[1]):
            h, c = self.cell(x[:, t], (h, c))
            outs.append(self.out(h))
        return torch.stack(outs, 1)


def example_inputs(batch_size):
    return torch.randn(batch_size, STEPS, FEATURES)


def loss(y, x):
    return F.smooth_l1_loss(y, torch.zeros_like(y))
