"""Speed perturbation of a manifest's audio (as Kaldi recipes do with sox `speed`): each clip is resampled so
that it plays `factor` times as fast, tempo and pitch together, and written as a new file with a new record.

An LM trained on codec codes memorises the exact code sequences of a small corpus (the shipped tiny: WER
0.025 on FSDD training takes, 0.33 on the same speakers' test takes); the same words at other speeds give it
other code sequences for the same transcript.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path

from audiollm import audio
from audiollm.data.manifest import Record

RATE_STEP = 100  # resampling rates are rounded to this many Hz: small kernels (16000 -> 17800, not 17778)


def speed_rate(sample_rate: int, factor: float) -> int:
    """The rate to resample a `sample_rate` clip to so that, played at `sample_rate`, it is `factor` times
    as fast (rounded to `RATE_STEP`; the factor actually applied is sample_rate / the result)."""
    return max(RATE_STEP, round(sample_rate / factor / RATE_STEP) * RATE_STEP)


def speed_perturb(
    records: Iterable[Record], factors: Sequence[float], out: str | Path
) -> tuple[list[Record], list[dict]]:
    """Write every record's audio (its [start, start + duration) segment) at each factor under
    `out`/audio/, returning the new records (id `<id>-sp<factor>`, `speed` set, duration of the new file)
    and one reject per unreadable clip ({"id", "audio", "reason"})."""
    bad = [f for f in factors if not 0.5 <= f <= 2.0 or f == 1.0]
    if not factors or bad:
        raise ValueError(f"speed factors must be in [0.5, 2] and not 1, got {list(factors)}")
    folder = Path(out) / "audio"
    made, rejects = [], []
    for record in records:
        try:
            wav, sr = audio.load(record.audio, start=record.start, duration=record.duration)
        except audio.AudioError as e:
            rejects.append({"id": record.id, "audio": record.audio, "reason": e.problem})
            continue
        for factor in factors:
            fast = audio.resample(wav, sr, speed_rate(sr, factor))  # (C, N / factor), played at sr
            name = f"{record.id}-sp{factor:g}"
            path = audio.save(folder / f"{name}.wav", fast, sr)
            made.append(dataclasses.replace(
                record, id=name, audio=str(path.resolve()), start=0.0, duration=round(fast.shape[-1] / sr, 4),
                extra={**record.extra, "speed": factor},
            ))  # fmt: skip
    return made, rejects
