"""MusicCaps as published: `musiccaps-public.csv` (ytid, start_s, end_s, audioset_positive_labels,
aspect_list, caption, author_id, is_balanced_subset, is_audioset_eval), with the audio that the
user has already downloaded somewhere under `src_dir` (see `common.youtube_index` for the file
names accepted; either the 10 s clip or the whole video).

Split: `is_audioset_eval` True -> test, else train (the corpus's own eval flag). Clips not found
are written to `rejects.jsonl` ("audio not downloaded"), not fatal. Outputs: see `data_prep.common`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from audiollm.data.manifest import Record
from data_prep.common import BadInput, Reject, prepare_from, read_csv, source_dir, youtube_clip, youtube_index

CSV_NAME = "musiccaps-public.csv"


def prepare_musiccaps(src_dir: str | Path, out_dir: str | Path) -> Path:
    """Write train/test manifests for the downloaded clips of `src_dir/musiccaps-public.csv`."""
    src = source_dir(src_dir, "musiccaps")
    return prepare_from("musiccaps", src, out_dir, _items(src))


def _items(src: Path) -> Iterator[Record | Reject]:
    try:
        rows = read_csv(
            src / CSV_NAME,
            ("ytid", "start_s", "end_s", "aspect_list", "caption", "author_id", "is_audioset_eval"),
        )
    except BadInput as e:
        raise ValueError(f"musiccaps: {e}; put the published {CSV_NAME} in the --src folder") from None
    index = youtube_index(src)
    for row in rows:
        ytid = row["ytid"]
        try:
            start, end = float(row["start_s"]), float(row["end_s"])
        except ValueError:
            yield Reject(ytid, ytid, f"start_s / end_s are not numbers in {CSV_NAME}")
            continue
        uid = f"{ytid}_{int(start)}"
        if not row["caption"].strip():
            yield Reject(uid, ytid, f"empty caption in {CSV_NAME}")
            continue
        item = youtube_clip(uid, ytid, start, end - start, index)
        if isinstance(item, Record):
            item.caption = row["caption"].strip()
            item.split = "test" if row["is_audioset_eval"].strip().lower() == "true" else "train"
            item.extra = {"aspects": row["aspect_list"], "author_id": row["author_id"]}
        yield item
