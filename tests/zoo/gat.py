"""A graph attention layer (Velickovic et al., 2018) on an edge list, with a softmax over each
node's incoming edges written with scatter_reduce (amax) and index_add_, two heads, ELU."""

import torch
from torch import nn
import torch.nn.functional as F

FEATURES, HIDDEN, HEADS, CLASSES = 10, 8, 2, 4


class GATLayer(nn.Module):
    def __init__(self, d_in, d_out, heads):
        super().__init__()
        self.heads, self.d_out = heads, d_out
        self.lin = nn.Linear(d_in, heads * d_out, bias=False)
        self.att_src = nn.Parameter(torch.randn(heads, d_out) * 0.1)
        self.att_dst = nn.Parameter(torch.randn(heads, d_out) * 0.1)

    def forward(self, x, edge_index):
        n = x.shape[0]
        h = self.lin(x).view(n, self.heads, self.d_out)
        src, dst = edge_index
        e = F.leaky_relu((h * self.att_src).sum(-1)[src] + (h * self.att_dst).sum(-1)[dst], 0.2)
        e_max = torch.full((n, self.heads), -1e9, dtype=e.dtype).scatter_reduce(
            0, dst.unsqueeze(-1).expand_as(e), e, reduce="amax", include_self=True)
        a = (e - e_max[dst]).exp()
        denom = torch.zeros(n, self.heads, dtype=e.dtype).index_add_(0, dst, a)
        a = a / denom[dst]
        out = torch.zeros_like(h).index_add_(0, dst, h[src] * a.unsqueeze(-1))
        return out.reshape(n, -1)


class GAT(nn.Module):
    def __init__(self):
        super().__init__()
        self.gat1 = GATLayer(FEATURES, HIDDEN, HEADS)
        self.gat2 = GATLayer(HIDDEN * HEADS, CLASSES, 1)

    def forward(self, x, edge_index):
        return self.gat2(F.elu(self.gat1(x, edge_index)), edge_index)


def build_model():
    return GAT()


def example_inputs(batch_size):
    n = max(batch_size, 3)
    nodes = torch.arange(n)
    edges = torch.cat([torch.stack([nodes, (nodes + 1) % n]),
                       torch.stack([(nodes + 1) % n, nodes]), torch.stack([nodes, nodes])], 1)
    return torch.randn(n, FEATURES), edges


def loss(logits, x, edge_index):
    return F.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.long))
