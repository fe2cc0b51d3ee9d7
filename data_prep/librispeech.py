"""LibriSpeech as published: `<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac` with one
`<speaker>-<chapter>.trans.txt` per chapter (`<utt-id> TRANSCRIPT` lines).

`src_dir` is the `LibriSpeech/` folder holding subsets (train-clean-100, dev-clean, test-other, ...)
or a folder of such subsets. Splits follow the subsets (train-* -> train, dev-* -> valid,
test-* -> test); the subset name is kept in each record. Audio is referenced in place (absolute
paths). Outputs: see `data_prep.common` (`<split>.jsonl`, `rejects.jsonl`, `summary.json`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from audiollm.data.manifest import Record
from data_prep.common import (
    BadInput,
    Reject,
    chapter_record,
    pair,
    prepare_from,
    read_transcripts,
    source_dir,
)


def prepare_librispeech(src_dir: str | Path, out_dir: str | Path) -> Path:
    """Write manifests for every chapter under `src_dir`; returns `out_dir/train.jsonl` (or the first split)."""
    src = source_dir(src_dir, "librispeech")
    return prepare_from("librispeech", src, out_dir, _items(src))


def _items(src: Path) -> Iterator[Record | Reject]:
    chapters = {p.parent for p in src.rglob("*.flac")} | {p.parent for p in src.rglob("*.trans.txt")}
    for chapter in sorted(chapters):
        speaker, subset = chapter.parent.name, chapter.parent.parent.name
        trans = chapter / f"{speaker}-{chapter.name}.trans.txt"
        audio = {p.stem: p for p in chapter.glob("*.flac")}
        try:
            texts, repeated = read_transcripts(trans, _transcript_line)
        except BadInput as e:
            for uid, path in sorted(audio.items()):
                yield Reject(uid, str(path), f"missing transcript: {e}")
            continue
        yield from pair(audio, texts, str(trans), chapter_record(speaker, subset, chapter.name), repeated)


def _transcript_line(line: str) -> tuple[str, str]:
    uid, _, text = line.strip().partition(" ")
    return uid, text
