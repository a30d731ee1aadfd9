"""A VQ-VAE (van den Oord et al., 2017), small: a conv encoder, a codebook quantiser (squared
distances by matmul, argmin, an embedding lookup, the straight-through estimator, codebook and
commitment losses), a transposed-conv decoder."""

import torch
from torch import nn
import torch.nn.functional as F

CODES, DIM = 32, 8


class Quantizer(nn.Module):
    def __init__(self):
        super().__init__()
        self.codebook = nn.Embedding(CODES, DIM)

    def forward(self, z):  # (B, D, H, W)
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        dist = (flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.codebook.weight.t()
                + self.codebook.weight.pow(2).sum(1))
        q = self.codebook(dist.argmin(1)).view(b, h, w, d).permute(0, 3, 1, 2)
        vq_loss = F.mse_loss(q, z.detach()) + 0.25 * F.mse_loss(z, q.detach())
        return z + (q - z).detach(), vq_loss


class VQVAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(3, 16, 4, 2, 1), nn.ReLU(), nn.Conv2d(16, DIM, 4, 2, 1))
        self.quant = Quantizer()
        self.dec = nn.Sequential(nn.ConvTranspose2d(DIM, 16, 4, 2, 1), nn.ReLU(),
                                 nn.ConvTranspose2d(16, 3, 4, 2, 1))

    def forward(self, x):
        q, vq_loss = self.quant(self.enc(x))
        return self.dec(q), vq_loss


def build_model():
    return VQVAE()


def example_inputs(batch_size):
    return torch.randn(batch_size, 3, 16, 16)


def loss(output, x):
    recon, vq_loss = output
    return F.mse_loss(recon, x) + vq_loss
