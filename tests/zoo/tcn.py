"""A temporal convolutional network (Bai et al., 2018): causal dilated Conv1d with weight
normalisation (torch.nn.utils.parametrizations.weight_norm), the chomp of the right padding,
residual 1x1 downsampling, dropout; a sequence regression with an MSE loss per step."""

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm
import torch.nn.functional as F


class TemporalBlock(nn.Module):
    def __init__(self, c_in, c_out, dilation, k=3):
        super().__init__()
        self.pad = (k - 1) * dilation
        self.conv1 = weight_norm(nn.Conv1d(c_in, c_out, k, padding=self.pad, dilation=dilation))
        self.conv2 = weight_norm(nn.Conv1d(c_out, c_out, k, padding=self.pad, dilation=dilation))
        self.down = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x):
        h = F.dropout(F.relu(self.conv1(x)[..., :-self.pad]), 0.1, self.training)
        h = F.dropout(F.relu(self.conv2(h)[..., :-self.pad]), 0.1, self.training)
        return F.relu(h + (x if self.down is None else self.down(x)))


class TCN(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.Sequential(TemporalBlock(3, 8, 1), TemporalBlock(8, 8, 2),
                                    TemporalBlock(8, 8, 4))
        self.out = nn.Conv1d(8, 1, 1)

    def forward(self, x):
        return self.out(self.blocks(x)).squeeze(1)


def build_model():
    return TCN()


def example_inputs(batch_size):
    return torch.randn(batch_size, 3, 40)


def loss(y, x):
    return F.mse_loss(y, x[:, 0])
