"""A fast style-transfer network (Johnson et al., 2016), small: reflection padding, InstanceNorm2d
(affine), residual blocks, nearest upsampling by F.interpolate, a total-variation + MSE loss."""

import torch
from torch import nn
import torch.nn.functional as F


def conv(c_in, c_out, k, stride=1):
    return nn.Sequential(nn.ReflectionPad2d(k // 2), nn.Conv2d(c_in, c_out, k, stride),
                         nn.InstanceNorm2d(c_out, affine=True), nn.ReLU())


class Res(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.a = conv(c, c, 3)
        self.b = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3),
                               nn.InstanceNorm2d(c, affine=True))

    def forward(self, x):
        return x + self.b(self.a(x))


class TransformNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.down = nn.Sequential(conv(3, 8, 5), conv(8, 16, 3, 2))
        self.res = nn.Sequential(Res(16), Res(16))
        self.up = conv(16, 8, 3)
        self.out = nn.Sequential(nn.ReflectionPad2d(2), nn.Conv2d(8, 3, 5))

    def forward(self, x):
        h = self.res(self.down(x))
        h = self.up(F.interpolate(h, scale_factor=2, mode="nearest"))
        return torch.sigmoid(self.out(h))


def build_model():
    return TransformNet()


def example_inputs(batch_size):
    return torch.rand(batch_size, 3, 16, 16)


def loss(y, x):
    tv = (y[..., 1:, :] - y[..., :-1, :]).abs().mean() + (y[..., 1:] - y[..., :-1]).abs().mean()
    return F.mse_loss(y, x) + 0.1 * tv
