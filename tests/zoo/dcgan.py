"""A DCGAN (Radford et al., 2016), small: a generator of 16x16 images from noise (ConvTranspose2d
+ BatchNorm + ReLU, tanh out) and a discriminator (strided Conv2d + LeakyReLU). One step trains
both: the discriminator on a real and a generated batch, the generator through the discriminator
(the non-saturating loss), summed into one backward as a joint step."""

import torch
from torch import nn
import torch.nn.functional as F

NOISE = 16


class Generator(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.ConvTranspose2d(NOISE, 32, 4, 1, 0, bias=False), nn.BatchNorm2d(32), nn.ReLU(True),
            nn.ConvTranspose2d(32, 16, 4, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(True),
            nn.ConvTranspose2d(16, 3, 4, 2, 1, bias=False), nn.Tanh())

    def forward(self, z):
        return self.net(z)


class Discriminator(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 16, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(16, 32, 4, 2, 1, bias=False), nn.BatchNorm2d(32),
            nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(32, 1, 4, 1, 0, bias=False))

    def forward(self, x):
        return self.net(x).flatten()


class GAN(nn.Module):
    def __init__(self):
        super().__init__()
        self.G = Generator()
        self.D = Discriminator()

    def forward(self, real, z):
        fake = self.G(z)
        return self.D(real), self.D(fake.detach()), self.D(fake)


def build_model():
    return GAN()


def example_inputs(batch_size):
    return torch.randn(batch_size, 3, 16, 16), torch.randn(batch_size, NOISE, 1, 1)


def loss(output, real, z):
    d_real, d_fake, g_fake = output
    ones, zeros = torch.ones_like(d_real), torch.zeros_like(d_real)
    d_loss = (F.binary_cross_entropy_with_logits(d_real, ones)
              + F.binary_cross_entropy_with_logits(d_fake, zeros))
    g_loss = F.binary_cross_entropy_with_logits(g_fake, ones)
    return d_loss + g_loss
