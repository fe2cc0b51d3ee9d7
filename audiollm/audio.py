"""Audio I/O: load, save, resample, mix down. Every error names the file and the problem.

Tensors are float32 `[C, N]` (channels, samples) in [-1, 1] unless said otherwise.
Reading goes through soundfile (libsndfile: wav, flac, ogg, mp3, NIST SPHERE);
resampling through `torchaudio.functional.resample`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from audiollm.files import atomic_path

WRITABLE_FORMATS = {".wav": "WAV", ".flac": "FLAC"}


class AudioError(ValueError):
    """Audio that cannot be used; the message starts with the file's path."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


LOUDNESS_BLOCK = 0.4  # seconds: the gating block of ITU-R BS.1770
UNKNOWN_LENGTH = 2**63 - 1  # libsndfile's frame count for a stream whose header leaves it open (FLAC total 0)
_BLOCK = 1 << 16  # frames per read when the length must be found by decoding


def info(path: str | Path) -> sf._SoundFileInfo:
    """Header of an audio file (sample rate, channels, frames), checked for a usable sample rate."""
    path = Path(path)
    if not path.exists():
        raise AudioError(path, "file not found")
    if path.is_dir():
        raise AudioError(path, "is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(path, "file is empty (0 bytes)")
    try:
        meta = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        if _wav_header_rate(path) == 0:  # libsndfile refuses these with an opaque message
            raise AudioError(path, "sample rate is 0 Hz in the header; it must be positive") from None
        raise AudioError(path, f"unreadable or corrupt audio ({_reason(e)})") from None
    if meta.samplerate <= 0:
        raise AudioError(path, f"sample rate is {meta.samplerate} Hz in the header; it must be positive")
    if meta.frames == UNKNOWN_LENGTH:  # a valid stream whose header does not say its length
        meta.frames = _read(path, 0, -1).shape[0]
        meta.duration = meta.frames / meta.samplerate
    return meta


def load(
    path: str | Path,
    sample_rate: int | None = None,
    channels: int | None = None,
    start: float = 0.0,
    duration: float | None = None,
) -> tuple[torch.Tensor, int]:
    """Read `path` into float32 `[C, N]` and its sample rate.

    sample_rate: resample to this rate (None keeps the file's). channels: 1 (mix down to mono),
    2 (duplicate mono), or None (as stored). start/duration (seconds) read a segment.
    Raises AudioError for a missing, empty, corrupt, silent-length or non-finite file.
    """
    meta = info(path)
    sr = meta.samplerate
    first = round(start * sr)
    frames = -1 if duration is None else round(duration * sr)
    data = _read(path, first, frames)
    if data.shape[0] == 0:
        where = "" if first == 0 and duration is None else f" in the segment from {start:.3f}s"
        raise AudioError(path, f"contains no audio samples{where} (zero length)")
    if not np.isfinite(data).all():
        raise AudioError(path, "contains NaN or infinite samples")
    wav = torch.from_numpy(np.ascontiguousarray(data.T))  # (C, N)
    if channels is not None:
        wav = to_channels(wav, channels)
    if sample_rate is not None and sample_rate != sr:
        wav = resample(wav, sr, sample_rate)
        sr = sample_rate
    return wav, sr


def _read(path: Path, first: int, frames: int) -> np.ndarray:
    """float32 (N, C) samples [first, first + frames) (frames -1: to the end), also from a stream whose
    header leaves its length unknown (read block by block until the decoder stops)."""
    try:
        with sf.SoundFile(str(path)) as f:
            if f.frames != UNKNOWN_LENGTH:
                f.seek(min(first, f.frames))
                return f.read(frames, dtype="float32", always_2d=True)
            return _read_open_length(f, first, frames)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise AudioError(path, f"unreadable or corrupt audio ({_reason(e)})") from None


def _read_open_length(f: sf.SoundFile, first: int, frames: int) -> np.ndarray:
    """Decode a stream of unknown length block by block through libsndfile's own sf_readf_float.

    soundfile's `read` re-seeks after every block, which libsndfile refuses once such a stream ends
    ("psf_fseek() failed"), although it decodes every sample; so this calls the C function itself.
    """
    end = first + frames if frames >= 0 else UNKNOWN_LENGTH
    blocks, at = [], 0
    while at < end:
        block = np.empty((min(_BLOCK, end - at), f.channels), np.float32)  # (n, C)
        n = sf._snd.sf_readf_float(f._file, sf._ffi.cast("float *", block.ctypes.data), len(block))
        if sf._snd.sf_error(f._file):
            raise RuntimeError(sf._ffi.string(sf._snd.sf_strerror(f._file)).decode(errors="replace"))
        blocks.append(block[max(0, first - at) : n])
        at += n
        if n < len(block):
            break
    return np.concatenate(blocks) if blocks else np.zeros((0, f.channels), np.float32)


def save(path: str | Path, wav: torch.Tensor | np.ndarray, sample_rate: int) -> Path:
    """Write float `[C, N]` or `[N]` audio to .wav (16-bit PCM) or .flac, atomically; returns the path."""
    path = Path(path)
    fmt = WRITABLE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise AudioError(path, f"cannot write '{path.suffix}'; use one of {sorted(WRITABLE_FORMATS)}")
    if sample_rate <= 0:
        raise AudioError(path, f"sample rate must be positive, got {sample_rate}")
    data = (
        wav.detach().float().cpu().numpy() if isinstance(wav, torch.Tensor) else np.asarray(wav, np.float32)
    )
    if data.ndim == 1:
        data = data[None]
    if data.ndim != 2:
        raise AudioError(path, f"expected audio shaped [C, N] or [N], got {tuple(data.shape)}")
    with atomic_path(path) as tmp:
        sf.write(str(tmp), np.clip(data.T, -1.0, 1.0), sample_rate, format=fmt, subtype="PCM_16")
    return path


def resample(wav: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """Band-limited resampling of `[..., N]` float audio; a no-op when the rates match."""
    if orig_sr == new_sr or wav.shape[-1] == 0:  # torchaudio cannot reshape an empty signal
        return wav
    return AF.resample(wav, orig_sr, new_sr)


def to_channels(wav: torch.Tensor, channels: int) -> torch.Tensor:
    """Convert `[..., C, N]` to `channels` channels: average down to mono, or repeat mono up."""
    C = wav.shape[-2]
    if channels == C:
        return wav
    if channels == 1:
        return wav.mean(dim=-2, keepdim=True)
    if C == 1:
        return wav.expand(*wav.shape[:-2], channels, wav.shape[-1]).contiguous()
    raise ValueError(f"cannot convert {C} channels to {channels}")


def conform(wav: torch.Tensor, sample_rate: int, target_rate: int, channels: int) -> torch.Tensor:
    """Bring `[B, C, N]` audio at `sample_rate` to `target_rate` and `channels` (what a codec expects)."""
    return resample(to_channels(wav, channels), sample_rate, target_rate)


def loudness(wav: torch.Tensor | np.ndarray, sample_rate: int) -> float:
    """BS.1770-4 integrated loudness (LUFS) of (C, N) audio, via pyloudnorm; -inf where it is undefined
    (silence, every block gated away, or shorter than one 0.4 s gating block)."""
    import pyloudnorm  # imports scipy: only when a loudness is measured

    x = np.asarray(wav, dtype=np.float64)
    if x.shape[-1] <= round(LOUDNESS_BLOCK * sample_rate) or not np.any(x):
        return float("-inf")
    with np.errstate(divide="ignore"):  # all blocks gated away: log10(0)
        return float(pyloudnorm.Meter(sample_rate).integrated_loudness(x.T))  # (N, C) for pyloudnorm


def _wav_header_rate(path: Path) -> int | None:
    """The sample rate in a RIFF/WAVE 'fmt ' chunk, or None when the file is not such a WAV."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    at = head.find(b"fmt ", 12)
    if at < 0 or len(head) < at + 16:
        return None
    return int.from_bytes(head[at + 12 : at + 16], "little")


def _reason(e: Exception) -> str:
    return str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
