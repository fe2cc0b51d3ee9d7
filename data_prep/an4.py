"""CMU AN4 as published (sphere version): `an4/etc/an4_{train,test}.fileids` (paths under `an4/wav/`
without extension), `an4/etc/an4_{train,test}.transcription` (`<s> TEXT </s> (utt-id)`; the test
list has no `<s>` tags) and `an4/wav/<fileid>.sph` (NIST SPHERE, 16 kHz, read by libsndfile).

`src_dir` is the `an4/` folder or the folder holding it. Splits are the corpus's own train and
test lists; the speaker is the folder above each file. Audio is referenced in place. Outputs:
see `data_prep.common`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from audiollm.data.manifest import Record
from data_prep.common import BadInput, Reject, pair, prepare_from, read_lines, read_transcripts, source_dir

SPLITS = {"train": "an4_train", "test": "an4_test"}
_LINE = re.compile(r"^(?P<text>.*?)\s*\((?P<id>[^()\s]+)\)\s*$")


def prepare_an4(src_dir: str | Path, out_dir: str | Path) -> Path:
    """Write train/test manifests from the AN4 lists under `src_dir`; returns `out_dir/train.jsonl`."""
    src = source_dir(src_dir, "an4")
    root = src if (src / "etc").is_dir() else src / "an4"
    if not (root / "etc").is_dir():
        raise ValueError(f"an4: no etc/ folder in {src} or {src / 'an4'}; pass the an4 folder with --src")
    return prepare_from("an4", src, out_dir, _items(root))


def _items(root: Path) -> Iterator[Record | Reject]:
    for split, stem in SPLITS.items():
        ids_file, trans_file = root / "etc" / f"{stem}.fileids", root / "etc" / f"{stem}.transcription"
        try:
            fileids = [line.strip() for line in read_lines(ids_file) if line.strip()]
            texts, repeated = read_transcripts(trans_file, _transcription_line)
        except BadInput as e:
            yield Reject(split, e.path, e.problem)
            continue
        audio = {Path(f).name: root / "wav" / f"{f}.sph" for f in fileids}
        yield from pair(
            audio,
            texts,
            str(trans_file),
            lambda uid, path, text, split=split: Record(
                uid, str(path), text, speaker=path.parent.name, split=split
            ),
            repeated,
        )


def _transcription_line(line: str) -> tuple[str, str]:
    m = _LINE.match(line.strip())
    if m is None:
        return line.strip(), ""
    text = m["text"].replace("<s>", " ").replace("</s>", " ")
    return m["id"], " ".join(text.split())
