"""A DDPM-style noise predictor (Ho et al., 2020), small: a sinusoidal timestep embedding made in
forward, ResBlocks with GroupNorm + SiLU and the time embedding added per channel, a strided-conv
down path, nearest-neighbour upsampling (nn.Upsample) on the way up with a skip concat, and the
MSE between predicted and true noise as the loss."""

import math

import torch
from torch import nn
import torch.nn.functional as F

TDIM = 16


def timestep_embedding(t, dim):
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ResBlock(nn.Module):
    def __init__(self, c_in, c_out):
        super().__init__()
        self.norm1 = nn.GroupNorm(4, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time = nn.Linear(TDIM, c_out)
        self.norm2 = nn.GroupNorm(4, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time(temb)[:, :, None, None]
        h = self.conv2(F.dropout(F.silu(self.norm2(h)), 0.1, self.training))
        return self.skip(x) + h


class DiffusionUNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.time_mlp = nn.Sequential(nn.Linear(TDIM, TDIM), nn.SiLU(), nn.Linear(TDIM, TDIM))
        self.inp = nn.Conv2d(3, 8, 3, padding=1)
        self.down = ResBlock(8, 8)
        self.downsample = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.mid = ResBlock(8, 16)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.up = ResBlock(24, 8)
        self.out = nn.Sequential(nn.GroupNorm(4, 8), nn.SiLU(), nn.Conv2d(8, 3, 3, padding=1))

    def forward(self, x, t):
        temb = self.time_mlp(timestep_embedding(t, TDIM))
        h1 = self.down(self.inp(x), temb)
        h = self.mid(self.downsample(h1), temb)
        h = self.up(torch.cat([self.upsample(h), h1], dim=1), temb)
        return self.out(h)


def build_model():
    return DiffusionUNet()


def example_inputs(batch_size):
    return torch.randn(batch_size, 3, 16, 16), torch.randint(0, 1000, (batch_size,))


def loss(predicted_noise, x, t):
    return F.mse_loss(predicted_noise, torch.zeros_like(predicted_noise))
