"""The CNN of seed 002 with batch normalisation: BatchNorm2d(5) after conv1, BatchNorm2d(12) after
conv2, BatchNorm1d(128) after the first Linear; CIFAR-10 images (B, 3, 32, 32).

Its figures in the text: 27,216 params (the plain CNN's 26,926 plus 10, 24 and 256); torchinfo at
batch 16 shows forward/backward pass size 1.34 MB and estimated total size 1.65 MB.
"""

import torch
import torch.nn.functional as F

from seed_cnn import SeedCNN


def build_model():
    return SeedCNN(batch_norm=True)


def example_inputs(batch_size):
    return torch.randn(batch_size, 3, 32, 32)


def loss(output, images):
    # CIFAR-10 labels: one class index per image.
    target = torch.zeros(images.shape[0], dtype=torch.long, device=output.device)
    return F.cross_entropy(output, target)
