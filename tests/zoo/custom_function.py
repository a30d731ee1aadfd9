"""A layer with its own torch.autograd.Function: a straight-through sign (binarised activations,
as in BinaryConnect) whose backward clips the gradient to |x| <= 1, between two linear layers."""

import torch
from torch import nn


class SignSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.sign(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype)


class Binarize(nn.Module):
    def forward(self, x):
        return SignSTE.apply(x)


class BinaryMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(24, 48)
        self.bn = nn.BatchNorm1d(48)
        self.sign = Binarize()
        self.fc2 = nn.Linear(48, 10)

    def forward(self, x):
        return self.fc2(self.sign(self.bn(self.fc1(x))))


def example_inputs(batch_size):
    return torch.randn(batch_size, 24)


def build_model():
    return BinaryMLP()
