"""The course CNN of seed 004: two conv + max-pool + ReLU stages and one linear layer on MNIST
images (B, 1, 28, 28).

28 -> conv 5x5 -> 24 -> pool -> 12 -> conv 5x5 -> 8 -> pool -> 4, so the flatten gives
20 x 4 x 4 = 320 features (the figure the text gives). The text trains it at batch 64 with SGD,
lr 0.01, momentum 0.5.
"""

import torch
from torch import nn
import torch.nn.functional as F


class CourseCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.pooling = nn.MaxPool2d(2)
        self.fc = nn.Linear(320, 10)

    def forward(self, x):
        batch_size = x.size(0)
        x = F.relu(self.pooling(self.conv1(x)))
        x = F.relu(self.pooling(self.conv2(x)))
        x = x.view(batch_size, -1)
        return self.fc(x)


def build_model():
    return CourseCNN()


def example_inputs(batch_size):
    return torch.randn(batch_size, 1, 28, 28)


def loss(output, images):
    # MNIST labels: one digit class per image.
    target = torch.zeros(images.shape[0], dtype=torch.long, device=output.device)
    return F.cross_entropy(output, target)
