"""A spatial transformer network (Jaderberg et al., 2015) on 20x20 digits: a localisation net
regresses a 2x3 affine matrix (initialised to the identity), F.affine_grid + F.grid_sample warp
the input, then a small classifier with Dropout2d; label-smoothed cross-entropy."""

import torch
from torch import nn
import torch.nn.functional as F


class STN(nn.Module):
    def __init__(self):
        super().__init__()
        self.loc = nn.Sequential(nn.Conv2d(1, 6, 5), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(),
                                 nn.Linear(6 * 8 * 8, 16), nn.ReLU(), nn.Linear(16, 6))
        nn.init.zeros_(self.loc[-1].weight)
        with torch.no_grad():
            self.loc[-1].bias.copy_(torch.tensor([1.0, 0, 0, 0, 1, 0]))
        self.cls = nn.Sequential(nn.Conv2d(1, 8, 3), nn.Dropout2d(0.2), nn.ReLU(),
                                 nn.AdaptiveMaxPool2d(4), nn.Flatten(), nn.Linear(128, 10))

    def forward(self, x):
        theta = self.loc(x).view(-1, 2, 3)
        grid = F.affine_grid(theta, x.shape, align_corners=False)
        return self.cls(F.grid_sample(x, grid, align_corners=False))


def example_inputs(batch_size):
    return torch.randn(batch_size, 1, 20, 20)


def loss(logits, x):
    target = torch.zeros(x.shape[0], dtype=torch.long)
    return F.cross_entropy(logits, target, label_smoothing=0.1)
