"""A two-input model (image + caption), CLIP-style: a conv image tower and a GRU-free text tower
(embedding + mean), projected to one space; the loss is the symmetric contrastive loss."""

import torch
from torch import nn
import torch.nn.functional as F

VOCAB, WORDS, DIM = 80, 6, 16


class ImageText(nn.Module):
    def __init__(self):
        super().__init__()
        self.image = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.GELU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, DIM))
        self.words = nn.Embedding(VOCAB, DIM)
        self.text = nn.Sequential(nn.LayerNorm(DIM), nn.Linear(DIM, DIM))
        self.logit_scale = nn.Parameter(torch.tensor(2.0))

    def forward(self, image, caption):
        img = F.normalize(self.image(image), dim=-1)
        txt = F.normalize(self.text(self.words(caption).mean(1)), dim=-1)
        return self.logit_scale.exp() * img @ txt.t()


def example_inputs(batch_size):
    return torch.randn(batch_size, 3, 16, 16), torch.randint(0, VOCAB, (batch_size, WORDS))


def loss(logits, image, caption):
    target = torch.arange(logits.shape[0])
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
