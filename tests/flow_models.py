"""Tiny models whose data flow the picture tests know by heart (tests/test_graph.py).

Each model's forward is short enough to write its edges down by hand; the tests compare the
layer graph with those hand-written edges, never with graphcalc's own output.
"""

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.conv(x))


class Decoder(nn.Module):
    """A layer taking two tensors: the upsampled map and the encoder's skip, concatenated."""

    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.act = nn.ReLU()

    def forward(self, x, skip):
        return self.act(self.conv(torch.cat([x, skip], dim=1)))


class UNet(nn.Module):
    """Two encoder blocks, one MaxPool2d called twice, ConvTranspose2d upsampling, and decoders
    that concatenate the skips."""

    def __init__(self):
        super().__init__()
        self.enc1 = Block(1, 4)
        self.enc2 = Block(4, 8)
        self.pool = nn.MaxPool2d(2)
        self.mid = Block(8, 16)
        self.up2 = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.dec2 = Decoder(16, 8)
        self.up1 = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.dec1 = Decoder(8, 4)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        m = self.mid(self.pool(e2))
        d2 = self.dec2(self.up2(m), e2)
        d1 = self.dec1(self.up1(d2), e1)
        return self.head(d1)


def unet_inputs(batch):
    return torch.randn(batch, 1, 8, 8)


class ThreePools(nn.Module):
    """One nn.MaxPool2d instance called three times."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 2, 3, padding=1)
        self.c2 = nn.Conv2d(2, 2, 3, padding=1)
        self.c3 = nn.Conv2d(2, 2, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(2, 3)

    def forward(self, x):
        x = self.pool(self.c1(x))
        x = self.pool(self.c2(x))
        x = self.pool(self.c3(x))
        return self.fc(x.flatten(1))


def pools_inputs(batch):
    return torch.randn(batch, 1, 8, 8)


def encoder_layer():
    return nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, batch_first=True)


def encoder_inputs(batch):
    return torch.randn(batch, 5, 8)


class TwoInputs(nn.Module):
    """A two-input model: an image branch and a tabular branch, concatenated, then a head."""

    def __init__(self):
        super().__init__()
        self.image = nn.Linear(6, 4)
        self.table = nn.Linear(3, 4)
        self.head = nn.Linear(8, 2)

    def forward(self, image, table):
        return self.head(torch.cat([self.image(image), self.table(table)], dim=1))


def two_inputs(batch):
    return torch.randn(batch, 6), torch.randn(batch, 3)


class Unrolled(nn.Module):
    """One nn.Linear cell called 40 times in a Python loop, h = tanh(cell(h) + x)."""

    def __init__(self):
        super().__init__()
        self.cell = nn.Linear(4, 4)

    def forward(self, x):
        h = x
        for _ in range(40):
            h = torch.tanh(self.cell(h) + x)
        return h


def unrolled_inputs(batch):
    return torch.randn(batch, 4)


# name -> (build, inputs): what bench/screenshots.py draws besides the samples
MODELS = {"unet": (UNet, unet_inputs), "three_pools": (ThreePools, pools_inputs),
          "encoder_layer": (encoder_layer, encoder_inputs), "two_inputs": (TwoInputs, two_inputs),
          "unrolled": (Unrolled, unrolled_inputs)}
