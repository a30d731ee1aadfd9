"""ViT-B/16 (Dosovitskiy et al., 2020, "An Image is Worth 16x16 Words"): 224x224 images cut into
196 patches of 16x16 plus a class token, 12 pre-LayerNorm encoder blocks of width 768 with 12 heads
and an MLP of 3072, a 1000-class head.

Published figures: 86 M parameters in the paper; torchvision's vit_b_16 has 86,567,656, which this
layout reproduces (qkv as one Linear(768, 2304) with bias, as nn.MultiheadAttention's in_proj);
about 17.6 G multiply-accumulates per image (torchvision lists 17.56 GFLOPS in that sense).
"""

import torch
from torch import nn
import torch.nn.functional as F


class Attention(nn.Module):
    def __init__(self, dim, n_heads):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).view(B, N, 3, self.n_heads, C // self.n_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(y.transpose(1, 2).reshape(B, N, C))


class Block(nn.Module):
    def __init__(self, dim, n_heads, mlp_dim):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, n_heads)
        self.ln_2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class VisionTransformer(nn.Module):
    def __init__(self, image_size=224, patch_size=16, dim=768, depth=12, n_heads=12,
                 mlp_dim=3072, num_classes=1000):
        super().__init__()
        n_tokens = (image_size // patch_size) ** 2 + 1
        self.conv_proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embedding = nn.Parameter(torch.empty(1, n_tokens, dim).normal_(std=0.02))
        self.blocks = nn.Sequential(*[Block(dim, n_heads, mlp_dim) for _ in range(depth)])
        self.ln = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        x = self.conv_proj(x).flatten(2).transpose(1, 2)  # (B, 196, dim)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.blocks(x + self.pos_embedding)
        return self.head(self.ln(x)[:, 0])  # classify from the class token


def build_model():
    return VisionTransformer()


def example_inputs(batch_size):
    return torch.randn(batch_size, 3, 224, 224)


def loss(output, images):
    # ImageNet labels: one class index per image.
    target = torch.zeros(images.shape[0], dtype=torch.long, device=output.device)
    return F.cross_entropy(output, target)
