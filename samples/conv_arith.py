"""The convolution arithmetic example of seed 004: Conv2d(5, 10, kernel_size=3) on (B, 5, 100, 100).

Its figures in the text: output (1, 10, 98, 98) for one image, weight (10, 5, 3, 3).
The text's other examples (a 5x5 input with a 3x3 kernel: padding 1 keeps 5x5, stride 2 gives 2x2;
MaxPool2d(2) on 4x4 gives 2x2) are shape arithmetic without parameters.
"""

import torch
from torch import nn


def build_model():
    return nn.Conv2d(5, 10, kernel_size=3)


def example_inputs(batch_size):
    return torch.randn(batch_size, 5, 100, 100)
