"""Fine-tuning as users write it: a frozen pretrained-style backbone (requires_grad_(False), its
BatchNorm kept in eval by an overridden train()), features taken under torch.no_grad(), a new head
with label-smoothed soft targets; returns a dict with the logits."""

import torch
from torch import nn
import torch.nn.functional as F


class FineTune(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU(),
                                      nn.Conv2d(16, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.backbone.requires_grad_(False)
        self.adapter = nn.Linear(32, 32)
        self.head = nn.Linear(32, 7)

    def train(self, mode=True):
        super().train(mode)
        self.backbone.eval()
        return self

    def forward(self, x):
        with torch.no_grad():
            feats = self.backbone(x)
        return {"logits": self.head(F.relu(self.adapter(feats)))}


def build_model():
    return FineTune()


def example_inputs(batch_size):
    return torch.randn(batch_size, 3, 16, 16)


def loss(out, x):
    target = torch.full((x.shape[0], 7), 0.1 / 6)
    target[:, 0] = 0.9
    return F.cross_entropy(out["logits"], target)
