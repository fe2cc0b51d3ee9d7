"""LJ Speech as published: `metadata.csv` (`id|raw text|normalized text`, UTF-8, no header) and
`wavs/<id>.wav` (22.05 kHz, one speaker). The normalised column is used when present, else the raw one.

LJ Speech has no official split; a stable hash of each id puts about 90 % in train, 5 % in
valid and 5 % in test, the same for every run. Audio with another extension libsndfile reads
(e.g. `wavs/<id>.flac`) is accepted. Audio is referenced in place. Outputs: see `data_prep.common`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from audiollm.data.manifest import Record
from data_prep.common import BadInput, Reject, hash_split, pair, prepare_from, read_transcripts, source_dir

SPEAKER = "LJ"


def prepare_ljspeech(src_dir: str | Path, out_dir: str | Path) -> Path:
    """Write manifests for the utterances of `src_dir/metadata.csv`; returns `out_dir/train.jsonl`."""
    src = source_dir(src_dir, "ljspeech")
    return prepare_from("ljspeech", src, out_dir, _items(src))


def _items(src: Path) -> Iterator[Record | Reject]:
    meta = src / "metadata.csv"
    audio = {p.stem: p for p in sorted((src / "wavs").glob("*")) if p.is_file()}
    try:
        texts, repeated = read_transcripts(meta, _metadata_line)
    except BadInput as e:
        for uid, path in audio.items():
            yield Reject(uid, str(path), f"missing transcript: {e}")
        return
    yield from pair(
        audio,
        texts,
        str(meta),
        lambda uid, path, text: Record(uid, str(path), text, speaker=SPEAKER, split=hash_split(uid)),
        repeated,
    )


def _metadata_line(line: str) -> tuple[str, str]:
    uid, *columns = line.split("|")
    return uid.strip(), columns[-1] if columns else ""
