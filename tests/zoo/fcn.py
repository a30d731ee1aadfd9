"""An FCN segmentation net (Long et al., 2015), small: a strided conv backbone to 1/8
resolution, a 1x1 classifier head and a skip from 1/4, upsampled with F.interpolate (bilinear)
to the input size; per-pixel cross-entropy with an ignore index."""

import torch
from torch import nn
import torch.nn.functional as F


def block(c_in, c_out):
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class FCN(nn.Module):
    def __init__(self, classes=5):
        super().__init__()
        self.stage1 = block(3, 8)
        self.stage2 = block(8, 16)
        self.stage3 = block(16, 32)
        self.score3 = nn.Conv2d(32, classes, 1)
        self.score2 = nn.Conv2d(16, classes, 1)

    def forward(self, x):
        f2 = self.stage2(self.stage1(x))
        f3 = self.stage3(f2)
        s = F.interpolate(self.score3(f3), size=f2.shape[-2:], mode="bilinear",
                          align_corners=False) + self.score2(f2)
        return F.interpolate(s, size=x.shape[-2:], mode="bilinear", align_corners=False)


def example_inputs(batch_size):
    return torch.randn(batch_size, 3, 32, 32)


def loss(logits, images):
    target = torch.zeros(images.shape[0], 32, 32, dtype=torch.long)
    target[:, :2] = 255  # unlabeled border rows
    return F.cross_entropy(logits, target, ignore_index=255)
