"""What every corpus shares: rejects, probing audio, atomic outputs, resume, splits.

Output convention (all corpora and builders): `out_dir/<split>.jsonl`, one manifest per split
(`train`, `valid`, `test`, and `test_unseen` for the offline speech builder's held-out voice),
each record also carrying its `split`; `out_dir/rejects.jsonl` lists every item left out with
`{id, path, reason}`; `out_dir/summary.json` is written last and marks the folder finished. A
re-run whose inputs and options match the summary's fingerprint does nothing and returns the
same main manifest (`train.jsonl`, or the first split present when there is no train split).
"""

from __future__ import annotations

import csv
import hashlib
import json
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from typing import Protocol, TypeVar

from tqdm import tqdm

from audiollm.audio import AudioError, info
from audiollm.data.manifest import Record, record_seconds, write_jsonl
from audiollm.files import atomic_write

SPLIT_ORDER = ("train", "valid", "test", "test_unseen")
J = TypeVar("J", bound="Job")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".sph")


@dataclass
class Reject:
    """An item left out of the manifests: its id, the file at fault and why."""

    id: str
    path: str
    reason: str


class BadInput(ValueError):
    """A source file that cannot be used; carries the path and the problem for a Reject."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")

    def __reduce__(self) -> tuple:
        return BadInput, (self.path, self.problem)  # so it crosses a process pool intact


def source_dir(src_dir: str | Path | None, corpus: str) -> Path:
    """The corpus folder, checked to exist; the error says what to pass."""
    if src_dir is None:
        raise ValueError(f"{corpus}: --src is required (the folder holding the corpus as published)")
    src = Path(src_dir).expanduser().resolve()
    if not src.is_dir():
        raise ValueError(f"{corpus}: source folder {src} does not exist; pass the corpus root with --src")
    return src


def read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file without line ends; BadInput if unreadable or not UTF-8."""
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise BadInput(path, f"not valid UTF-8 text (byte {e.start}); re-encode the file as UTF-8") from None
    except OSError as e:
        raise BadInput(path, f"cannot read the file ({e.strerror})") from None


def read_transcripts(
    path: Path, parse: Callable[[str], tuple[str, str]]
) -> tuple[dict[str, str], dict[str, list[int]]]:
    """(text by id, line numbers by id for ids on more than one line) of the non-blank lines of a
    transcript file; `parse(line) -> (id, text)`. A repeated id is left out of the texts (which line
    is meant cannot be known) for `pair` to reject. BadInput as `read_lines`."""
    texts: dict[str, str] = {}
    lines: dict[str, list[int]] = {}
    for n, line in enumerate(read_lines(path), 1):
        if line.strip():
            uid, text = parse(line)
            texts[uid] = text
            lines.setdefault(uid, []).append(n)
    repeated = {uid: ns for uid, ns in lines.items() if len(ns) > 1}
    return {uid: t for uid, t in texts.items() if uid not in repeated}, repeated


def pair(
    audio: dict[str, Path],
    texts: dict[str, str],
    source: str,
    record: Callable[[str, Path, str], Record],
    repeated: dict[str, list[int]] | None = None,
) -> Iterator[Record | Reject]:
    """Join audio files and transcripts by utterance id, in id order.

    Yields `record(id, audio_path, text)` for each usable pair and a Reject for audio with no
    transcript, a transcript with no audio, an empty transcript, or an id on several lines of the
    transcript file (`repeated`: its line numbers). `source` names the transcript file in the reasons.
    """
    repeated = repeated or {}
    for uid in sorted(audio.keys() | texts.keys() | repeated.keys()):
        path, text = audio.get(uid), texts.get(uid)
        if uid in repeated:
            lines = ", ".join(map(str, repeated[uid]))
            yield Reject(
                uid, source, f"id on lines {lines} of {source}; which transcript is meant is ambiguous"
            )
        elif path is None:
            yield Reject(uid, source, f"transcript in {source} has no audio file")
        elif text is None:
            yield Reject(uid, str(path), f"missing transcript (none for this id in {source})")
        elif not text.strip():
            yield Reject(uid, str(path), f"empty transcript in {source}")
        else:
            yield record(uid, path, text.strip())


def read_csv(path: Path, columns: tuple[str, ...], delimiter: str = ",") -> list[dict[str, str]]:
    """Rows of a UTF-8 CSV (or TSV) file with a header line naming at least `columns`.

    Raises BadInput if the file is missing, not UTF-8, or lacks one of the columns.
    """
    reader = csv.DictReader(read_lines(path), delimiter=delimiter)
    missing = [c for c in columns if c not in (reader.fieldnames or [])]
    if missing:
        raise BadInput(path, f"no column {', '.join(missing)} in the header; expected the published layout")
    return list(reader)


def recordings(
    src: Path,
    index_name: str,
    columns: tuple[str, ...],
    caption: Callable[[dict[str, str]], str],
    clip_seconds: float,
) -> Iterator[Record | Reject]:
    """`clip_seconds` segments (split train) of the recordings listed in the TSV `src/index_name`.

    The TSV has a `file` column (relative to `src`) and the `columns` that `caption(row)` reads to
    write each recording's caption. A last segment shorter than half a clip is dropped unless it
    is the only one.
    """
    try:
        rows = read_csv(src / index_name, ("file", *columns), delimiter="\t")
    except BadInput as e:
        yield Reject(index_name, e.path, e.problem)
        return
    for row in rows:
        path, stem = src / row["file"], row["file"].split(".")[0]
        try:
            total = probe(path)
        except AudioError as e:
            yield Reject(stem, str(path), e.problem)
            continue
        text = caption(row).strip()
        if not text:
            yield Reject(stem, str(path), f"empty caption in {index_name}")
            continue
        starts = [i * clip_seconds for i in range(max(1, round(total / clip_seconds)))]
        for i, start in enumerate(starts):
            length = round(min(clip_seconds, total - start), 3)
            yield Record(
                id=f"{stem}-{i:03d}",
                audio=str(path),
                caption=text,
                start=start,
                duration=length,
                split="train",
            )


def youtube_index(root: Path) -> dict[str, Path]:
    """Audio files under `root` by the 11-character YouTube id their name starts with.

    Accepts the usual names of downloaded clips: `<ytid>.wav`, `<ytid>_<start>_<end>.flac`,
    `Y<ytid>.wav` (AudioSet style), in any format libsndfile reads.
    """
    index = {}
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file():
            index.setdefault(p.stem[:11], p)
            if p.stem.startswith("Y") and len(p.stem) >= 12:
                index.setdefault(p.stem[1:12], p)
    return index


def youtube_clip(uid: str, ytid: str, start: float, length: float, index: dict[str, Path]) -> Record | Reject:
    """A record for the `length`-second clip of video `ytid` at `start`, or a Reject if it is missing.

    A file no longer than the clip (plus 1 s) is taken to be the clip itself; a longer one is the
    whole video, and the record points at the segment.
    """
    path = index.get(ytid)
    if path is None:
        return Reject(uid, ytid, f"audio not downloaded: no file named after YouTube id {ytid}")
    try:
        total = probe(path)
    except AudioError as e:
        return Reject(uid, str(path), e.problem)
    if total > length + 1.0:
        if start >= total:
            return Reject(uid, str(path), f"clip starts at {start} s but the file lasts {total:.1f} s")
        return Record(id=uid, audio=str(path), start=start, duration=round(min(length, total - start), 3))
    return Record(id=uid, audio=str(path))


def chapter_record(speaker: str, subset: str, chapter: str) -> Callable[[str, Path, str], Record]:
    """Record maker for LibriSpeech / LibriTTS utterances of one speaker's chapter in `subset`."""

    def record(uid: str, path: Path, text: str) -> Record:
        extra = {"subset": subset, "chapter": chapter}
        return Record(uid, str(path), text, speaker=speaker, split=subset_split(subset), extra=extra)

    return record


def subset_split(subset: str) -> str:
    """The split of a LibriSpeech / LibriTTS subset folder: train-* -> train, dev-* -> valid, test-* -> test."""
    return {"dev": "valid", "test": "test"}.get(subset.split("-")[0], "train")


def probe(path: str | Path) -> float:
    """Duration in seconds from the audio header; AudioError if unreadable or empty."""
    meta = info(path)
    if meta.frames <= 0:
        raise AudioError(path, "contains no audio samples (zero length)")
    return meta.frames / meta.samplerate


def hash_split(key: str, valid: float = 0.05, test: float = 0.05) -> str:
    """A split chosen by a stable hash of `key`: the same key always lands in the same split."""
    u = int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big") / 2**64
    return "test" if u < test else "valid" if u < test + valid else "train"


def tree_digest(root: Path, skip: Path | None = None) -> str:
    """A digest of every file's relative path, size and mtime under `root` (what a re-run compares).

    `skip`: a folder left out (the output folder, when it lies inside the source).
    """
    h = hashlib.sha1()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if Path(dirpath, d) != skip)
        for name in sorted(filenames):
            p = Path(dirpath, name)
            st = p.stat()
            h.update(f"{p.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def builder_fingerprint(corpus: str, src: Path | None, minutes: float, seed: int) -> dict:
    """What an offline build depends on: its options and, when it reads a folder, that folder's files."""
    fingerprint = {"corpus": corpus, "minutes": minutes, "seed": seed}
    if src is not None:
        fingerprint.update(src=str(src), files=tree_digest(src))
    return fingerprint


def finished(out_dir: Path, fingerprint: dict) -> Path | None:
    """The main manifest of a finished run with this fingerprint, or None if there is work to do."""
    summary = out_dir / "summary.json"
    if not summary.is_file():
        return None
    done = json.loads(summary.read_text(encoding="utf-8"))
    if done.get("fingerprint") != fingerprint:
        return None
    main = out_dir / done["main"]
    return main if main.is_file() else None


def probe_all(items: Iterable[Record | Reject], desc: str) -> tuple[list[Record], list[Reject]]:
    """Fill each record's duration from its audio header; unusable audio (or none after `start`) becomes a
    Reject."""
    records, rejects = [], []
    for item in tqdm(items, desc=desc, unit="rec", disable=None):
        if isinstance(item, Reject):
            rejects.append(item)
            continue
        try:
            seconds = record_seconds(item)
        except AudioError as e:
            rejects.append(Reject(item.id, item.audio, e.problem))
            continue
        if item.duration is None:
            item.duration = round(seconds, 3)
        records.append(item)
    return records, rejects


def finish(out_dir: Path, records: list[Record], rejects: list[Reject], fingerprint: dict) -> Path:
    """Write `<split>.jsonl` per split, `rejects.jsonl`, then `summary.json`; returns the main manifest."""
    out_dir.mkdir(parents=True, exist_ok=True)
    by_split: dict[str, list[Record]] = {}
    for r in records:
        by_split.setdefault(r.split or "train", []).append(r)
    splits = sorted(
        by_split, key=lambda s: (SPLIT_ORDER.index(s) if s in SPLIT_ORDER else len(SPLIT_ORDER), s)
    )
    _remove_stale_splits(out_dir, keep=splits)
    for split in splits:
        write_jsonl(out_dir / f"{split}.jsonl", by_split[split])
    write_jsonl(out_dir / "rejects.jsonl", [asdict(r) for r in rejects])
    if not records:
        raise ValueError(f"no usable records; every item was rejected (see {out_dir / 'rejects.jsonl'})")
    main = "train.jsonl" if "train" in by_split else f"{splits[0]}.jsonl"
    summary = {
        "main": main,
        "kept": len(records),
        "rejected": len(rejects),
        "splits": {s: len(by_split[s]) for s in splits},
        "hours": round(sum(r.duration or 0.0 for r in records) / 3600, 4),
        "fingerprint": fingerprint,
    }
    with atomic_write(out_dir / "summary.json", "w") as f:
        f.write(json.dumps(summary, indent=1) + "\n")
    return out_dir / main


def _remove_stale_splits(out_dir: Path, keep: list[str]) -> None:
    """Delete split manifests an earlier run wrote that this run no longer has."""
    summary = out_dir / "summary.json"
    if summary.is_file():
        for split in json.loads(summary.read_text(encoding="utf-8"))["splits"]:
            if split not in keep:
                (out_dir / f"{split}.jsonl").unlink(missing_ok=True)
        summary.unlink()


class Job(Protocol):
    """One file an offline builder writes: its record id and output path."""

    id: str
    path: Path


def produce(
    jobs: Iterable[J],
    make: Callable[[J], float],
    budget_s: float,
    workers: int,
    desc: str,
    processes: bool = False,
) -> tuple[list[tuple[J, float]], list[Reject]]:
    """Run `make(job)` (writes `job.path`, returns its seconds) in order until the audio reaches `budget_s`.

    Jobs run in batches of `workers` threads (or processes, for pure-Python work); results are
    taken in job order and the first job that would pass the budget ends the run, so the output
    depends only on the job list. A job whose `make` raises BadInput or AudioError is rejected.
    """
    done: list[tuple[J, float]] = []
    rejects: list[Reject] = []
    total = 0.0
    pool_cls = ProcessPoolExecutor if processes and workers > 1 else ThreadPoolExecutor
    ctx = {"mp_context": multiprocessing.get_context("spawn")} if pool_cls is ProcessPoolExecutor else {}
    it = iter(jobs)
    with (
        pool_cls(max_workers=workers, **ctx) as pool,
        tqdm(total=round(budget_s), desc=desc, unit="s", disable=None) as bar,
    ):
        while batch := list(islice(it, workers * 2)):
            futures = [pool.submit(make, job) for job in batch]
            for job, fut in zip(batch, futures, strict=True):
                try:
                    seconds = fut.result()
                except (BadInput, AudioError) as e:
                    rejects.append(Reject(job.id, str(job.path), str(e)))
                    continue
                if total + seconds > budget_s:
                    return done, rejects
                total += seconds
                done.append((job, seconds))
                bar.update(round(total) - bar.n)
    return done, rejects


def describe(out_dir: str | Path) -> str:
    """One line for people: kept per split, rejected, hours, and where the rejects are."""
    s = json.loads((Path(out_dir) / "summary.json").read_text(encoding="utf-8"))
    splits = ", ".join(f"{k} {v}" for k, v in s["splits"].items())
    line = f"kept {s['kept']} records ({splits}; {s['hours']:.3f} h), rejected {s['rejected']}"
    return line + (f" (see {Path(out_dir) / 'rejects.jsonl'})" if s["rejected"] else "")


def prepare_from(corpus: str, src: Path, out_dir: str | Path, items: Iterable[Record | Reject]) -> Path:
    """The whole run for a corpus read in place: resume check, probing, outputs; returns the main manifest.

    `items` is consumed only when the fingerprint (corpus, source folder and its files) differs
    from a finished run's, so a generator's work is never done twice.
    """
    out = Path(out_dir).expanduser().resolve()
    fingerprint = {"corpus": corpus, "src": str(src), "files": tree_digest(src, skip=out)}
    done = finished(out, fingerprint)
    if done is not None:
        return done
    records, rejects = probe_all(items, corpus)
    return finish(out, records, rejects, fingerprint)
