"""A spectral-normalised discriminator (Miyato et al., 2018) with a hinge loss: every conv and
the linear head wrapped in torch.nn.utils.parametrizations.spectral_norm, whose power iteration
updates its u/v buffers in place on every training forward."""

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm
import torch.nn.functional as F


class SNDiscriminator(nn.Module):
    def __init__(self):
        super().__init__()
        self.convs = nn.Sequential(
            spectral_norm(nn.Conv2d(3, 16, 3, 2, 1)), nn.LeakyReLU(0.1),
            spectral_norm(nn.Conv2d(16, 32, 3, 2, 1)), nn.LeakyReLU(0.1))
        self.head = spectral_norm(nn.Linear(32 * 4 * 4, 1))

    def forward(self, x):
        return self.head(self.convs(x).flatten(1)).squeeze(-1)


def example_inputs(batch_size):
    return torch.randn(batch_size, 3, 16, 16)


def loss(score, x):
    return F.relu(1.0 - score).mean()  # the hinge loss on real images
