"""The CNN of seed 002: two conv blocks and two linear layers on CIFAR-10 images (B, 3, 32, 32).

Its figures in the text: conv part 932 params, fc part 25,994, total 26,926; torchinfo at batch 16
shows output shapes [16,5,28,28] [16,5,12,12] [16,12,10,10] [16,12,4,4] [16,192] [16,128] [16,10]
and 6.07 M mult-adds.
"""

import torch
from torch import nn
import torch.nn.functional as F


class SeedCNN(nn.Module):
    def __init__(self, batch_norm: bool = False):
        super().__init__()
        bn = batch_norm
        self.conv = nn.Sequential(
            nn.Conv2d(3, 5, kernel_size=5),
            *( [nn.BatchNorm2d(5)] if bn else []),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=5, stride=2),
            nn.Conv2d(5, 12, kernel_size=3),
            *( [nn.BatchNorm2d(12)] if bn else []),
            nn.ReLU(),
            nn.AvgPool2d(kernel_size=3, stride=2),
            nn.ReLU(),
        )
        self.flatten = nn.Flatten()
        self.fc = nn.Sequential(
            nn.Linear(192, 128),
            *( [nn.BatchNorm1d(128)] if bn else []),
            nn.ReLU(),
            nn.Linear(128, 10),
        )

    def forward(self, x):
        return self.fc(self.flatten(self.conv(x)))


def build_model():
    return SeedCNN()


def example_inputs(batch_size):
    return torch.randn(batch_size, 3, 32, 32)


def loss(output, images):
    # CIFAR-10 labels: one class index per image.
    target = torch.zeros(images.shape[0], dtype=torch.long, device=output.device)
    return F.cross_entropy(output, target)
