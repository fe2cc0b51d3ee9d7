"""Codec quality: log-mel distance, STOI, SI-SNR, pitch, intelligibility and bitrate, for any `Codec` and for
an Opus reference; and how much of each codebook a codec uses (perplexity).

Signals are float mono (N,) tensors at one sample rate; `reference` first, `estimate` second.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path

import numpy as np
import torch
from pystoi import stoi as _stoi

from audiollm import audio
from audiollm.codecs.base import Codec, bitrate
from audiollm.codecs.losses import LogMel
from audiollm.data.manifest import Record
from audiollm.data.phones import IGNORE, PHONES, frame_labels, record_phones

# A round trip: reference (N,) -> (estimate (N,), kilobits per second it cost).
RoundTrip = Callable[[torch.Tensor], tuple[torch.Tensor, float]]


@cache
def _log_mel(sample_rate: int) -> LogMel:
    return LogMel(sample_rate, n_fft=1024, hop_length=256, n_mels=80)


def log_mel_distance(reference: torch.Tensor, estimate: torch.Tensor, sample_rate: int) -> float:
    """Mean absolute difference of natural-log 80-band mel spectrograms (window 1024, hop 256); 0 is identical."""
    mel = _log_mel(sample_rate)
    return float((mel(reference) - mel(estimate)).abs().mean())


def stoi(reference: torch.Tensor, estimate: torch.Tensor, sample_rate: int) -> float:
    """Short-time objective intelligibility (pystoi, classic STOI) in [0, 1]; 1 is identical."""
    return float(_stoi(reference.double().numpy(), estimate.double().numpy(), sample_rate, extended=False))


def si_snr(reference: torch.Tensor, estimate: torch.Tensor) -> float:
    """Scale-invariant signal-to-noise ratio in dB (both signals made zero-mean)."""
    ref = reference.double() - reference.double().mean()
    est = estimate.double() - estimate.double().mean()
    target = (est @ ref) / (ref @ ref).clamp_min(1e-12) * ref
    noise = est - target
    return float(10 * torch.log10((target @ target).clamp_min(1e-12) / (noise @ noise).clamp_min(1e-12)))


def codec_round_trip(codec: Codec) -> RoundTrip:
    """Encode and decode mono audio at the codec's rate; costs `bitrate(codec)`."""

    def run(wav: torch.Tensor) -> tuple[torch.Tensor, float]:
        out = codec.decode(codec.encode(wav[None, None]))  # (1, 1, N')
        return out[0, 0, : wav.shape[-1]].cpu().float(), bitrate(codec) / 1000

    return run


def opus_round_trip(kbps: float, sample_rate: int) -> RoundTrip:
    """Encode with ffmpeg's libopus (`-b:a {kbps}k -application voip`) and decode back to `sample_rate`.

    The cost is measured from the Opus packets written (ffprobe), not the requested bitrate.
    """

    def run(wav: torch.Tensor) -> tuple[torch.Tensor, float]:
        with tempfile.TemporaryDirectory() as tmp:
            src, coded, dst = Path(tmp, "in.wav"), Path(tmp, "coded.opus"), Path(tmp, "out.wav")
            audio.save(src, wav[None], sample_rate)
            _run(
                ["ffmpeg", "-i", src, "-c:a", "libopus", "-b:a", f"{kbps:g}k", "-application", "voip", coded]
            )
            _run(["ffmpeg", "-i", coded, "-ar", sample_rate, "-ac", 1, dst])
            sizes = _run(
                ["ffprobe", "-select_streams", "a:0", "-show_entries", "packet=size", "-of", "csv=p=0", coded]
            )
            decoded, _ = audio.load(dst)
        n = wav.shape[-1]
        out = torch.nn.functional.pad(decoded[0, :n], (0, max(0, n - decoded.shape[-1])))
        bits = 8 * sum(int(line.split(",")[0]) for line in sizes.split())
        return out, bits / (n / sample_rate) / 1000

    return run


def pitch_agreement(reference: torch.Tensor, estimate: torch.Tensor, sample_rate: int) -> tuple[float, float]:
    """librosa.pyin (60-500 Hz) on both: (median relative F0 error over frames voiced in both, or nan when none;
    fraction of frames whose voiced/unvoiced decision agrees)."""
    import librosa  # imported here: its first call compiles numba code for ~25 s

    tracks = [
        librosa.pyin(x.double().numpy(), fmin=60.0, fmax=500.0, sr=sample_rate, frame_length=1024)[:2]
        for x in (reference, estimate)
    ]
    (f_ref, v_ref), (f_est, v_est) = tracks
    both = v_ref & v_est
    error = float(np.median(np.abs(f_est[both] - f_ref[both]) / f_ref[both])) if both.any() else float("nan")
    return error, float((v_ref == v_est).mean())


def identity_round_trip(wav: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The original audio, unchanged (the reference row of a comparison); costs nan kbps."""
    return wav, float("nan")


def evaluate(
    round_trip: RoundTrip,
    files: Sequence[str | Path],
    sample_rate: int,
    texts: Sequence[str | None] | None = None,
    pitch: bool = True,
) -> dict[str, float]:
    """Means over mono `files` at `sample_rate` of log_mel_distance, stoi, si_snr, kbps, and with `pitch`
    f0_error and voicing (`pitch_agreement`, slow); with `texts`, also pocketsphinx's corpus WER on the
    decoded audio of the rows with text."""
    from audiollm.eval.asr import error_rates
    from audiollm.eval.tts import Recognizer

    if not files:
        raise ValueError("evaluate needs at least one audio file")
    texts = texts or [None] * len(files)
    judge = Recognizer() if any(texts) else None
    rows, refs, hyps = [], [], []
    for path, text in zip(files, texts, strict=True):
        wav, _ = audio.load(path, sample_rate, channels=1)
        ref = wav[0]
        est, kbps = round_trip(ref)
        scores = [log_mel_distance(ref, est, sample_rate), stoi(ref, est, sample_rate), si_snr(ref, est)]
        f0 = pitch_agreement(ref, est, sample_rate) if pitch else (float("nan"), float("nan"))
        rows.append([*scores, kbps, *f0])
        if text:
            refs.append(text)
            hyps.append(judge(est, sample_rate))
    columns = np.asarray(rows, dtype=float).T  # (measures, files); nan where a measure is undefined
    means = [float(c[~np.isnan(c)].mean()) if (~np.isnan(c)).any() else float("nan") for c in columns]
    names = ("log_mel_distance", "stoi", "si_snr", "kbps", "f0_error", "voicing")
    result = {**dict(zip(names, means, strict=True)), "files": len(rows)}
    if refs:
        result["wer"] = error_rates(refs, hyps)["wer"]
    return result


@torch.no_grad()
def codebook_perplexity(codec: Codec, files: Sequence[str | Path]) -> list[float]:
    """exp(entropy) of each codebook's code distribution over all frames of `files` (at most codebook_size;
    a codebook that always emits one code scores 1)."""
    counts = torch.zeros(codec.num_codebooks, codec.codebook_size)
    for path in files:
        wav, _ = audio.load(path, codec.sample_rate, channels=codec.channels)
        codes = codec.encode(wav[None])[0].cpu()  # (K, T)
        for k, row in enumerate(codes):
            counts[k] += torch.bincount(row, minlength=codec.codebook_size).float()
    p = counts / counts.sum(1, keepdim=True).clamp_min(1)
    entropy = -(p * p.clamp_min(1e-12).log()).sum(1)
    return entropy.exp().tolist()


@torch.no_grad()
def phone_probe(
    codec: Codec, fit: Sequence[Record], test: Sequence[Record], codebook: int = 0
) -> dict[str, float]:
    """How well one codebook's codes name the phone spoken (records with `phones`, `audiollm.data.phones`).

    Each code is mapped to the phone it most often coincides with on the frames of `fit`; returns that
    map's frame accuracy on `test` (`accuracy`), the accuracy of always guessing `test`'s commonest
    phone (`chance`), and the mutual information between code and phone on `test` in bits (`bits`).
    """
    tables = []
    for records in (fit, test):
        joint = torch.zeros(codec.codebook_size, len(PHONES))
        for rec in records:
            wav, _ = audio.load(rec.audio, codec.sample_rate, channels=codec.channels)
            codes = codec.encode(wav[None])[0, codebook].cpu()  # (T,)
            labels = frame_labels(record_phones(rec, rec.audio), 0.0, codes.shape[0], codec.frame_rate)
            known = labels != IGNORE
            joint.index_put_((codes[known], labels[known]), torch.ones(int(known.sum())), accumulate=True)
        tables.append(joint)
    fitted, joint = tables
    total = joint.sum()
    best = fitted.argmax(1)  # code -> phone (a code never seen in `fit` maps to phone 0, silence)
    p = joint / total
    outer = p.sum(1, keepdim=True) * p.sum(0, keepdim=True)
    mi = (p * (p / outer.clamp_min(1e-12)).clamp_min(1e-12).log2()).sum()
    return {
        "accuracy": float(joint.gather(1, best[:, None]).sum() / total),
        "chance": float(joint.sum(0).max() / total),
        "bits": float(mi),
    }


def evaluate_codec(
    codec: Codec, files: Sequence[str | Path], texts: Sequence[str | None] | None = None
) -> dict[str, float]:
    """Round-trip `files` through `codec` and score them with `evaluate`."""
    return evaluate(codec_round_trip(codec), files, codec.sample_rate, texts)


def evaluate_opus(
    kbps: float,
    files: Sequence[str | Path],
    sample_rate: int = 16000,
    texts: Sequence[str | None] | None = None,
) -> dict[str, float]:
    """The same for Opus (ffmpeg libopus, voip) asked for `kbps`; `kbps` in the result is measured."""
    return evaluate(opus_round_trip(kbps, sample_rate), files, sample_rate, texts)


def _run(cmd: list) -> str:
    """Run an ffmpeg / ffprobe command quietly (arguments made strings); return its stdout."""
    cmd = [str(c) for c in cmd]
    try:
        done = subprocess.run([cmd[0], "-v", "error", *cmd[1:]], capture_output=True, text=True, check=True)
    except FileNotFoundError:
        raise RuntimeError(f"{cmd[0]} not found: install ffmpeg (apt-get install ffmpeg)") from None
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"{cmd[0]} failed on {cmd[-1]}: {e.stderr.strip()[-500:]}") from None
    return done.stdout
