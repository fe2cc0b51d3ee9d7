"""The Codec contract every audio tokenizer implements, and helpers shared by implementations."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

from audiollm.audio import conform


@contextmanager
def quiet_weight_norm() -> Iterator[None]:
    """Build modules of the `encodec` (or `vocos`) package without torch's FutureWarning that
    `torch.nn.utils.weight_norm` is deprecated, printed by every command that made a codec.

    Their convolutions call it; the parametrised replacement renames the weights (weight_g/weight_v), which
    the published checkpoints and ours hold, so the call stays and only this one warning is silenced.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`torch.nn.utils.weight_norm` is deprecated", FutureWarning)
        yield


class CodecError(RuntimeError):
    """A codec that cannot be loaded or used; the message says what to do."""


@runtime_checkable
class Codec(Protocol):
    """Audio <-> discrete codes.

    encode: wav float32 (B, C, N) at `sample_rate` -> codes int64 (B, K, T) in [0, codebook_size).
    decode: codes (B, K, T) -> wav float32 (B, C, N') with N' = T * sample_rate / frame_rate.
    """

    sample_rate: int
    channels: int
    frame_rate: float
    num_codebooks: int
    codebook_size: int

    def encode(self, wav: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor: ...

    def decode(self, codes: torch.Tensor) -> torch.Tensor: ...

    def save_pretrained(self, directory: str | Path) -> Path: ...

    def codebook_vectors(self) -> torch.Tensor: ...


def rvq_vectors(rvq: torch.nn.Module) -> torch.Tensor:
    """(K, C, D) float32: the latent vector each code of each of the K codebooks of an `encodec`
    ResidualVectorQuantization stands for (its codebooks after their output projection)."""
    with torch.no_grad():
        return torch.stack([layer.project_out(layer._codebook.embed) for layer in rvq.layers]).float().cpu()


def bitrate(codec: Codec) -> float:
    """Bits per second of the codes: frame_rate x K x log2(codebook_size)."""
    return codec.frame_rate * codec.num_codebooks * math.log2(codec.codebook_size)


def prepare_input(codec: Codec, wav: torch.Tensor, sample_rate: int | None) -> torch.Tensor:
    """Check `wav` is (B, C, N) float and convert it to the codec's rate and channel count."""
    if wav.dim() != 3:
        raise ValueError(f"encode expects audio shaped (B, C, N), got {tuple(wav.shape)}")
    if not wav.is_floating_point():
        raise ValueError(f"encode expects floating-point audio, got {wav.dtype}")
    sr = codec.sample_rate if sample_rate is None else sample_rate
    return conform(wav, sr, codec.sample_rate, codec.channels)


def check_codes(codec: Codec, codes: torch.Tensor) -> None:
    """Raise ValueError unless codes are int (B, K, T) with K <= num_codebooks and values in range."""
    if codes.dim() != 3 or codes.is_floating_point():
        raise ValueError(
            f"decode expects integer codes shaped (B, K, T), got {codes.dtype} {tuple(codes.shape)}"
        )
    if codes.shape[1] > codec.num_codebooks:
        raise ValueError(f"codes have {codes.shape[1]} codebooks; this codec has {codec.num_codebooks}")
    if codes.numel() and (codes.min() < 0 or codes.max() >= codec.codebook_size):
        raise ValueError(f"codes must lie in [0, {codec.codebook_size})")
