"""The MNIST MLP of seeds 000 and 001: Flatten, Linear(784, 128), ReLU, Linear(128, 10).

Input: MNIST images (B, 1, 28, 28), one sample 1x28x28x4 = 3,136 bytes.
Its figures in the text: 101,770 params (fp32 params ~400 KB, gradients the same, Adam state 2x
params); data at batch 64 = 64 x 3,136 B; hidden activations at batch 1024 = 1024x128x4 B = 512 KiB.
"""

import torch
from torch import nn
import torch.nn.functional as F


def build_model():
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(28 * 28, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


def example_inputs(batch_size):
    return torch.randn(batch_size, 1, 28, 28)


def loss(output, images):
    # MNIST labels: one digit class per image.
    target = torch.zeros(images.shape[0], dtype=torch.long, device=output.device)
    return F.cross_entropy(output, target)
