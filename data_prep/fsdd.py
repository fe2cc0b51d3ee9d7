"""Free Spoken Digit Dataset as published: `recordings/<digit>_<speaker>_<take>.wav` (8 kHz mono).

The label is in the file name; the transcript is the digit's English word ("seven"). The
dataset's own split: takes 0-4 of every speaker and digit are test, the rest train. `src_dir`
is the repository folder (holding `recordings/`) or `recordings/` itself. Audio is referenced
in place. Outputs: see `data_prep.common`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from audiollm.data.manifest import Record
from data_prep.common import Reject, prepare_from, source_dir

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TEST_TAKES = 5
_NAME = re.compile(r"^(?P<digit>\d)_(?P<speaker>[A-Za-z0-9-]+)_(?P<take>\d+)$")


def prepare_fsdd(src_dir: str | Path, out_dir: str | Path) -> Path:
    """Write train/test manifests for every recording; returns `out_dir/train.jsonl`."""
    src = source_dir(src_dir, "fsdd")
    recordings = src / "recordings" if (src / "recordings").is_dir() else src
    return prepare_from("fsdd", src, out_dir, _items(recordings))


def _items(recordings: Path) -> Iterator[Record | Reject]:
    for wav in sorted(recordings.glob("*.wav")):
        m = _NAME.match(wav.stem)
        if m is None:
            yield Reject(
                wav.stem, str(wav), "missing transcript: file name is not <digit>_<speaker>_<take>.wav"
            )
            continue
        take = int(m["take"])
        yield Record(
            id=wav.stem,
            audio=str(wav),
            text=WORDS[int(m["digit"])],
            speaker=m["speaker"],
            split="test" if take < TEST_TAKES else "train",
            extra={"digit": int(m["digit"]), "take": take},
        )
