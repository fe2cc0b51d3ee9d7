"""The mixer: clips on a timeline -> one track, mixed as an engineer would.

Per clip: resample to the track's rate, remove DC offset, normalise integrated loudness (ITU-R BS.1770, LUFS) to its
target, fit to its span (music loops with a crossfade, other clips are padded or cut), fade in/out
(raised cosine). Then background clips duck under speech (a side-chain keyed by the speech: gain ramps down by
`duck_depth_db` over `duck_attack` seconds ahead of speech, holds through short pauses, and ramps back
over `duck_release`), everything is summed, and a look-ahead true-peak limiter (peaks measured at 4x
oversampling) keeps the track at or below `ceiling_dbtp`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio.functional as AF

from audiollm import audio

CONTROL_RATE = 100  # ducking gain is computed per 10 ms block, then interpolated per sample
DC_CUTOFF = 20.0  # Hz: each clip is high-passed here first
PEAK_BLOCK = 2**16  # samples per FFT of the true-peak meter, so its memory does not grow with the track
PEAK_CONTEXT = 2048  # track samples read each side of a block: its edges interpolate as in one FFT


@dataclass(frozen=True)
class MixSettings:
    """How clips are mixed."""

    duck_depth_db: float = 12.0  # how far background clips drop under speech
    duck_attack: float = 0.15  # seconds to ramp down; starts this long before speech begins
    duck_release: float = 0.6  # seconds to ramp back up after speech (and the hold) ends
    duck_hold: float = 0.3  # seconds of pause in speech that keep the duck down
    duck_threshold_db: float = -45.0  # speech louder than this (dBFS RMS per 10 ms) keys the ducker
    ceiling_dbtp: float = -1.0  # the limiter's true-peak ceiling
    limiter_window: float = 0.005  # seconds: the limiter's look-ahead and its gain ramps
    loop_crossfade: float = 0.05  # seconds of crossfade where a looped music clip repeats


@dataclass
class Clip:
    """One generated element to place: audio (N,) or (C, N) float at `sample_rate`, its span in seconds."""

    audio: np.ndarray
    sample_rate: int
    start: float
    end: float
    volume_db: float  # loudness target, LUFS
    fade_in: float = 0.0
    fade_out: float = 0.0
    role: str = "foreground"  # "speech" keys the ducker, "background" is ducked, "foreground" is neither
    loop: bool = False  # repeat the clip (crossfaded) when it is shorter than its span


def mix(clips: list[Clip], sample_rate: int, settings: MixSettings = MixSettings()) -> np.ndarray:
    """Clips -> float32 track (C, N), N = the latest clip end in samples, C = the most channels of a clip."""
    C = max(np.atleast_2d(c.audio).shape[0] for c in clips)
    N = round(max(c.end for c in clips) * sample_rate)
    layers = {role: np.zeros((C, N), np.float32) for role in ("speech", "background", "foreground")}
    for clip in clips:
        first, last = round(clip.start * sample_rate), round(clip.end * sample_rate)
        layers[clip.role][:, first:last] += prepare(
            clip, sample_rate, last - first, C, settings.loop_crossfade
        )
    gain = duck_gain(layers["speech"], sample_rate, settings)  # (N,)
    track = layers["speech"] + layers["foreground"] + layers["background"] * gain
    return limit(track, sample_rate, settings.ceiling_dbtp, settings.limiter_window)


def prepare(clip: Clip, sample_rate: int, n: int, channels: int, crossfade: float) -> np.ndarray:
    """A clip resampled, normalised to its loudness target (measured on what is heard of it, before any
    padding or looping), fitted to n samples (loops crossfaded over `crossfade` seconds, at most a quarter
    of the clip) and faded: float32 (channels, n)."""
    wav = torch.from_numpy(np.atleast_2d(clip.audio).astype(np.float32))  # (C, M)
    wav = audio.to_channels(audio.resample(wav, clip.sample_rate, sample_rate), channels)[:, :n]
    wav = normalize_loudness(remove_dc(wav, sample_rate).numpy(), sample_rate, clip.volume_db)
    wav = fit_length(wav, n, clip.loop, min(round(crossfade * sample_rate), wav.shape[-1] // 4))
    return fade(wav, round(clip.fade_in * sample_rate), round(clip.fade_out * sample_rate))


def remove_dc(wav: torch.Tensor, sample_rate: int, cutoff: float = DC_CUTOFF) -> torch.Tensor:
    """(C, N) without its mean and below-`cutoff` drift (a 2nd-order high-pass): an offset is inaudible
    but would take headroom, and the K-weighted loudness meter ignores it."""
    if wav.shape[-1] == 0:
        return wav
    w0 = 2 * np.pi * cutoff / sample_rate
    alpha, cos = np.sin(w0) / np.sqrt(2), np.cos(w0)  # Butterworth: Q = 1/sqrt(2)
    b = torch.tensor([(1 + cos) / 2, -(1 + cos), (1 + cos) / 2], dtype=torch.float64)
    a = torch.tensor([1 + alpha, -2 * cos, 1 - alpha], dtype=torch.float64)
    centred = (wav - wav.mean(dim=-1, keepdim=True)).double()
    return AF.lfilter(centred, a, b, clamp=False).float()  # torchaudio's biquad helpers clamp to [-1, 1]


def fit_length(wav: np.ndarray, n: int, loop: bool, crossfade: int) -> np.ndarray:
    """(C, M) -> (C, n): cut, pad with silence, or (loop) repeat with `crossfade` samples of overlap, where
    the copies cross with equal power."""
    C, M = wav.shape
    if M >= n or M == 0 or not loop:
        return np.pad(wav[:, :n], ((0, 0), (0, max(0, n - M))))
    step = M - crossfade  # new samples each repetition adds
    reps = -(-(n - crossfade) // step)
    ramp = np.sin(0.5 * np.pi * (np.arange(crossfade) + 0.5) / max(crossfade, 1))  # 0 -> 1, sin^2 + cos^2 = 1
    out = np.zeros((C, reps * step + crossfade), np.float32)
    for r in range(reps):
        window = np.ones(M, np.float32)
        if r > 0:
            window[:crossfade] = ramp
        if r < reps - 1:
            window[M - crossfade :] *= ramp[::-1]
        out[:, r * step : r * step + M] += wav * window
    return out[:, :n]


def fade(wav: np.ndarray, fade_in: int, fade_out: int) -> np.ndarray:
    """Raised-cosine fades over the first `fade_in` and last `fade_out` samples of (C, N), shortened
    proportionally when together they exceed N."""
    N = wav.shape[-1]
    if fade_in + fade_out > N:
        fade_in, fade_out = fade_in * N // (fade_in + fade_out), fade_out * N // (fade_in + fade_out)
    gain = np.ones(N, np.float32)
    for length, sl in ((fade_in, slice(0, fade_in)), (fade_out, slice(N - fade_out, N))):
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(length) + 0.5) / max(length, 1))  # 0 -> 1
        gain[sl] *= ramp if sl.start == 0 else ramp[::-1]
    return wav * gain


def loudness(wav: np.ndarray, sample_rate: int) -> float:
    """Integrated loudness (LUFS, BS.1770) of (C, N); clips under 0.4 s are measured tiled; -inf if silent."""
    N = wav.shape[-1]
    if N == 0:
        return float("-inf")
    block = round(audio.LOUDNESS_BLOCK * sample_rate) + 1
    return audio.loudness(np.tile(wav, (1, -(-block // N))) if N < block else wav, sample_rate)


def normalize_loudness(wav: np.ndarray, sample_rate: int, target_lufs: float) -> np.ndarray:
    """Scale (C, N) to `target_lufs` integrated loudness; silence stays silent."""
    level = loudness(wav, sample_rate)
    if not np.isfinite(level):
        return wav
    return (wav * 10 ** ((target_lufs - level) / 20)).astype(np.float32)


def duck_gain(key: np.ndarray, sample_rate: int, settings: MixSettings) -> np.ndarray:
    """Side-chain gain (N,) in (0, 1] for background clips: down by the depth wherever `key` (C, N) is
    active, ramped at the attack/release rates; reaches full depth by the time the key starts."""
    N, hop = key.shape[-1], sample_rate // CONTROL_RATE
    blocks = -(-N // hop)
    power = np.pad(key**2, ((0, 0), (0, blocks * hop - N))).reshape(key.shape[0], blocks, hop)  # (C, B, hop)
    rms_db = 10 * np.log10(power.mean(axis=(0, 2)) + 1e-12)  # (B,)
    active = rms_db > settings.duck_threshold_db
    ahead, hold = round(settings.duck_attack * CONTROL_RATE), round(settings.duck_hold * CONTROL_RATE)
    # block b is ducked when speech is active anywhere in [b - hold, b + ahead]
    flags = F.pad(torch.from_numpy(active).float()[None], (hold, ahead))  # (1, B + hold + ahead)
    active = F.max_pool1d(flags, ahead + hold + 1, stride=1)[0].numpy() > 0  # (B,)
    down = settings.duck_depth_db / max(ahead, 1)  # dB per block
    up = settings.duck_depth_db / max(round(settings.duck_release * CONTROL_RATE), 1)
    gain_db = np.zeros(blocks)
    level = 0.0
    for b in range(blocks):
        target = -settings.duck_depth_db if active[b] else 0.0
        level = max(level - down, target) if target < level else min(level + up, target)
        gain_db[b] = level
    centres = (np.arange(blocks) + 0.5) * hop
    return (10 ** (np.interp(np.arange(N), centres, gain_db) / 20)).astype(np.float32)


def true_peaks(wav: np.ndarray, oversample: int = 4, block: int = PEAK_BLOCK) -> np.ndarray:
    """Per-sample true peak (N,): the largest |x| over channels and the `oversample` points from each sample
    to the next, interpolated ideally (band-limited, by zero-padding the spectrum; BS.1770-4 Annex 2 asks
    for at least 4x). Silence is assumed before and after the track, as a player renders it. Measured in
    blocks of `block` samples, each with PEAK_CONTEXT samples of the track around it."""
    C, N = wav.shape
    peaks = np.abs(wav).max(axis=0) if N else np.zeros(0, np.float32)  # (N,)
    for first in range(0, N, block):
        last = min(N, first + block)
        lo, hi = max(0, first - PEAK_CONTEXT), min(N, last + PEAK_CONTEXT)
        # silence past the track's ends, so the spectrum's wrap-around sees its real edges
        x = np.pad(wav[:, lo:hi].astype(np.float64), ((0, 0), (PEAK_CONTEXT - (first - lo), PEAK_CONTEXT - (hi - last))))  # fmt: skip
        M = x.shape[-1]  # (C, M): the block and its context
        spectrum = torch.fft.rfft(torch.from_numpy(x))  # (C, M // 2 + 1)
        if M % 2 == 0:
            spectrum[:, -1] *= 0.5  # the Nyquist bin is shared by +/- frequencies once they are apart
        up = torch.fft.irfft(spectrum, n=oversample * M) * oversample  # (C, oversample * M)
        up = up[:, oversample * PEAK_CONTEXT : oversample * (PEAK_CONTEXT + last - first)]  # the block
        inter = up.abs().reshape(C, last - first, oversample).amax(dim=(0, 2)).numpy()  # (last - first,)
        peaks[first:last] = np.maximum(peaks[first:last], inter)
    return peaks


def limit(wav: np.ndarray, sample_rate: int, ceiling_dbtp: float = -1.0, window: float = 0.005) -> np.ndarray:
    """Look-ahead true-peak limiter on (C, N): the gain each sample needs is spread by a minimum filter and
    smoothed by a moving average of the same span, so it is in place before every peak. Passes repeat while
    the 4x true peak is over the ceiling (gain changes move inter-sample peaks); any rest is removed by one
    overall gain, so the result's true peak is at or below the ceiling."""
    ceiling = 10 ** (ceiling_dbtp / 20)
    span = max(1, round(window * sample_rate))
    out = wav.astype(np.float32)
    if out.shape[-1] == 0:
        return out
    for _ in range(4):
        peaks = true_peaks(out)
        if peaks.max() <= ceiling:
            return out
        need = torch.from_numpy(np.minimum(1.0, 0.999 * ceiling / np.maximum(peaks, 1e-12)))[None]  # (1, N)
        # every sample averaged into gain[n] is a minimum over a window that contains n: gain <= need
        spread = -F.max_pool1d(-need, 2 * span + 1, stride=1, padding=span)
        gain = F.avg_pool1d(spread, 2 * span + 1, stride=1, padding=span, count_include_pad=False)[0]
        out = (out * gain.numpy()).astype(np.float32)
    return (out * min(1.0, 0.999 * ceiling / true_peaks(out).max())).astype(np.float32)
