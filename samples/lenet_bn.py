"""LeNet with batch normalisation, from seed 003 (as in d2l): Fashion-MNIST images (B, 1, 28, 28).

Conv2d(1,6,5), BN2d(6), Sigmoid, AvgPool2d(2,2), Conv2d(6,16,5), BN2d(16), Sigmoid, AvgPool2d(2,2),
Flatten, Linear(256,120), BN1d(120), Sigmoid, Linear(120,84), BN1d(84), Sigmoid, Linear(84,10).
The text trains it at batch 256 with lr 1.0; it gives no parameter or memory figures.
"""

import torch
from torch import nn
import torch.nn.functional as F


def build_model():
    return nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5), nn.BatchNorm2d(6), nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Conv2d(6, 16, kernel_size=5), nn.BatchNorm2d(16), nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 120), nn.BatchNorm1d(120), nn.Sigmoid(),
        nn.Linear(120, 84), nn.BatchNorm1d(84), nn.Sigmoid(),
        nn.Linear(84, 10),
    )


def example_inputs(batch_size):
    return torch.randn(batch_size, 1, 28, 28)


def loss(output, images):
    # Fashion-MNIST labels: one class index per image.
    target = torch.zeros(images.shape[0], dtype=torch.long, device=output.device)
    return F.cross_entropy(output, target)
