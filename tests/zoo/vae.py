"""A convolutional VAE (Kingma & Welling, 2014) on 16x16 images: conv encoder to mu and log-var,
the reparameterisation z = mu + eps * exp(logvar / 2), a transposed-conv decoder; the loss is
the reconstruction BCE plus the KL divergence to N(0, I)."""

import torch
from torch import nn
import torch.nn.functional as F

LATENT = 8


class VAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(1, 8, 4, 2, 1), nn.LeakyReLU(0.2),
                                 nn.Conv2d(8, 16, 4, 2, 1), nn.LeakyReLU(0.2), nn.Flatten())
        self.mu = nn.Linear(16 * 4 * 4, LATENT)
        self.logvar = nn.Linear(16 * 4 * 4, LATENT)
        self.dec_in = nn.Linear(LATENT, 16 * 4 * 4)
        self.dec = nn.Sequential(nn.ConvTranspose2d(16, 8, 4, 2, 1), nn.ReLU(),
                                 nn.ConvTranspose2d(8, 1, 4, 2, 1))

    def forward(self, x):
        h = self.enc(x)
        mu, logvar = self.mu(h), self.logvar(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        recon = self.dec(self.dec_in(z).view(-1, 16, 4, 4))
        return recon, mu, logvar


def example_inputs(batch_size):
    return torch.rand(batch_size, 1, 16, 16)


def loss(output, x):
    recon, mu, logvar = output
    rec = F.binary_cross_entropy_with_logits(recon, x, reduction="sum")
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return (rec + kl) / x.shape[0]
