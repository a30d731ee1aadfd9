"""A raw-waveform audio classifier (M5 / wav2vec-style front end): strided Conv1d + BatchNorm1d
+ MaxPool1d over 1,600 samples, a GELU Conv1d stack, global average pool, a keyword head."""

import torch
from torch import nn
import torch.nn.functional as F


class WaveNetClassifier(nn.Module):
    def __init__(self, classes=6):
        super().__init__()
        self.front = nn.Sequential(nn.Conv1d(1, 16, 80, stride=16), nn.BatchNorm1d(16), nn.ReLU(),
                                   nn.MaxPool1d(4))
        self.body = nn.Sequential(nn.Conv1d(16, 32, 3, padding=1), nn.GELU(),
                                  nn.Conv1d(32, 32, 3, padding=2, dilation=2), nn.GELU())
        self.head = nn.Linear(32, classes)

    def forward(self, wave):
        h = self.body(self.front(wave))
        return self.head(F.adaptive_avg_pool1d(h, 1).squeeze(-1))


def example_inputs(batch_size):
    return torch.randn(batch_size, 1, 1600)


def loss(logits, wave):
    return F.cross_entropy(logits, torch.zeros(wave.shape[0], dtype=torch.long))
