"""Audio in and out of HTTP bodies: uploads read from bytes, responses written as wav, pcm or flac.

Sound leaves as 16-bit little-endian PCM at the codec's sample rate: `pcm` is the bare samples (channels
interleaved), `wav` the same behind a RIFF header, `flac` lossless. A streamed wav's header gives the
largest sizes (0xFFFFFFFF), as streaming encoders do, since the length is not known when it is sent.
"""

from __future__ import annotations

import io
import re
import struct

import numpy as np
import soundfile as sf
import torch

from audiollm import audio

MEDIA_TYPES = {"wav": "audio/wav", "pcm": "audio/pcm", "flac": "audio/flac"}
STREAMABLE = ("wav", "pcm")


class UploadError(ValueError):
    """An upload that cannot be used: `status` 400 (unreadable) or 413 (too long); the message names it."""

    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(message)


def read_upload(data: bytes, name: str, sample_rate: int, channels: int, max_seconds: float) -> torch.Tensor:
    """Uploaded file bytes -> float32 (C, N) at sample_rate with `channels`; the header's duration is
    checked against max_seconds before any sample is decoded."""
    if not data:
        raise UploadError(400, f"{name}: file is empty (0 bytes)")
    try:
        meta = sf.info(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise UploadError(400, f"{name}: unreadable or corrupt audio ({_reason(e)})") from None
    if meta.samplerate <= 0:
        raise UploadError(
            400, f"{name}: sample rate is {meta.samplerate} Hz in the header; it must be positive"
        )
    if meta.frames > max_seconds * meta.samplerate:
        seconds = meta.frames / meta.samplerate
        raise UploadError(413, f"{name}: audio is {seconds:.1f} s long; the limit is {max_seconds:g} s")
    try:
        wav, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise UploadError(400, f"{name}: unreadable or corrupt audio ({_reason(e)})") from None
    if wav.shape[0] == 0:
        raise UploadError(400, f"{name}: contains no audio samples (zero length)")
    if not np.isfinite(wav).all():
        raise UploadError(400, f"{name}: contains NaN or infinite samples")
    x = torch.from_numpy(np.ascontiguousarray(wav.T))  # (C, N)
    return audio.conform(x, sr, sample_rate, channels)


def to_int16(wav: np.ndarray) -> np.ndarray:
    """float (C, N) or (N,) in [-1, 1] -> int16 (N, C), the samples every format sends."""
    x = np.asarray(wav, dtype=np.float32)
    x = x[None] if x.ndim == 1 else x
    return (np.clip(x.T, -1.0, 1.0) * 32767.0).round().astype("<i2")  # (N, C)


def pcm16(wav: np.ndarray) -> bytes:
    """float (C, N) or (N,) in [-1, 1] -> interleaved 16-bit little-endian PCM bytes."""
    return to_int16(wav).tobytes()


def wav_header(sample_rate: int, channels: int, data_bytes: int = 0xFFFFFFFF) -> bytes:
    """A 44-byte RIFF/WAVE header for 16-bit PCM; the default sizes mark a stream of unknown length."""
    riff = 0xFFFFFFFF if data_bytes == 0xFFFFFFFF else 36 + data_bytes
    block = 2 * channels
    fmt = struct.pack("<HHIIHH", 1, channels, sample_rate, sample_rate * block, block, 16)
    return (
        b"RIFF"
        + struct.pack("<I", riff)
        + b"WAVEfmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + struct.pack("<I", data_bytes)
    )


def encode(wav: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    """A whole clip, float (C, N) or (N,), as the body of format fmt (wav, pcm or flac)."""
    x = np.asarray(wav, dtype=np.float32)
    x = x[None] if x.ndim == 1 else x
    if fmt == "pcm":
        return pcm16(x)
    if fmt == "wav":
        body = pcm16(x)
        return wav_header(sample_rate, x.shape[0], len(body)) + body
    buf = io.BytesIO()
    sf.write(buf, to_int16(x), sample_rate, format="FLAC", subtype="PCM_16")  # the same samples, lossless
    return buf.getvalue()


def _reason(e: Exception) -> str:
    """libsndfile's last line, without the in-memory file's repr ("Error opening <_io.BytesIO ...>: ")."""
    text = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
    return re.sub(r"^Error opening <[^>]*>: ", "", text)
