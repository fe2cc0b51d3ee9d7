"""LibriTTS as published: `<subset>/<speaker>/<chapter>/<speaker>_<chapter>_<para>_<sent>.wav` (24 kHz),
each with `<same stem>.normalized.txt` holding its normalised transcript (used here; the
`.original.txt` beside it is not).

`src_dir` is the `LibriTTS/` folder of subsets. Splits follow the subsets (train-* -> train,
dev-* -> valid, test-* -> test). Audio is referenced in place. Outputs: see `data_prep.common`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from audiollm.data.manifest import Record
from data_prep.common import BadInput, Reject, chapter_record, pair, prepare_from, read_lines, source_dir


def prepare_libritts(src_dir: str | Path, out_dir: str | Path) -> Path:
    """Write manifests for every utterance under `src_dir`; returns `out_dir/train.jsonl` (or the first split)."""
    src = source_dir(src_dir, "libritts")
    return prepare_from("libritts", src, out_dir, _items(src))


def _items(src: Path) -> Iterator[Record | Reject]:
    for wav in sorted(src.rglob("*.wav")):
        chapter = wav.parent
        speaker, subset = chapter.parent.name, chapter.parent.parent.name
        txt = wav.with_name(f"{wav.stem}.normalized.txt")
        try:
            texts = {wav.stem: " ".join(read_lines(txt))} if txt.exists() else {}
        except BadInput as e:
            yield Reject(wav.stem, str(wav), f"transcript {e}")
            continue
        yield from pair({wav.stem: wav}, texts, str(txt), chapter_record(speaker, subset, chapter.name))
