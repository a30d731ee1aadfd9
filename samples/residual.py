"""The residual block of seed 003 (d2l's Residual): conv3x3 + BN, ReLU, conv3x3 + BN, an optional
1x1 conv with stride on the shortcut, add, ReLU.

Its figures in the text: Residual(3, 3) on (4, 3, 6, 6) gives (4, 3, 6, 6) (see build_identity);
Residual(3, 6, use_1x1conv=True, strides=2) on (4, 3, 6, 6) gives (4, 6, 3, 3) (build_model).
"""

import torch
from torch import nn
import torch.nn.functional as F


class Residual(nn.Module):
    def __init__(self, input_channels, num_channels, use_1x1conv=False, strides=1):
        super().__init__()
        self.conv1 = nn.Conv2d(input_channels, num_channels, kernel_size=3, padding=1,
                               stride=strides)
        self.conv2 = nn.Conv2d(num_channels, num_channels, kernel_size=3, padding=1)
        # The shortcut needs a 1x1 conv when the block changes the channel count or resolution.
        self.conv3 = (nn.Conv2d(input_channels, num_channels, kernel_size=1, stride=strides)
                      if use_1x1conv else None)
        self.bn1 = nn.BatchNorm2d(num_channels)
        self.bn2 = nn.BatchNorm2d(num_channels)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.conv3 is not None:
            x = self.conv3(x)
        y += x
        return F.relu(y)


def build_model():
    return Residual(3, 6, use_1x1conv=True, strides=2)


def build_identity():
    return Residual(3, 3)


def example_inputs(batch_size):
    return torch.randn(batch_size, 3, 6, 6)
