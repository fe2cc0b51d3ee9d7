"""Offline music corpus: real scores from music21's corpus rendered with fluidsynth, at 16 kHz mono.

Each clip is the opening of one work (about `CLIP_SECONDS`), transposed by -5..+5 semitones,
set to a tempo of 60-160 BPM and played on one General MIDI instrument, all drawn from `seed`;
the composer is drawn first so the large folders (Palestrina, Bach, Irish tunes) do not crowd
out the rest. fluidsynth renders with the FluidR3 GM soundfont at 16 kHz (the rate of the
speech and sound builders, so one codec serves all three). The caption is written from the
metadata: composer, form, instrument, tempo, key (music21's analysis after transposition) and
a mood from mode and tempo. Scores are parsed from source (music21's pickle cache is neither
read nor written). `minutes` bounds the rendered audio; music21 parsing is pure Python, so
clips render in a process pool.

With `src_dir` (a folder laid out like shared/data/music_cc: audio files plus `index.tsv` with
file, title and artist_or_performer), its recordings are added as `CLIP_SECONDS` segments
referenced in place, captioned from the index, all in train. Files:
`out_dir/audio/<id>.wav` and `<id>.json` (the clip's metadata and caption). Outputs: see
`data_prep.common`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from audiollm.audio import AudioError, load, save
from audiollm.data.manifest import Record
from audiollm.files import atomic_write
from data_prep.common import (
    BadInput,
    builder_fingerprint,
    finish,
    finished,
    hash_split,
    probe,
    probe_all,
    produce,
    recordings,
)

if TYPE_CHECKING:
    from music21 import key as m21key
    from music21 import midi, stream

SAMPLE_RATE = 16000
CLIP_SECONDS = 20.0
RENDER_TIMEOUT_S = 60  # a clip renders in about a second; a hung fluidsynth is stopped
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
# corpus folder -> (composer as captioned, form)
WORKS = {
    "bach": ("Johann Sebastian Bach", "chorale"),
    "palestrina": ("Giovanni Pierluigi da Palestrina", "Renaissance mass movement"),
    "monteverdi": ("Claudio Monteverdi", "madrigal"),
    "mozart": ("Wolfgang Amadeus Mozart", "Classical-era movement"),
    "haydn": ("Joseph Haydn", "string quartet movement"),
    "joplin": ("Scott Joplin", "ragtime"),
    "chopin": ("Frederic Chopin", "mazurka"),
    "handel": ("George Frideric Handel", "aria"),
    "corelli": ("Arcangelo Corelli", "trio sonata movement"),
    "schumann_robert": ("Robert Schumann", "Romantic piece"),
    "trecento": ("an anonymous fourteenth-century composer", "medieval piece"),
    "ryansMammoth": ("a traditional Irish fiddler", "folk tune"),
}
# General MIDI program -> instrument as captioned
INSTRUMENTS = {
    0: "piano",
    6: "harpsichord",
    11: "vibraphone",
    19: "church organ",
    21: "accordion",
    24: "acoustic guitar",
    46: "harp",
    48: "string ensemble",
    52: "choir",
    61: "brass section",
    68: "oboe",
    71: "clarinet",
    73: "flute",
}
SCORE_SUFFIXES = (".mxl", ".xml", ".krn", ".abc")
TEMPO_WORDS = ((72, "slow"), (100, "moderate"), (128, "lively"), (1000, "fast"))
MOODS = {
    ("major", False): "calm",
    ("major", True): "cheerful",
    ("minor", False): "melancholic",
    ("minor", True): "restless",
}


@dataclass(frozen=True)
class Clip:
    """One work's opening, as rendered: source score, program, tempo, transposition and length."""

    id: str
    path: Path
    score: str
    folder: str
    program: int
    bpm: int
    transpose: int
    seconds: float
    split: str


def prepare_offline_music(
    src_dir: str | Path | None,
    out_dir: str | Path,
    minutes: float = 10.0,
    seed: int = 0,
    workers: int | None = None,
) -> Path:
    """Render about `minutes` of music (plus the recordings in `src_dir`, if given); returns train.jsonl."""
    out = Path(out_dir).expanduser().resolve()
    src = Path(src_dir).expanduser().resolve() if src_dir is not None else None
    fingerprint = builder_fingerprint("offline-music", src, minutes, seed)
    done = finished(out, fingerprint)
    if done is not None:
        return done
    if shutil.which("fluidsynth") is None or not SOUNDFONT.is_file():
        raise ValueError(f"offline-music: needs fluidsynth and {SOUNDFONT}; install them with make debs")
    budget = minutes * 60
    seconds = min(CLIP_SECONDS, budget)
    jobs = plan(out, seed, seconds, count=2 * math.ceil(budget / seconds) + 8)
    made, rejects = produce(
        jobs, render, budget, workers or os.cpu_count() or 1, "offline-music", processes=True
    )
    records = [_record(clip, seconds, out) for clip, seconds in made]
    if src is not None:
        real, real_rejects = probe_all(
            recordings(src, "index.tsv", ("title", "artist_or_performer"), _index_caption, CLIP_SECONDS),
            "music recordings",
        )
        records, rejects = records + real, rejects + real_rejects
    return finish(out, records, rejects, fingerprint)


def plan(out: Path, seed: int, seconds: float, count: int) -> Iterator[Clip]:
    """`count` clips drawn from `seed`: a composer folder, one of its scores, program, tempo, transposition.

    A score's split comes from a stable hash of its path, so valid/test clips are works never trained on.
    """
    root = corpus_root()
    scores = {
        f: sorted(str(p.relative_to(root)) for p in (root / f).rglob("*") if p.suffix in SCORE_SUFFIXES)
        for f in WORKS
    }
    folders = sorted(f for f in WORKS if scores[f])
    if not folders:
        raise ValueError(
            f"offline-music: no scores found under {root}; reinstall music21 (it ships the corpus)"
        )
    rng = random.Random(seed)
    for _ in range(count):
        folder = rng.choice(folders)
        score = rng.choice(scores[folder])
        program, bpm, shift = rng.choice(sorted(INSTRUMENTS)), rng.randrange(60, 161, 4), rng.randint(-5, 5)
        key = hashlib.sha1(f"{score}|{program}|{bpm}|{shift}|{seconds}".encode()).hexdigest()[:12]
        uid = f"music-{key}"
        yield Clip(
            uid, out / "audio" / f"{uid}.wav", score, folder, program, bpm, shift, seconds, hash_split(score)
        )


def corpus_root() -> Path:
    """The folder of music21's bundled corpus."""
    from music21 import common

    return Path(common.getCorpusFilePath())


def render(clip: Clip) -> float:
    """Render `clip` to `clip.path` (16 kHz mono) and its metadata to `<id>.json`; returns seconds.

    Kept as they are when both files already exist. Raises BadInput for a score that cannot be used.
    """
    meta_path = clip.path.with_suffix(".json")
    if not (clip.path.exists() and meta_path.exists()):
        with tempfile.TemporaryDirectory() as tmp:
            key, mode = _write_midi(clip, Path(tmp) / "clip.mid")
            wav = _fluidsynth(clip, Path(tmp) / "clip.mid", Path(tmp) / "clip.wav")
        save(clip.path, _shaped(wav, clip), SAMPLE_RATE)
        meta = {**asdict(clip), "path": clip.path.name, "key": key, "mode": mode}
        meta["caption"] = caption(meta)
        with atomic_write(meta_path, "w") as f:
            f.write(json.dumps(meta, indent=1) + "\n")
    return probe(clip.path)


def _fluidsynth(clip: Clip, midi_path: Path, wav_path: Path) -> np.ndarray:
    """Render MIDI with the GM soundfont at SAMPLE_RATE; returns mono (N,) float32."""
    cmd = [
        "fluidsynth",
        "-ni",
        "-q",
        "-r",
        str(SAMPLE_RATE),
        "-F",
        str(wav_path),
        str(SOUNDFONT),
        str(midi_path),
    ]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=RENDER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise BadInput(clip.score, f"fluidsynth still rendering after {RENDER_TIMEOUT_S} s") from None
    if done.returncode != 0:
        raise BadInput(clip.score, f"fluidsynth failed ({done.stderr.strip() or done.returncode})")
    try:
        wav, _ = load(wav_path, sample_rate=SAMPLE_RATE, channels=1)  # (1, N)
    except AudioError as e:
        raise BadInput(clip.score, f"fluidsynth wrote unusable audio ({e.problem})") from None
    return wav[0].numpy()


def _write_midi(clip: Clip, midi_path: Path) -> tuple[str, str]:
    """Write the arranged excerpt as MIDI; returns its key ("F sharp minor") and mode ("minor")."""
    from music21.exceptions21 import Music21Exception
    from music21.midi import translate

    try:
        excerpt = _arranged(clip)
        key = excerpt.analyze("key")
        mf = translate.streamToMidiFile(excerpt)
    except (Music21Exception, ArithmeticError, LookupError, AttributeError, TypeError) as e:
        # music21 fails in many ways on scores it cannot cut or voice; one such score must not end the run
        raise BadInput(clip.score, f"music21 cannot arrange this score ({type(e).__name__}: {e})") from None
    _sound_off_at_end(mf)
    mf.open(str(midi_path), "wb")
    mf.write()
    mf.close()
    return _key_name(key), key.mode


def _sound_off_at_end(mf: midi.MidiFile) -> None:
    """End every track with All Sound Off on its channels.

    Parts that share a channel can leave a sustained voice hanging, and fluidsynth >= 2.3.1
    renders until no voice sounds: without this, such a file renders forever.
    """
    from music21 import midi

    for track in mf.tracks:
        channels = sorted({e.channel for e in track.events if isinstance(e, midi.MidiEvent) and e.isNoteOn()})
        end = track.events[-2:]  # DeltaTime, END_OF_TRACK
        del track.events[-2:]
        for ch in channels:
            off = midi.MidiEvent(track, type=midi.ChannelVoiceMessages.CONTROLLER_CHANGE, channel=ch)
            off.parameter1, off.parameter2 = 120, 0
            track.events += [midi.DeltaTime(track, time=0, channel=ch), off]
        track.events += end


def _arranged(clip: Clip) -> stream.Score:
    """The score's opening (enough measures for `clip.seconds` at `clip.bpm`), transposed, re-tempoed, re-voiced."""
    from music21 import bar, converter, instrument, stream, tempo

    score = converter.parseFile(corpus_root() / clip.score, forceSource=True, storePickle=False)
    if not isinstance(score, stream.Score) or not score.parts:
        raise BadInput(clip.score, f"not a single score with parts (got {type(score).__name__})")
    measures = score.parts[0].getElementsByClass(stream.Measure)
    quarters, total, last = clip.seconds * clip.bpm / 60, 0.0, None
    for m in measures:
        total, last = total + m.duration.quarterLength, m.number
        if total >= quarters:
            break
    excerpt = score.measures(measures[0].number, last) if last is not None else score
    excerpt.transpose(clip.transpose, inPlace=True)
    for old in list(excerpt.recurse().getElementsByClass((tempo.TempoIndication, instrument.Instrument))):
        old.activeSite.remove(old)
    for m in excerpt.recurse().getElementsByClass(stream.Measure):  # play the opening once, as written
        m.leftBarline = None if isinstance(m.leftBarline, bar.Repeat) else m.leftBarline
        m.rightBarline = None if isinstance(m.rightBarline, bar.Repeat) else m.rightBarline
    for part in excerpt.parts:
        part.insert(0, instrument.instrumentFromMidiProgram(clip.program))
    excerpt.parts[0].insert(0, tempo.MetronomeMark(number=clip.bpm))
    return excerpt


def _shaped(wav: np.ndarray, clip: Clip) -> np.ndarray:
    """Cut to `clip.seconds`, fade the last half second out and bring the peak to 0.9. wav: (N,) float32."""
    wav = wav[: round(clip.seconds * SAMPLE_RATE)].copy()
    fade = min(len(wav), SAMPLE_RATE // 2)
    wav[len(wav) - fade :] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    peak = float(np.abs(wav).max()) if len(wav) else 0.0
    if peak < 1e-4:
        raise BadInput(clip.score, "rendered silence (the excerpt has no notes)")
    return wav * (0.9 / peak)


def _key_name(key: m21key.Key) -> str:
    tonic = key.tonic.name.replace("-", " flat").replace("#", " sharp")
    return f"{tonic} {key.mode}"


def caption(meta: dict) -> str:
    """A caption from clip metadata: composer, form, instrument, tempo, key, mood (wording varies by id)."""
    composer, form = WORKS[meta["folder"]]
    instrument = INSTRUMENTS[meta["program"]]
    pace = next(word for limit, word in TEMPO_WORDS if meta["bpm"] < limit)
    mood = MOODS[(meta["mode"], meta["bpm"] >= 100)]
    bpm, key = meta["bpm"], meta["key"]
    templates = (
        f"A {pace}, {mood} {form} by {composer}, played on {instrument} in {key} at {bpm} BPM.",
        f"{instrument.capitalize()} plays a {mood} {form} by {composer} in {key}, {pace} at {bpm} BPM.",
        f"A {form} by {composer} arranged for {instrument}: {mood} and {pace}, {key}, {bpm} BPM.",
    )
    return templates[int(meta["id"].split("-")[-1], 16) % len(templates)]


def _record(clip: Clip, seconds: float, out: Path) -> Record:
    meta = json.loads(clip.path.with_suffix(".json").read_text(encoding="utf-8"))
    composer, form = WORKS[clip.folder]
    return Record(
        id=clip.id,
        audio=str(clip.path.relative_to(out)),
        caption=meta["caption"],
        duration=round(seconds, 3),
        split=clip.split,
        extra={
            "score": clip.score,
            "composer": composer,
            "form": form,
            "instrument": INSTRUMENTS[clip.program],
            "bpm": clip.bpm,
            "key": meta["key"],
            "transpose": clip.transpose,
        },
    )


def _index_caption(row: dict[str, str]) -> str:
    return f"{row['title']}, a recording by {row['artist_or_performer']}."
