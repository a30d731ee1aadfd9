"""A frame classifier trained with CTC on labels of varying lengths (F.ctc_loss reads them)."""
import torch
from torch import nn
import torch.nn.functional as F
class M(nn.Module):
    def __init__(self):
        super().__init__(); self.conv = nn.Conv1d(8, 16, 3, padding=1); self.fc = nn.Linear(16, 10)
    def forward(self, x, targets, in_len, tgt_len):
        return self.fc(self.conv(x).transpose(1, 2)).log_softmax(-1)
def build_model(): return M()
def example_inputs(b):
    return torch.randn(b, 8, 20), torch.randint(1, 10, (b, 6)), torch.full((b,), 20, dtype=torch.long), torch.arange(b) % 6 + 1
def loss(out, x, targets, in_len, tgt_len):
    return F.ctc_loss(out.transpose(0, 1), targets, in_len, tgt_len)
