"""Reconstruction and adversarial losses for training codecs, and the log-mel transform metrics reuse.

All losses take wav float32 (B, C, N): `estimate` then `target`, and return a scalar tensor.
"""

from __future__ import annotations

import torch
import torchaudio
from torch import nn
from torch.nn import functional as F

EPS = 1e-5


class LogMel(nn.Module):
    """wav (B, C, N) -> natural-log mel spectrogram (B, C, n_mels, frames), floored at 1e-5."""

    def __init__(self, sample_rate: int, n_fft: int = 1024, hop_length: int = 256, n_mels: int = 80):
        super().__init__()
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate,
            n_fft=n_fft,
            hop_length=hop_length,
            n_mels=n_mels,
            power=1.0,
            center=True,
            norm="slaney",
            mel_scale="slaney",
        )

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return self.mel(wav).clamp_min(EPS).log()


class MultiScaleMelLoss(nn.Module):
    """Mean L1 distance of log-mel spectrograms at windows 2^i, i in [min_log2, max_log2].

    Hop = window / 4; min(n_mels, window / 8) mel bands, so small windows have no empty bands.
    """

    def __init__(self, sample_rate: int, min_log2: int = 7, max_log2: int = 11, n_mels: int = 64):
        super().__init__()
        self.scales = nn.ModuleList(
            LogMel(sample_rate, n_fft=2**i, hop_length=2**i // 4, n_mels=min(n_mels, 2 ** (i - 3)))
            for i in range(min_log2, max_log2 + 1)
        )

    def forward(self, estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.stack([F.l1_loss(mel(estimate), mel(target)) for mel in self.scales]).mean()


class MultiResolutionSTFTLoss(nn.Module):
    """Spectral convergence + L1 log-magnitude distance, averaged over STFT resolutions (n_fft, hop)."""

    def __init__(self, resolutions: tuple[tuple[int, int], ...] = ((512, 128), (1024, 256), (2048, 512))):
        super().__init__()
        self.resolutions = resolutions
        for n_fft, _ in resolutions:
            self.register_buffer(f"window_{n_fft}", torch.hann_window(n_fft), persistent=False)

    def magnitude(self, wav: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
        """wav (B, C, N) -> |STFT| (B*C, n_fft // 2 + 1, frames)."""
        window = getattr(self, f"window_{n_fft}")
        spec = torch.stft(wav.flatten(0, 1), n_fft, hop, window=window, return_complex=True)  # (B*C, F, T)
        return spec.abs().clamp_min(EPS)

    def forward(self, estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = estimate.new_zeros(())
        for n_fft, hop in self.resolutions:
            est, ref = self.magnitude(estimate, n_fft, hop), self.magnitude(target, n_fft, hop)
            convergence = torch.linalg.norm(ref - est) / torch.linalg.norm(ref)
            total = total + convergence + F.l1_loss(est.log(), ref.log())
        return total / len(self.resolutions)


def discriminator_hinge_loss(
    real_logits: list[torch.Tensor], fake_logits: list[torch.Tensor]
) -> torch.Tensor:
    """Hinge loss of a multi-scale discriminator: mean over scales of relu(1 - real) + relu(1 + fake)."""
    losses = [
        F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real_logits, fake_logits, strict=True)
    ]
    return torch.stack(losses).mean()


def generator_adversarial_loss(fake_logits: list[torch.Tensor]) -> torch.Tensor:
    """Hinge generator loss: mean over scales of relu(1 - fake)."""
    return torch.stack([F.relu(1 - f).mean() for f in fake_logits]).mean()


def feature_matching_loss(
    real_fmaps: list[list[torch.Tensor]], fake_fmaps: list[list[torch.Tensor]]
) -> torch.Tensor:
    """Mean over scales and layers of L1(fake, real) / mean |real| (real features detached)."""
    losses = [
        F.l1_loss(fake, real.detach()) / real.detach().abs().mean().clamp_min(EPS)
        for real_scale, fake_scale in zip(real_fmaps, fake_fmaps, strict=True)
        for real, fake in zip(real_scale, fake_scale, strict=True)
    ]
    return torch.stack(losses).mean()
