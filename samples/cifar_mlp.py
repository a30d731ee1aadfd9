"""The CIFAR-10 MLP of seeds 000 and 001: Flatten, Linear(3072, 128), ReLU, Linear(128, 10).

Input: CIFAR-10 images (B, 3, 32, 32), one sample 3x32x32x4 = 12,288 bytes.
Its figures in the text: 394,634 params; data at batch 1024 = 12 MiB.
"""

import torch
from torch import nn
import torch.nn.functional as F


def build_model():
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(3 * 32 * 32, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


def example_inputs(batch_size):
    return torch.randn(batch_size, 3, 32, 32)


def loss(output, images):
    # CIFAR-10 labels: one class index per image.
    target = torch.zeros(images.shape[0], dtype=torch.long, device=output.device)
    return F.cross_entropy(output, target)
