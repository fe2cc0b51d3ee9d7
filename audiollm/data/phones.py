"""Phone timings of manifest records, for a codec whose first codebook is taught to carry phones.

A record may hold `phones`: a list of [phone, end_seconds] pairs in time order, the phone spoken from the
previous end (0 for the first) to its own end, in seconds from the start of the audio file. `PHONES` is
the inventory: flite's US English phone set (CMU ARPAbet in lower case) with `pau` for silence.
`audiollm prepare phones` writes the field for flite-spoken rows (`data_prep/phones.py`).
"""

from __future__ import annotations

import torch

from audiollm.data.manifest import ManifestError, Record

PHONES = (
    "pau", "aa", "ae", "ah", "ao", "aw", "ax", "axr", "ay", "b", "ch", "d", "dh", "eh", "el", "em", "en",
    "er", "ey", "f", "g", "hh", "ih", "ix", "iy", "jh", "k", "l", "m", "n", "ng", "ow", "oy", "p", "r",
    "s", "sh", "t", "th", "uh", "uw", "v", "w", "y", "z", "zh",
)  # fmt: skip
PHONE_INDEX = {p: i for i, p in enumerate(PHONES)}
IGNORE = -100
"""The label of a frame without a phone (cross-entropy's ignore_index)."""


def record_phones(record: Record, where: str) -> list[tuple[int, float]] | None:
    """The record's `phones` as (index into PHONES, end seconds), or None when it has none.

    ManifestError naming `where`, the record and the problem for a malformed field.
    """
    raw = record.extra.get("phones")
    if raw is None:
        return None
    bad = f"{where}: record '{record.id}', field 'phones'"
    if not isinstance(raw, list) or not raw:
        raise ManifestError(f"{bad} must be a non-empty list of [phone, end_seconds] pairs")
    out, last = [], 0.0
    for n, item in enumerate(raw):
        ok = isinstance(item, list) and len(item) == 2 and isinstance(item[1], int | float)
        if not ok or item[0] not in PHONE_INDEX:
            raise ManifestError(
                f"{bad}, item {n} = {item!r}: expected [phone, end_seconds], phone one of PHONES"
            )
        if item[1] < last:
            raise ManifestError(f"{bad}, item {n}: end {item[1]} is before the previous end {last}")
        out.append((PHONE_INDEX[item[0]], float(item[1])))
        last = float(item[1])
    return out


def frame_labels(
    phones: list[tuple[int, float]] | None, start: float, frames: int, rate: float
) -> torch.Tensor:
    """Labels int64 (frames,) of the frames of a crop from `start` seconds at `rate` frames/s: the phone
    spoken at each frame's centre, IGNORE after the last phone's end or when `phones` is None."""
    labels = torch.full((frames,), IGNORE, dtype=torch.long)
    if phones is None:
        return labels
    ends = torch.tensor([end for _, end in phones])
    ids = torch.tensor([i for i, _ in phones])
    centres = start + (torch.arange(frames) + 0.5) / rate
    k = torch.searchsorted(ends, centres, right=True)  # the first phone ending after the centre
    inside = k < len(phones)
    labels[inside] = ids[k[inside]]
    return labels
