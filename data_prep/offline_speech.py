"""Offline speech corpus: WordNet's example sentences spoken by flite and espeak-ng voices, at 16 kHz.

Text: the quoted usage examples in WordNet 3.0's `data.{noun,verb,adj,adv}` (Debian package
`wordnet-base`, `/usr/share/wordnet`; about 48k human-written English sentences), kept when
they are 4-20 words of plain letters and punctuation (no digits, whose spoken form would not
match the text) and de-duplicated. Each sentence belongs to one split by a stable hash of its
text (90 % train, 5 % valid, 5 % test), so a test sentence is never trained on, whatever the
seed or length. Voices: flite `slt rms kal16` and espeak-ng `en-us en-gb en-us+f3` speak
train, valid and test; flite `awb` is held out and speaks only `test_unseen` (test sentences).

Every 20 utterances hold 17 train, 1 valid, 1 test and 1 test_unseen, in an order drawn from
`seed`; `minutes` bounds the total audio. Files: `out_dir/audio/<voice>/<id>.wav` (16 kHz mono
PCM16, named by voice and text so a re-run or a longer run reuses them); manifests with
relative paths, `speaker` = voice and `text` = the sentence. Outputs: see `data_prep.common`.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from audiollm.audio import AudioError, load, save
from audiollm.data.manifest import Record
from data_prep.common import BadInput, builder_fingerprint, finish, finished, hash_split, probe, produce

SAMPLE_RATE = 16000
WORDNET_DIR = Path("/usr/share/wordnet")
VOICES = ("flite:slt", "flite:rms", "flite:kal16", "espeak:en-us", "espeak:en-gb", "espeak:en-us+f3")
HELD_OUT_VOICE = "flite:awb"
# Splits of 20 consecutive utterances (the first ones cover every split, so tiny runs do too).
SCHEDULE = ("train", "valid", "test", "test_unseen", *["train"] * 16)
_PLAIN = re.compile(r"^[A-Za-z][A-Za-z ,.;:'?!-]*$")
_QUOTED = re.compile(r'"([^"]+)"')


@dataclass(frozen=True)
class Utterance:
    """One sentence for one voice, written to `path` (16 kHz mono wav)."""

    id: str
    path: Path
    text: str
    voice: str
    split: str


def prepare_offline_speech(
    src_dir: str | Path | None,
    out_dir: str | Path,
    minutes: float = 10.0,
    seed: int = 0,
    workers: int | None = None,
) -> Path:
    """Synthesise about `minutes` of speech into `out_dir`; returns `out_dir/train.jsonl`.

    src_dir: the WordNet dict folder (None: /usr/share/wordnet). workers: parallel synthesis
    jobs (None: one per CPU core).
    """
    src = Path(src_dir or WORDNET_DIR).expanduser().resolve()
    out = Path(out_dir).expanduser().resolve()
    fingerprint = builder_fingerprint("offline-speech", src, minutes, seed)
    done = finished(out, fingerprint)
    if done is not None:
        return done
    for tool in ("flite", "espeak-ng"):
        if shutil.which(tool) is None:
            raise ValueError(f"offline-speech: '{tool}' not found; install the Debian package (make debs)")
    sentences = load_sentences(src)
    jobs = plan(sentences, out, seed)
    made, rejects = produce(jobs, synthesize, minutes * 60, workers or os.cpu_count() or 1, "offline-speech")
    records = [
        Record(
            id=u.id,
            audio=str(u.path.relative_to(out)),
            text=u.text,
            speaker=u.voice.replace(":", "-"),
            duration=round(seconds, 3),
            split=u.split,
        )
        for u, seconds in made
    ]
    return finish(out, records, rejects, fingerprint)


def load_sentences(src: Path) -> list[str]:
    """WordNet's usage examples as clean sentences, de-duplicated, in file order."""
    files = [src / f"data.{pos}" for pos in ("noun", "verb", "adj", "adv")]
    if not all(f.is_file() for f in files):
        raise ValueError(
            f"offline-speech: WordNet data files not found in {src}; install the Debian package wordnet-base"
        )
    seen, sentences = set(), []
    for f in files:
        for line in f.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith(" ") or "|" not in line:
                continue  # the licence header, or no gloss
            for quote in _QUOTED.findall(line.split("|", 1)[1]):
                text = _clean(quote)
                if text and text.lower() not in seen:
                    seen.add(text.lower())
                    sentences.append(text)
    return sentences


def _clean(quote: str) -> str | None:
    text = " ".join(quote.split())
    if not _PLAIN.match(text) or not 4 <= len(text.split()) <= 20:
        return None
    end = text[-1] if text[-1] in "?!" else "."
    body = text.rstrip(".,;:-?! ")
    return body[0].upper() + body[1:] + end


def plan(sentences: list[str], out: Path, seed: int) -> Iterator[Utterance]:
    """Utterances in schedule order: each split's sentences shuffled by `seed`, voices drawn by `seed`."""
    rng = random.Random(seed)
    pools: dict[str, list[str]] = {"train": [], "valid": [], "test": []}
    for s in sentences:
        pools[hash_split(s.lower())].append(s)
    for pool in pools.values():
        rng.shuffle(pool)
    queues = {split: iter(pool) for split, pool in pools.items()}
    queues["test_unseen"] = queues["test"]  # seen and unseen voices share the test sentences, never one twice
    n = 0
    while True:
        split = SCHEDULE[n % len(SCHEDULE)]
        text = next(queues[split], None)
        if text is None:
            return  # that split's sentences are used up
        voice = HELD_OUT_VOICE if split == "test_unseen" else rng.choice(VOICES)
        key = hashlib.sha1(f"{voice}\0{text}".encode()).hexdigest()[:12]
        uid = f"{voice.replace(':', '-')}-{key}"
        yield Utterance(uid, out / "audio" / voice.replace(":", "-") / f"{uid}.wav", text, voice, split)
        n += 1


def synthesize(u: Utterance) -> float:
    """Speak `u.text` with `u.voice` into `u.path` at 16 kHz mono (kept if already there); returns seconds."""
    if not u.path.exists():
        engine, name = u.voice.split(":")
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "raw.wav"
            cmd = (
                ["flite", "-voice", name, "-t", u.text, "-o", str(raw)]
                if engine == "flite"
                else ["espeak-ng", "-v", name, "-w", str(raw), u.text]
            )
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                raise BadInput(
                    u.path, f"{cmd[0]} failed ({done.stderr.strip() or done.returncode}); is it installed?"
                )
            try:
                wav, _ = load(raw, sample_rate=SAMPLE_RATE, channels=1)
            except AudioError as e:
                raise BadInput(u.path, f"{cmd[0]} wrote unusable audio ({e.problem})") from None
            save(u.path, wav, SAMPLE_RATE)
    return probe(u.path)
