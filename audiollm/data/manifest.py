"""Manifests: one JSON record per line describing one utterance or clip.

A record has `id` and `audio` (a path, relative paths resolved against the manifest's folder),
and optionally `text` (transcript), `caption` (music / sound description), `speaker`,
`start` and `duration` (seconds, a segment of the file), `split` (train / valid / test) and
`task` hints. Unknown keys are kept, so corpus-specific metadata survives tokenisation.
Files are UTF-8; ids are unique across the manifests read together (`read_manifests`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from audiollm.audio import AudioError, info
from audiollm.files import atomic_write

KNOWN_FIELDS = ("id", "audio", "text", "caption", "speaker", "start", "duration", "split")


class ManifestError(ValueError):
    """A manifest line that cannot be used; the message names the file, the line and the field."""


@dataclass
class Record:
    """One audio item. `audio` is an absolute path once read through `read_manifest`."""

    id: str
    audio: str
    text: str | None = None
    caption: str | None = None
    speaker: str | None = None
    start: float = 0.0
    duration: float | None = None
    split: str | None = None
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        """The record as one manifest line's object (None fields left out, extras flattened)."""
        d = {k: v for k, v in asdict(self).items() if k != "extra" and v is not None}
        if d.get("start") == 0.0:
            del d["start"]
        return {**d, **self.extra}


def record_seconds(record: Record) -> float:
    """Seconds of audio `record` covers: from `start` for `duration` (default: to the end), cut at the end
    of its file (read from the header). AudioError if the file is unusable or has nothing after `start`."""
    meta = info(record.audio)
    if meta.frames == 0:
        raise AudioError(record.audio, "contains no audio samples (zero length)")
    total = meta.frames / meta.samplerate
    if record.start >= total:
        raise AudioError(record.audio, f"segment starts at {record.start:.3f}s, after the end ({total:.3f}s)")
    rest = total - record.start
    return rest if record.duration is None else min(record.duration, rest)


def parse_record(obj: object, where: str, root: Path | None = None) -> Record:
    """Validate one decoded JSON line. `where` ("file.jsonl:12") starts every error message."""
    if not isinstance(obj, dict):
        raise ManifestError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    for key in ("id", "audio"):
        if not isinstance(obj.get(key), str) or not obj[key]:
            raise ManifestError(f"{where}: field '{key}' is required and must be a non-empty string")
    for key in ("text", "caption", "speaker", "split"):
        if obj.get(key) is not None and not isinstance(obj[key], str):
            raise ManifestError(f"{where}: field '{key}' must be a string")
    for key in ("start", "duration"):
        v = obj.get(key)
        if v is not None and (not isinstance(v, int | float) or isinstance(v, bool) or v < 0):
            raise ManifestError(f"{where}: field '{key}' must be a number >= 0, got {v!r}")
    if obj.get("duration") == 0:
        raise ManifestError(f"{where}: field 'duration' must be > 0")
    audio = Path(obj["audio"])
    if root is not None and not audio.is_absolute():
        audio = root.absolute() / audio  # absolute even when the manifest was named by a relative path
    return Record(
        id=obj["id"],
        audio=str(audio),
        text=obj.get("text"),
        caption=obj.get("caption"),
        speaker=obj.get("speaker"),
        start=float(obj.get("start") or 0.0),
        duration=None if obj.get("duration") is None else float(obj["duration"]),
        split=obj.get("split"),
        extra={k: v for k, v in obj.items() if k not in KNOWN_FIELDS},
    )


def read_manifest(path: str | Path) -> Iterator[Record]:
    """Yield the records of a JSONL manifest; blank lines are skipped, bad lines raise ManifestError."""
    for _, record in _located_records(Path(path)):
        yield record


def read_manifests(paths: Iterable[str | Path]) -> list[Record]:
    """The records of several manifests in order; an id seen twice (in one file or across them) is a
    ManifestError naming both lines, since records are keyed by id downstream (shards, indexes)."""
    seen: dict[str, str] = {}
    records = []
    for path in paths:
        for where, record in _located_records(Path(path)):
            if record.id in seen:
                raise ManifestError(f"{where}: duplicate id '{record.id}' (first at {seen[record.id]})")
            seen[record.id] = where
            records.append(record)
    return records


def manifest_texts(paths: Iterable[str | Path]) -> list[str]:
    """Every non-empty `text` and `caption` of the manifests' records, in order: what a text tokenizer is
    trained on."""
    return [t for path in paths for r in read_manifest(path) for t in (r.text, r.caption) if t]


def _located_records(path: Path) -> Iterator[tuple[str, Record]]:
    """("file:line", record) for each non-blank line; lines are decoded one by one so that a byte
    that is not UTF-8 is reported with its line."""
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            where = f"{path}:{n}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ManifestError(
                    f"{where}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                    "re-encode the file as UTF-8"
                ) from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ManifestError(f"{where}: not valid JSON ({e.msg})") from None
            yield where, parse_record(obj, where, path.parent)


def write_jsonl(path: str | Path, rows: Iterable[dict | Record]) -> Path:
    """Write rows as JSONL atomically (a temporary file renamed into place)."""
    path = Path(path)
    with atomic_write(path, "w", fsync=True) as f:
        for row in rows:
            obj = row.to_json() if isinstance(row, Record) else row
            f.write(json.dumps(obj, ensure_ascii=False) + "\n")
    return path
