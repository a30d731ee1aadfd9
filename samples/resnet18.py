"""ResNet-18 of seed 003 (d2l's version): single-channel input, 10 classes.

Stem Conv2d(1,64,7,s2,p3) + BN + ReLU + MaxPool(3,s2,p1); four stages of two Residual blocks with
64, 128, 256 and 512 channels (the later stages halve the resolution in their first block);
AdaptiveAvgPool2d(1), Flatten, Linear(512, 10).
Its figures in the text, on (1, 1, 224, 224): stem (1,64,56,56); stages (1,64,56,56) (1,128,28,28)
(1,256,14,14) (1,512,7,7); pool (1,512,1,1); flatten (1,512); output (1,10).
The text trains it on Fashion-MNIST resized to 96x96, batch 256, lr 0.05.
"""

from collections import OrderedDict

import torch
from torch import nn
import torch.nn.functional as F

from residual import Residual


def resnet_block(input_channels, num_channels, num_residuals, first_block=False):
    blocks = []
    for i in range(num_residuals):
        if i == 0 and not first_block:
            blocks.append(Residual(input_channels, num_channels, use_1x1conv=True, strides=2))
        else:
            blocks.append(Residual(num_channels, num_channels))
    return nn.Sequential(*blocks)


def build_model():
    b1 = nn.Sequential(
        nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
    )
    return nn.Sequential(OrderedDict([
        ("b1", b1),
        ("b2", resnet_block(64, 64, 2, first_block=True)),  # the stem already downsampled
        ("b3", resnet_block(64, 128, 2)),
        ("b4", resnet_block(128, 256, 2)),
        ("b5", resnet_block(256, 512, 2)),
        ("pool", nn.AdaptiveAvgPool2d((1, 1))),
        ("flatten", nn.Flatten()),
        ("fc", nn.Linear(512, 10)),
    ]))


def example_inputs(batch_size):
    return torch.randn(batch_size, 1, 224, 224)


def loss(output, images):
    # Fashion-MNIST labels: one class index per image.
    target = torch.zeros(images.shape[0], dtype=torch.long, device=output.device)
    return F.cross_entropy(output, target)
