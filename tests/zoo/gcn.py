"""A two-layer GCN (Kipf & Welling, 2017) written as message passing on an edge list, without
torch_geometric: each edge carries x[src] * norm to dst through index_add_, plus a scatter_add
mean readout per graph. The batch is a number of nodes on a ring graph with chords."""

import torch
from torch import nn
import torch.nn.functional as F

FEATURES, HIDDEN, CLASSES, GRAPHS = 12, 16, 3, 2


class GCNLayer(nn.Module):
    def __init__(self, d_in, d_out):
        super().__init__()
        self.lin = nn.Linear(d_in, d_out, bias=False)
        self.bias = nn.Parameter(torch.zeros(d_out))

    def forward(self, x, edge_index, norm):
        h = self.lin(x)
        src, dst = edge_index
        out = torch.zeros_like(h).index_add_(0, dst, h[src] * norm.unsqueeze(-1))
        return out + self.bias


class GCN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = GCNLayer(FEATURES, HIDDEN)
        self.conv2 = GCNLayer(HIDDEN, HIDDEN)
        self.head = nn.Linear(HIDDEN, CLASSES)

    def forward(self, x, edge_index, graph_of_node):
        n = x.shape[0]
        deg = torch.zeros(n, dtype=x.dtype).scatter_add_(
            0, edge_index[1], torch.ones(edge_index.shape[1], dtype=x.dtype))
        norm = (deg[edge_index[0]] * deg[edge_index[1]]).clamp(min=1).rsqrt()
        h = F.relu(self.conv1(x, edge_index, norm))
        h = F.dropout(h, 0.2, self.training)
        h = self.conv2(h, edge_index, norm)
        index = graph_of_node.unsqueeze(-1).expand(-1, h.shape[1])
        pooled = torch.zeros(GRAPHS, h.shape[1], dtype=h.dtype).scatter_add_(0, index, h)
        return self.head(pooled)


def example_inputs(batch_size):
    n = max(batch_size, 3)
    nodes = torch.arange(n)
    ring = torch.stack([nodes, (nodes + 1) % n])
    chords = torch.stack([nodes, (nodes + 2) % n])
    self_loops = torch.stack([nodes, nodes])
    edges = torch.cat([ring, ring.flip(0), chords, self_loops], dim=1)
    return torch.randn(n, FEATURES), edges, nodes % GRAPHS


def loss(logits, x, edge_index, graph_of_node):
    return F.cross_entropy(logits, torch.zeros(GRAPHS, dtype=torch.long))


def build_model():
    return GCN()
