"""Music and sound effects: signal statistics of generated audio beside the manifest's own audio.

No learned-embedding metric (FAD, CLAP score, KL over tagger classes) is computed: those need a
pretrained embedding model, and none can be downloaded here. What is measured instead, per clip:
- duration_s;
- loudness_lufs: ITU-R BS.1770-4 integrated loudness (gated), computed by the pyloudnorm package
  (not implemented here); None for clips shorter than its 0.4 s block or entirely below its gate;
- peak_dbfs, rms_dbfs: sample peak and RMS level in dB relative to full scale;
- silence_ratio: the fraction of 20 ms frames whose RMS is below -60 dBFS;
- clipped_ratio: the fraction of samples (all channels) with |x| >= 0.999;
- centroid_hz, bandwidth_hz, rolloff_hz (85% of the power below it), flatness (geometric over
  arithmetic mean of the power spectrum: ~0 for a tone, ~0.56 for white noise): means over the
  non-silent 1024-sample Hann frames (hop 256) of the mono mix; None when every frame is silent;
- tempo_bpm: librosa's onset-autocorrelation tempo estimate (`librosa.feature.tempo`); None for silence.

With a judge (`SoundJudge`, fitted on labelled clips, e.g. the sound-effect corpus's training split), each
clip is also classified and `class_acc` says how often generated audio is judged the caption's class: the
check that caption words change the kind of sound. The judge's accuracy on the references is its own
ceiling. A music manifest whose records carry `bpm` also gets the correlation of the generated tempo with
the caption's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np
import torch

from audiollm import audio
from audiollm.api import AudioLM
from audiollm.data.manifest import Record
from audiollm.eval.report import Report, mean

SILENCE_DBFS = -60.0
CLIP_LEVEL = 0.999
FRAME_SECONDS = 0.02  # silence frames
N_FFT, HOP = 1024, 256  # spectral frames
ROLLOFF = 0.85
STATS = ("duration_s", "loudness_lufs", "peak_dbfs", "rms_dbfs", "silence_ratio", "clipped_ratio",
         "centroid_hz", "bandwidth_hz", "rolloff_hz", "flatness", "tempo_bpm")  # fmt: skip
JUDGE_RATE, JUDGE_MELS = 16000, 64


def audio_stats(wav: np.ndarray | torch.Tensor, sample_rate: int) -> dict[str, float | None]:
    """Statistics (see the module docstring) of float audio (N,) or (C, N) in [-1, 1]."""
    x = torch.as_tensor(np.asarray(wav, dtype=np.float32)).double()
    x = x if x.dim() == 2 else x[None]  # (C, N)
    mono = x.mean(dim=0)  # (N,)
    silence = 10 ** (SILENCE_DBFS / 20)
    frame = max(1, round(FRAME_SECONDS * sample_rate))
    frames = mono[: mono.numel() // frame * frame].reshape(-1, frame)  # (T, frame)
    level = frames.square().mean(dim=1).sqrt()  # (T,)
    return {
        "duration_s": x.shape[-1] / sample_rate,
        "loudness_lufs": loudness(x, sample_rate),
        "peak_dbfs": _db(float(x.abs().max())) if x.numel() else None,
        "rms_dbfs": _db(float(x.square().mean().sqrt())) if x.numel() else None,
        "silence_ratio": float((level < silence).double().mean()) if len(level) else None,
        "clipped_ratio": float((x.abs() >= CLIP_LEVEL).double().mean()) if x.numel() else None,
        **spectral_stats(mono, sample_rate, silence),
        "tempo_bpm": tempo(mono, sample_rate) if bool((level >= silence).any()) else None,
    }


def tempo(mono: torch.Tensor, sample_rate: int) -> float:
    """Global tempo estimate (beats per minute) of mono audio (N,) by `librosa.feature.tempo`."""
    import librosa

    return float(librosa.feature.tempo(y=mono.numpy().astype(np.float32), sr=sample_rate)[0])


class SoundJudge:
    """A nearest-centroid sound classifier on log-mel statistics (64 bands at 16 kHz: each band's mean and
    standard deviation over time, standardised by the training clips'). No pretrained tagger can be
    downloaded here; on synthetic sound classes this simple judge is enough, and its accuracy on the
    reference clips is reported beside the generated clips'."""

    def __init__(self, records: Sequence[Record]):
        """Fit on records whose extras carry a `label` (at least two classes)."""
        labelled = [r for r in records if r.extra.get("label")]
        labels = sorted({r.extra["label"] for r in labelled})
        if len(labels) < 2:
            raise ValueError(f"a sound judge needs labelled clips of >= 2 classes ('label'), got {labels}")
        feats = np.stack(
            [self.features(*audio.load(r.audio, start=r.start, duration=r.duration)) for r in labelled]
        )
        self.mean, self.std = feats.mean(0), feats.std(0) + 1e-6
        z = (feats - self.mean) / self.std
        self.labels = labels
        self.centroids = np.stack([z[[r.extra["label"] == c for r in labelled]].mean(0) for c in labels])

    @staticmethod
    def features(wav: np.ndarray | torch.Tensor, sample_rate: int) -> np.ndarray:
        """(2 * 64,) float64: per-band mean and std of the log-mel spectrogram of float audio (N,) or (C, N)."""
        import librosa

        x = np.asarray(wav, dtype=np.float32)
        mono = x.mean(0) if x.ndim == 2 else x
        mono = (
            librosa.resample(mono, orig_sr=sample_rate, target_sr=JUDGE_RATE)
            if sample_rate != JUDGE_RATE
            else mono
        )
        mel = librosa.feature.melspectrogram(y=mono, sr=JUDGE_RATE, n_mels=JUDGE_MELS)
        logmel = np.log(mel + 1e-6)
        return np.concatenate([logmel.mean(1), logmel.std(1)]).astype(np.float64)

    def classify(self, wav: np.ndarray | torch.Tensor, sample_rate: int) -> str:
        """The label whose centroid is nearest to the clip's standardised features."""
        z = (self.features(wav, sample_rate) - self.mean) / self.std
        return self.labels[int(np.argmin(((self.centroids - z) ** 2).sum(1)))]


def loudness(x: torch.Tensor, sample_rate: int) -> float | None:
    """BS.1770-4 integrated loudness (LUFS) of (C, N) audio; None where undefined."""
    value = audio.loudness(x, sample_rate)
    return value if math.isfinite(value) else None


def spectral_stats(mono: torch.Tensor, sample_rate: int, silence: float) -> dict[str, float | None]:
    """Centroid, bandwidth, 85% roll-off (Hz) and flatness, averaged over frames with RMS >= `silence`."""
    names = ("centroid_hz", "bandwidth_hz", "rolloff_hz", "flatness")
    padded = torch.nn.functional.pad(mono, (0, max(0, N_FFT - mono.numel())))
    frames = padded.unfold(0, N_FFT, HOP)  # (T, N_FFT)
    frames = frames[frames.square().mean(dim=1).sqrt() >= silence]
    if len(frames) == 0:
        return dict.fromkeys(names)
    power = torch.fft.rfft(frames * torch.hann_window(N_FFT, dtype=frames.dtype)).abs().square()  # (T, F)
    power = power + 1e-20
    freqs = torch.fft.rfftfreq(N_FFT, 1 / sample_rate, dtype=power.dtype)  # (F,)
    weights = power / power.sum(dim=1, keepdim=True)  # (T, F)
    centroid = weights @ freqs  # (T,)
    bandwidth = (weights * (freqs - centroid[:, None]).square()).sum(dim=1).sqrt()
    first_above = (weights.cumsum(dim=1) >= ROLLOFF).double().argmax(dim=1)  # (T,)
    flatness = power.log().mean(dim=1).exp() / power.mean(dim=1)
    values = (centroid, bandwidth, freqs[first_above], flatness)
    return {name: float(v.mean()) for name, v in zip(names, values, strict=True)}


def evaluate_generation(
    lm: AudioLM,
    records: Sequence[Record],
    task: str,
    seed: int = 0,
    seconds: float | None = None,
    judge: SoundJudge | None = None,
) -> Report:
    """Generate `task` ("music" or "sfx") audio for each `record.caption`, `seconds` long (default: as long as
    the record's own audio), and report the statistics of both; the generated row's RTF is model seconds per
    audio second. With `judge`, both are classified and `class_acc` compares them with the record's label."""
    make = {"music": lm.generate_music, "sfx": lm.generate_sfx}[task]
    items, elapsed = [], 0.0
    for r in records:
        ref, ref_sr = audio.load(r.audio, start=r.start, duration=r.duration)
        started = time.perf_counter()
        wav, sr = make(r.caption, duration=seconds or ref.shape[-1] / ref_sr, seed=seed)
        elapsed += time.perf_counter() - started
        item = {"id": r.id, "caption": r.caption, "generated": audio_stats(wav, sr)}
        item["reference"] = audio_stats(ref, ref_sr)
        if judge is not None:
            item |= {"label": r.extra.get("label"), "judged": judge.classify(wav, sr)}
            item["judged_reference"] = judge.classify(ref, ref_sr)
        if "bpm" in r.extra:
            item["caption_bpm"] = r.extra["bpm"]
        items.append(item)
    summary = []
    for system in ("generated", "reference"):
        row = {k: mean([i[system][k] for i in items]) for k in STATS}
        audio_seconds = sum(i[system]["duration_s"] for i in items)
        rtf = elapsed / audio_seconds if system == "generated" and audio_seconds > 0 else None
        if judge is not None:
            key = "judged" if system == "generated" else "judged_reference"
            row["class_acc"] = mean([float(i[key] == i["label"]) for i in items if i["label"]])
        summary.append({"system": system, **row, "rtf": rtf})
    notes = [
        "no embedding metric (FAD, CLAP): no pretrained embedding model can be downloaded here",
        "loudness: ITU-R BS.1770-4 integrated loudness from pyloudnorm; means skip undefined values",
    ]
    paired = [(i["caption_bpm"], i["generated"]["tempo_bpm"]) for i in items if "caption_bpm" in i]
    paired = [(a, b) for a, b in paired if b is not None]
    if len(paired) >= 3 and len({a for a, _ in paired}) > 1:
        r = float(np.corrcoef(np.array(paired, dtype=float).T)[0, 1])
        notes.append(
            f"tempo: correlation of the generated tempo with the caption's bpm {r:.2f} ({len(paired)} clips)"
        )
    if judge is not None:
        notes.append(f"class_acc: a nearest-centroid log-mel judge over {len(judge.labels)} classes")
    return Report(task, summary, items, notes, settings={"seed": seed, "seconds": seconds})


def _db(amplitude: float) -> float | None:
    """20 log10 of an amplitude (dBFS), None for silence."""
    return 20 * math.log10(amplitude) if amplitude > 0 else None
