"""Offline sound-effects corpus: procedurally synthesised, labelled sounds at 16 kHz mono, with captions.

Ten kinds, each drawn with its own parameters from `seed` and captioned from them: rain,
wind, beeps, clicks, bell, sweep, knock, siren, engine, heartbeat. A sound's split comes
from a stable hash of its id (about 90/5/5 train/valid/test). `minutes` bounds the audio.

With `src_dir` (a folder laid out like shared/data/sound_events: audio files plus `labels.tsv`
with file, label and description), its recordings are added as `CLIP_SECONDS` segments
referenced in place, captioned from the label, all in train. Files:
`out_dir/audio/<kind>/<id>.wav`; records carry `label` (the kind). Outputs: see `data_prep.common`.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from audiollm.audio import save
from audiollm.data.manifest import Record
from data_prep.common import (
    builder_fingerprint,
    finish,
    finished,
    hash_split,
    probe,
    probe_all,
    produce,
    recordings,
)

SAMPLE_RATE = 16000
CLIP_SECONDS = 10.0
COUNTS = ("once", "twice", "three times", "four times", "five times")
NUMBERS = ("one", "two", "three", "four", "five")


@dataclass(frozen=True)
class Sound:
    """One synthesised sound: its kind, drawn parameters, caption and the seed of its noise."""

    id: str
    path: Path
    kind: str
    params: dict = field(hash=False)
    caption: str
    noise_seed: int
    split: str


def prepare_offline_sfx(
    src_dir: str | Path | None, out_dir: str | Path, minutes: float = 10.0, seed: int = 0
) -> Path:
    """Synthesise about `minutes` of labelled sounds (plus the recordings in `src_dir`); returns train.jsonl."""
    out = Path(out_dir).expanduser().resolve()
    src = Path(src_dir).expanduser().resolve() if src_dir is not None else None
    fingerprint = builder_fingerprint("offline-sfx", src, minutes, seed)
    done = finished(out, fingerprint)
    if done is not None:
        return done
    made, rejects = produce(plan(out, seed), make_sound, minutes * 60, 1, "offline-sfx")
    records = [
        Record(
            id=s.id,
            audio=str(s.path.relative_to(out)),
            caption=s.caption,
            duration=round(seconds, 3),
            split=s.split,
            extra={"label": s.kind, "params": s.params},
        )
        for s, seconds in made
    ]
    if src is not None:
        real, real_rejects = probe_all(
            recordings(src, "labels.tsv", ("label",), _label_caption, CLIP_SECONDS), "sound events"
        )
        records, rejects = records + real, rejects + real_rejects
    return finish(out, records, rejects, fingerprint)


def plan(out: Path, seed: int) -> Iterator[Sound]:
    """An endless sequence of sounds: kinds in turn (shuffled each round), parameters drawn from `seed`."""
    rng = random.Random(seed)
    kinds = sorted(KINDS)
    while True:
        rng.shuffle(kinds)
        for kind in kinds:
            params, caption = KINDS[kind][0](rng)
            noise_seed = rng.getrandbits(32)
            uid = f"{kind}-{hashlib.sha1(f'{kind}|{sorted(params.items())}|{noise_seed}'.encode()).hexdigest()[:12]}"
            yield Sound(
                uid, out / "audio" / kind / f"{uid}.wav", kind, params, caption, noise_seed, hash_split(uid)
            )


def make_sound(s: Sound) -> float:
    """Synthesise `s` into `s.path` (kept if already there); returns its seconds."""
    if not s.path.exists():
        wav = KINDS[s.kind][1](s.params, np.random.default_rng(s.noise_seed))  # (N,) float
        save(s.path, (0.8 * wav / max(float(np.abs(wav).max()), 1e-6)).astype(np.float32), SAMPLE_RATE)
    return probe(s.path)


def _label_caption(row: dict[str, str]) -> str:
    return f"A field recording of a {row['label'].replace('_', ' ')}."


# ---- signal helpers: all (N,) float64 at SAMPLE_RATE ----


def _t(seconds: float) -> np.ndarray:
    return np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE


def _colored(rng: np.random.Generator, n: int, lo: float, hi: float, slope: float = 0.0) -> np.ndarray:
    """Noise band-limited to [lo, hi] Hz with power falling as f^-slope (0 white, 1 pink, 2 brown)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    spec *= ((f >= lo) & (f <= hi)) / np.maximum(f, 1.0) ** (slope / 2)
    x = np.fft.irfft(spec, n)
    return x / max(np.abs(x).max(), 1e-9)


def _smooth(rng: np.random.Generator, n: int, rate: float) -> np.ndarray:
    """A slowly varying envelope in [0, 1]: random points `rate` times a second, interpolated."""
    points = rng.random(max(2, int(n / SAMPLE_RATE * rate) + 2))
    return np.interp(np.linspace(0, len(points) - 1, n), np.arange(len(points)), points)


def _place(out: np.ndarray, event: np.ndarray, at: float) -> None:
    """Add `event` into `out` starting at `at` seconds (cut at the end)."""
    i = round(at * SAMPLE_RATE)
    if i < len(out):
        out[i : i + len(event)] += event[: len(out) - i]


def _tone(freq: float, seconds: float, decay: float | None = None) -> np.ndarray:
    """A sine at `freq` Hz, steady or decaying with time constant `decay` s; 5 ms fade in, 50 ms fade out."""
    t = _t(seconds)
    edges = np.minimum(1.0, np.minimum(t / 0.005, (t[-1] - t) / 0.05))
    return np.sin(2 * np.pi * freq * t) * edges * (np.exp(-t / decay) if decay else 1.0)


# ---- kinds: draw(rng) -> (params, caption) and render(params, noise rng) -> (N,) audio ----


def _draw_rain(rng: random.Random) -> tuple[dict, str]:
    level = rng.choice(("light", "steady", "heavy"))
    where = rng.choice(("on a roof", "on a window", "on leaves", "on pavement"))
    return {
        "intensity": level,
        "seconds": round(rng.uniform(3, 6), 2),
    }, f"{level.capitalize()} rain falling {where}."


def _rain(p: dict, rng: np.random.Generator) -> np.ndarray:
    n = len(_t(p["seconds"]))
    drops = {"light": 15, "steady": 60, "heavy": 200}[p["intensity"]]
    x = 0.3 * _colored(rng, n, 400, 7000, 1.0)
    for at in rng.uniform(0, p["seconds"], int(drops * p["seconds"])):
        _place(x, rng.uniform(0.2, 1.0) * _colored(rng, 160, 1500, 7000) * np.exp(-np.arange(160) / 25), at)
    return x


def _draw_wind(rng: random.Random) -> tuple[dict, str]:
    strong = rng.random() < 0.5
    text = "Strong wind howling in gusts." if strong else "A gentle breeze blowing softly."
    return {"strong": strong, "seconds": round(rng.uniform(3, 6), 2)}, text


def _wind(p: dict, rng: np.random.Generator) -> np.ndarray:
    n = len(_t(p["seconds"]))
    x = _colored(rng, n, 60, 2500 if p["strong"] else 900, 2.0)
    return x * (0.2 + _smooth(rng, n, 1.5 if p["strong"] else 0.5))


def _draw_beeps(rng: random.Random) -> tuple[dict, str]:
    count, freq, long = rng.randint(1, 5), rng.choice((440, 660, 880, 1200, 1760)), rng.random() < 0.3
    pitch = "low" if freq < 700 else "high" if freq > 1000 else "mid"
    what = f"{NUMBERS[count - 1].capitalize()} {'long' if long else 'short'} {pitch}-pitched beep{'s' * (count > 1)}."
    return {
        "count": count,
        "freq": freq,
        "beep": 0.5 if long else 0.12,
        "gap": round(rng.uniform(0.1, 0.4), 2),
    }, what


def _beeps(p: dict, rng: np.random.Generator) -> np.ndarray:
    x = np.zeros(len(_t(p["count"] * (p["beep"] + p["gap"]) + 0.5)))
    for i in range(p["count"]):
        _place(x, _tone(p["freq"], p["beep"]), 0.25 + i * (p["beep"] + p["gap"]))
    return x


def _draw_clicks(rng: random.Random) -> tuple[dict, str]:
    rate = rng.choice((60, 90, 120, 150, 180))
    return {
        "per_minute": rate,
        "seconds": round(rng.uniform(3, 6), 2),
    }, f"Steady clicks, {rate} per minute, like a metronome."


def _clicks(p: dict, rng: np.random.Generator) -> np.ndarray:
    x = np.zeros(len(_t(p["seconds"])))
    click = _colored(rng, 80, 2000, 7000) * np.exp(-np.arange(80) / 12)
    for at in np.arange(0.1, p["seconds"], 60 / p["per_minute"]):
        _place(x, click, at)
    return x


def _draw_bell(rng: random.Random) -> tuple[dict, str]:
    freq, strikes = rng.choice((220, 330, 440, 660, 880)), rng.randint(1, 3)
    pitch = "deep" if freq < 400 else "bright"
    return {"freq": freq, "strikes": strikes}, f"A {pitch} bell rings {COUNTS[strikes - 1]}."


def _bell(p: dict, rng: np.random.Generator) -> np.ndarray:
    x = np.zeros(len(_t(p["strikes"] * 1.2 + 2.5)))
    strike = sum(
        a * _tone(p["freq"] * r, 2.5, decay=1.2 / r)
        for r, a in ((0.5, 0.5), (1, 1), (1.19, 0.6), (1.56, 0.4), (2.0, 0.5), (2.51, 0.3))
    )
    for i in range(p["strikes"]):
        _place(x, strike * rng.uniform(0.8, 1.0), 0.05 + 1.2 * i)
    return x


def _draw_sweep(rng: random.Random) -> tuple[dict, str]:
    up = rng.random() < 0.5
    lo, hi = rng.choice((100, 200, 300)), rng.choice((1500, 2500, 4000))
    seconds = round(rng.uniform(0.5, 3), 2)
    return {"f0": lo if up else hi, "f1": hi if up else lo, "seconds": seconds}, (
        f"A {'rising' if up else 'falling'} electronic tone sweeping {'up' if up else 'down'} over {seconds:.1f} seconds."
    )


def _sweep(p: dict, rng: np.random.Generator) -> np.ndarray:
    t = _t(p["seconds"])
    freq = p["f0"] * (p["f1"] / p["f0"]) ** (t / p["seconds"])  # exponential glide
    return np.sin(2 * np.pi * np.cumsum(freq) / SAMPLE_RATE) * np.minimum(1.0, np.minimum(t, t[::-1]) / 0.02)


def _draw_knock(rng: random.Random) -> tuple[dict, str]:
    count = rng.randint(2, 5)
    surface = rng.choice(("a wooden door", "a table", "a hollow box"))
    return {"count": count, "spacing": round(rng.uniform(0.15, 0.35), 2), "surface": surface}, (
        f"Someone knocks {NUMBERS[count - 1]} times on {surface}."
    )


def _knock(p: dict, rng: np.random.Generator) -> np.ndarray:
    x = np.zeros(len(_t(p["count"] * p["spacing"] + 0.8)))
    body = {"a wooden door": 120, "a table": 180, "a hollow box": 90}[p["surface"]]
    for i in range(p["count"]):
        hit = _tone(body * rng.uniform(0.95, 1.05), 0.25, decay=0.04) + 0.3 * _colored(
            rng, 4000, 500, 4000
        ) * np.exp(-np.arange(4000) / 150)
        _place(x, hit, 0.1 + i * p["spacing"])
    return x


def _draw_siren(rng: random.Random) -> tuple[dict, str]:
    yelp = rng.random() < 0.5
    text = "A fast yelping siren." if yelp else "A siren wailing slowly up and down."
    return {"lfo_hz": 3.0 if yelp else 0.4, "seconds": round(rng.uniform(3, 6), 2)}, text


def _siren(p: dict, rng: np.random.Generator) -> np.ndarray:
    t = _t(p["seconds"])
    freq = 950 + 350 * np.sin(2 * np.pi * p["lfo_hz"] * t + rng.uniform(0, 2 * np.pi))
    return np.sin(2 * np.pi * np.cumsum(freq) / SAMPLE_RATE) + 0.3 * np.sin(
        4 * np.pi * np.cumsum(freq) / SAMPLE_RATE
    )


def _draw_engine(rng: random.Random) -> tuple[dict, str]:
    revving = rng.random() < 0.4
    text = "An engine revving up." if revving else "A low engine idling."
    return {"revving": revving, "f0": rng.choice((25, 35, 45)), "seconds": round(rng.uniform(3, 6), 2)}, text


def _engine(p: dict, rng: np.random.Generator) -> np.ndarray:
    t = _t(p["seconds"])
    rise = 1 + (1.5 * t / p["seconds"] if p["revving"] else 0.0)
    freq = p["f0"] * rise * (1 + 0.02 * _smooth(rng, len(t), 4))
    phase = 2 * np.pi * np.cumsum(freq) / SAMPLE_RATE
    return sum(np.sin(k * phase) / k for k in range(1, 12)) + 0.2 * _colored(rng, len(t), 50, 1500, 1.0)


def _draw_heartbeat(rng: random.Random) -> tuple[dict, str]:
    bpm = rng.choice((50, 60, 75, 90, 110, 130))
    pace = "slow" if bpm < 70 else "racing" if bpm > 100 else "steady"
    return {
        "bpm": bpm,
        "seconds": round(rng.uniform(3, 6), 2),
    }, f"A {pace} heartbeat at {bpm} beats per minute."


def _heartbeat(p: dict, rng: np.random.Generator) -> np.ndarray:
    x = np.zeros(len(_t(p["seconds"])))
    thump = _tone(rng.uniform(45, 65), 0.15, decay=0.035)
    for at in np.arange(0.1, p["seconds"], 60 / p["bpm"]):
        _place(x, thump, at)
        _place(x, 0.6 * thump, at + 0.28)
    return x


KINDS: dict[
    str, tuple[Callable[[random.Random], tuple[dict, str]], Callable[[dict, np.random.Generator], np.ndarray]]
] = {
    "rain": (_draw_rain, _rain),
    "wind": (_draw_wind, _wind),
    "beeps": (_draw_beeps, _beeps),
    "clicks": (_draw_clicks, _clicks),
    "bell": (_draw_bell, _bell),
    "sweep": (_draw_sweep, _sweep),
    "knock": (_draw_knock, _knock),
    "siren": (_draw_siren, _siren),
    "engine": (_draw_engine, _engine),
    "heartbeat": (_draw_heartbeat, _heartbeat),
}
