"""A keyword spotter on a log-mel spectrogram computed inside the model, as torchaudio users do
without torchaudio: torch.stft with a Hann window (a buffer), the power spectrum, a fixed mel
filterbank (a buffer) as a matmul, log, then a small CNN."""

import torch
from torch import nn
import torch.nn.functional as F

N_FFT, HOP, MELS, SAMPLES = 64, 32, 12, 1024


class MelCNN(nn.Module):
    def __init__(self, classes=5):
        super().__init__()
        self.register_buffer("window", torch.hann_window(N_FFT))
        self.register_buffer("fbank", torch.rand(N_FFT // 2 + 1, MELS))
        self.cnn = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                 nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, classes))

    def forward(self, wave):  # (B, SAMPLES)
        spec = torch.stft(wave, N_FFT, HOP, window=self.window, return_complex=True)
        power = spec.abs().pow(2).transpose(1, 2)  # (B, frames, freqs)
        mel = torch.log(power @ self.fbank + 1e-6)
        return self.cnn(mel.unsqueeze(1))


def example_inputs(batch_size):
    return torch.randn(batch_size, SAMPLES)


def loss(logits, wave):
    return F.cross_entropy(logits, torch.zeros(wave.shape[0], dtype=torch.long))
