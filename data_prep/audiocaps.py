"""AudioCaps as published: `train.csv`, `val.csv`, `test.csv` (audiocap_id, youtube_id, start_time,
caption; the test clips have five captions each), in `src_dir` or `src_dir/dataset/`, with the
10 s clips the user has already downloaded somewhere under `src_dir` (see `common.youtube_index`).

Splits are the corpus's own files (val -> valid); each caption is one record, id = audiocap_id.
Clips not found are written to `rejects.jsonl`, not fatal. Outputs: see `data_prep.common`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from audiollm.data.manifest import Record
from data_prep.common import BadInput, Reject, prepare_from, read_csv, source_dir, youtube_clip, youtube_index

CSV_SPLITS = {"train.csv": "train", "val.csv": "valid", "test.csv": "test"}
CLIP_SECONDS = 10.0
COLUMNS = ("audiocap_id", "youtube_id", "start_time", "caption")


def prepare_audiocaps(src_dir: str | Path, out_dir: str | Path) -> Path:
    """Write train/valid/test manifests for the downloaded clips listed in the AudioCaps CSVs."""
    src = source_dir(src_dir, "audiocaps")
    csv_dir = src / "dataset" if (src / "dataset" / "train.csv").is_file() else src
    if not any((csv_dir / name).is_file() for name in CSV_SPLITS):
        raise ValueError(
            f"audiocaps: none of {sorted(CSV_SPLITS)} in {src}; pass the AudioCaps folder with --src"
        )
    return prepare_from("audiocaps", src, out_dir, _items(src, csv_dir))


def _items(src: Path, csv_dir: Path) -> Iterator[Record | Reject]:
    index = youtube_index(src)
    for name, split in CSV_SPLITS.items():
        try:
            rows = read_csv(csv_dir / name, COLUMNS) if (csv_dir / name).is_file() else []
        except BadInput as e:
            yield Reject(split, e.path, e.problem)
            continue
        for row in rows:
            uid, ytid = row["audiocap_id"], row["youtube_id"]
            try:
                start = float(row["start_time"])
            except ValueError:
                yield Reject(uid, ytid, f"start_time is not a number in {name}")
                continue
            if not row["caption"].strip():
                yield Reject(uid, ytid, f"empty caption in {name}")
                continue
            item = youtube_clip(uid, ytid, start, CLIP_SECONDS, index)
            if isinstance(item, Record):
                item.caption, item.split = row["caption"].strip(), split
            yield item
