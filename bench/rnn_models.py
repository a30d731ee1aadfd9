"""Recurrent models: nn.RNN (tanh, relu), nn.LSTM (with and without proj_size) and nn.GRU, uni-
and bidirectional, 1-3 layers, batch_first or not, with and without dropout between layers.

Each builder returns (name, model, make_inputs, loss_fn), as bench/hf_models.py does. The sizes
are small so that a real CPU step takes milliseconds (tests/test_rnn.py runs them all); the
`lstm_classifier` is the issue's 2-layer bidirectional LSTM (embedding 128, hidden 256).
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

SEQ = 7
FEATURES = 6
HIDDEN = 10


class Recurrent(nn.Module):
    """A recurrent layer, then a linear head on every step's output (a tagger)."""

    def __init__(self, kind: str, *, layers: int = 1, bidirectional: bool = False,
                 batch_first: bool = False, dropout: float = 0.0, proj_size: int = 0,
                 nonlinearity: str = "tanh", bias: bool = True):
        super().__init__()
        kw = dict(num_layers=layers, bidirectional=bidirectional, batch_first=batch_first,
                  dropout=dropout, bias=bias)
        if kind == "lstm":
            self.rnn = nn.LSTM(FEATURES, HIDDEN, proj_size=proj_size, **kw)
        elif kind == "gru":
            self.rnn = nn.GRU(FEATURES, HIDDEN, **kw)
        else:
            self.rnn = nn.RNN(FEATURES, HIDDEN, nonlinearity=nonlinearity, **kw)
        out = (proj_size or HIDDEN) * (2 if bidirectional else 1)
        self.head = nn.Linear(out, 3)
        self.batch_first = batch_first

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.head(y)


def _inputs(batch_first: bool):
    def make_inputs(batch):
        shape = (batch, SEQ, FEATURES) if batch_first else (SEQ, batch, FEATURES)
        return torch.randn(*shape)
    return make_inputs


def _tagger_loss(output, x):
    return output.float().pow(2).mean()


CONFIGS = {
    "rnn_tanh": dict(kind="rnn"),
    "rnn_relu_bi2_bf": dict(kind="rnn", nonlinearity="relu", layers=2, bidirectional=True,
                            batch_first=True),
    "rnn_tanh_3_dropout": dict(kind="rnn", layers=3, dropout=0.3),
    "lstm": dict(kind="lstm"),
    "lstm_bi2_bf": dict(kind="lstm", layers=2, bidirectional=True, batch_first=True),
    "lstm_3_dropout": dict(kind="lstm", layers=3, dropout=0.3),
    "lstm_nobias_bi": dict(kind="lstm", bidirectional=True, bias=False),
    "lstm_proj_bi2": dict(kind="lstm", layers=2, bidirectional=True, proj_size=4),
    "gru": dict(kind="gru"),
    "gru_bi2_bf": dict(kind="gru", layers=2, bidirectional=True, batch_first=True),
    "gru_3_dropout": dict(kind="gru", layers=3, dropout=0.3),
}


def _recurrent(name: str):
    cfg = dict(CONFIGS[name])
    kind = cfg.pop("kind")

    def build():
        return name, Recurrent(kind, **cfg), _inputs(cfg.get("batch_first", False)), _tagger_loss
    return build


class LSTMClassifier(nn.Module):
    """The issue's model: token ids -> embedding 128 -> 2-layer bidirectional LSTM 256 -> the
    last step's features -> 5 classes."""

    def __init__(self, vocab: int = 1000, embed: int = 128, hidden: int = 256, classes: int = 5):
        super().__init__()
        self.embedding = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, num_layers=2, bidirectional=True, batch_first=True)
        self.fc = nn.Linear(2 * hidden, classes)

    def forward(self, ids):
        out, _ = self.lstm(self.embedding(ids))
        return self.fc(out[:, -1])


def lstm_classifier():
    def make_inputs(batch):
        return torch.randint(0, 1000, (batch, 50))

    def loss(output, ids):
        return F.cross_entropy(output, torch.zeros(ids.shape[0], dtype=torch.long,
                                                   device=output.device))

    return "lstm_classifier", LSTMClassifier(), make_inputs, loss


BUILDERS = {name: _recurrent(name) for name in CONFIGS}
BUILDERS["lstm_classifier"] = lstm_classifier
SMALL = tuple(CONFIGS)


def build(name: str):
    """Build a fresh copy of one model: (name, model, make_inputs, loss_fn)."""
    return BUILDERS[name]()
