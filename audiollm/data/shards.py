"""Tokenised corpora on disk: codec codes in memory-mappable shards, and the `tokenize` job that writes them.

Layout of an output folder:
    codec.json              the codec that made the codes (name or dir, rates, K, codebook size)
    shard_00000.npy         codes of many records side by side, (K, sum of T) uint16/int32
    shard_00000.json        written last: the shard's index lines and rejects (a shard is done iff it exists)
    index.jsonl             one line per record: its shard, offset, frames, and the record's metadata
    rejects.jsonl           records that could not be tokenised, with the reason

Records are planned into shards by a pure function of the manifest (sorted by length), so a rerun
after an interruption keeps the finished shards and redoes only the rest.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from audiollm.audio import AudioError, info, load
from audiollm.codecs import Codec, load_codec
from audiollm.data.manifest import Record, read_manifest, write_jsonl


@dataclass
class TokenizeSummary:
    """Counts of one tokenize run."""

    out: Path
    kept: int = 0
    rejected: int = 0
    reused_shards: int = 0
    written_shards: int = 0
    seconds: float = 0.0
    frames: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        why = "".join(f"\n  {n} x {r}" for r, n in sorted(self.reasons.items(), key=lambda x: -x[1]))
        return (
            f"tokenised {self.kept} records ({self.seconds / 3600:.2f} h, {self.frames} frames) into {self.out}; "
            f"{self.rejected} rejected{' (see rejects.jsonl)' if self.rejected else ''}; "
            f"shards: {self.written_shards} written, {self.reused_shards} kept from an earlier run{why}"
        )


def _codec_description(codec: Codec, name: str) -> dict:
    return {
        "codec": name,
        "sample_rate": codec.sample_rate,
        "channels": codec.channels,
        "frame_rate": codec.frame_rate,
        "num_codebooks": codec.num_codebooks,
        "codebook_size": codec.codebook_size,
        "bandwidth": getattr(codec, "bandwidth", None),  # EnCodec's kbps (None for codecs without one)
    }


def _measure(records: list[Record]) -> tuple[list[tuple[Record, float]], list[dict]]:
    """Duration of each record from its header (no decoding); unreadable ones become rejects."""
    sized, rejects = [], []
    for r in records:
        try:
            meta = info(r.audio)
        except AudioError as e:
            rejects.append({"id": r.id, "audio": r.audio, "reason": e.problem})
            continue
        total = meta.frames / meta.samplerate
        seconds = min(r.duration, total - r.start) if r.duration is not None else total - r.start
        sized.append((r, seconds))
    return sized, rejects


def plan_shards(sized: list[tuple[Record, float]], shard_seconds: float) -> list[list[tuple[Record, float]]]:
    """Sort by (duration, id) and cut into consecutive shards of about `shard_seconds` of audio."""
    shards, current, total = [], [], 0.0
    for item in sorted(sized, key=lambda x: (x[1], x[0].id)):
        current.append(item)
        total += item[1]
        if total >= shard_seconds:
            shards.append(current)
            current, total = [], 0.0
    if current:
        shards.append(current)
    return shards


def _batches(items: list[tuple[Record, float]], batch_seconds: float) -> Iterator[list[tuple[Record, float]]]:
    """Length-sorted items grouped so that (longest item x count) stays under `batch_seconds`."""
    batch: list[tuple[Record, float]] = []
    for item in items:
        if batch and item[1] * (len(batch) + 1) > batch_seconds:
            yield batch
            batch = []
        batch.append(item)
    if batch:
        yield batch


def _encode_batch(codec: Codec, wavs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Encode (C, N) clips padded to one length; each result is trimmed to its own frames (K, T)."""
    longest = max(w.shape[-1] for w in wavs)
    batch = torch.zeros(len(wavs), codec.channels, longest)  # (B, C, N)
    for i, w in enumerate(wavs):
        batch[i, :, : w.shape[-1]] = w
    codes = codec.encode(batch).cpu()  # (B, K, T)
    frames = [math.ceil(w.shape[-1] * codec.frame_rate / codec.sample_rate) for w in wavs]
    return [codes[i, :, :t] for i, t in enumerate(frames)]


def _load_batch(
    codec: Codec, batch: list[tuple[Record, float]], min_seconds: float
) -> tuple[list[Record], list[torch.Tensor], list[dict]]:
    """Read a batch's audio at the codec's rate and channels; bad or too-short clips become rejects."""
    ok, wavs, rejects = [], [], []
    for r, _ in batch:
        try:
            wav, _ = load(r.audio, codec.sample_rate, codec.channels, r.start, r.duration)
            if wav.shape[-1] < min_seconds * codec.sample_rate:
                raise AudioError(
                    r.audio, f"too short ({wav.shape[-1] / codec.sample_rate:.3f}s < {min_seconds}s)"
                )
        except AudioError as e:
            rejects.append({"id": r.id, "audio": r.audio, "reason": e.problem})
            continue
        ok.append(r)
        wavs.append(wav)
    return ok, wavs, rejects


def _write_shard(
    codec: Codec,
    items: list[tuple[Record, float]],
    path: Path,
    batch_seconds: float,
    min_seconds: float,
    bar: tqdm,
) -> dict:
    """Load, encode and store one shard; returns its {"records": [...], "rejects": [...]} summary."""
    dtype = np.uint16 if codec.codebook_size <= 2**16 else np.int32
    pieces, lines, rejects, offset = [], [], [], 0
    for batch in _batches(items, batch_seconds):
        ok, wavs, bad = _load_batch(codec, batch, min_seconds)
        rejects += bad
        for r, codes in zip(ok, _encode_batch(codec, wavs) if wavs else [], strict=True):
            T = codes.shape[-1]
            pieces.append(codes.numpy().astype(dtype))
            lines.append({**r.to_json(), "shard": path.stem, "offset": offset, "frames": T})
            offset += T
        bar.update(sum(seconds for _, seconds in batch))
    data = np.concatenate(pieces, axis=1) if pieces else np.zeros((codec.num_codebooks, 0), dtype)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, data)
    tmp.replace(path)
    return {"records": lines, "rejects": rejects}


def tokenize_manifest(
    manifest: str | Path | list[str | Path],
    out: str | Path,
    codec: str | Path | Codec,
    checkpoint: str | Path | None = None,
    bandwidth: float | None = None,
    batch_seconds: float | None = None,
    shard_seconds: float = 3600.0,
    min_seconds: float = 0.1,
    device: str = "cpu",
) -> TokenizeSummary:
    """Encode every record of `manifest` (one or several JSONL files) with `codec` into shards under `out`.

    Bad audio never stops the run: it is listed in rejects.jsonl. A rerun keeps finished shards.
    `batch_seconds` bounds a batch's padded audio (None: batches on CUDA, one clip at a time on CPU).
    """
    manifests = manifest if isinstance(manifest, list) else [manifest]
    records = [
        r for m in manifests for r in read_manifest(m)
    ]  # cheap checks first: a bad manifest fails before the codec loads
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    name = str(codec) if not isinstance(codec, Codec) else getattr(codec, "name", type(codec).__name__)
    if not isinstance(codec, Codec):
        options = {"device": device}
        if checkpoint is not None:
            options["checkpoint"] = checkpoint
        if bandwidth is not None:
            options["bandwidth"] = bandwidth
        codec = load_codec(codec, **options)
    _check_same_codec(out / "codec.json", _codec_description(codec, name))
    if (
        batch_seconds is None
    ):  # on CPU, one clip at a time is 2x faster (BENCHMARKS.md); GPUs gain from batches
        batch_seconds = 80.0 if str(getattr(codec, "device", device)).startswith("cuda") else 0.0

    sized, rejects = _measure(records)
    shards = plan_shards(sized, shard_seconds)
    summary = TokenizeSummary(out)
    index: list[dict] = []
    with tqdm(total=sum(s for _, s in sized), unit="s", desc="tokenize", unit_scale=True) as bar:
        for i, items in enumerate(shards):
            npy, done = out / f"shard_{i:05d}.npy", out / f"shard_{i:05d}.json"
            if done.is_file() and npy.is_file():
                result = json.loads(done.read_text())
                summary.reused_shards += 1
                bar.update(sum(s for _, s in items))
            else:
                result = _write_shard(codec, items, npy, batch_seconds, min_seconds, bar)
                write_jsonl(done, [result])  # one JSON object; renamed into place last
                summary.written_shards += 1
            index += result["records"]
            rejects += result["rejects"]
    write_jsonl(out / "index.jsonl", index)
    write_jsonl(out / "rejects.jsonl", rejects)
    summary.kept, summary.rejected = len(index), len(rejects)
    summary.frames = sum(r["frames"] for r in index)
    summary.seconds = summary.frames / codec.frame_rate
    summary.reasons = dict(Counter(r["reason"].split(" (")[0] for r in rejects))  # reason without its detail
    return summary


def _check_same_codec(path: Path, description: dict) -> None:
    if path.is_file():
        before = json.loads(path.read_text())
        if before != description:
            raise ValueError(
                f"{path}: this folder was tokenised with another codec ({before}); use a new --out folder"
            )
    else:
        path.write_text(json.dumps(description, indent=2) + "\n")


class CodeShards:
    """Read access to a tokenised folder: `shards[i] -> (codes (K, T) uint16/int32 memmap view, record dict)`."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        index = self.directory / "index.jsonl"
        if not index.is_file():
            raise FileNotFoundError(f"{index}: not found; run `audiollm tokenize` first")
        self.codec = json.loads((self.directory / "codec.json").read_text())
        with open(index, encoding="utf-8") as f:
            self.records = [json.loads(line) for line in f if line.strip()]
        self._arrays: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[np.ndarray, dict]:
        return self.read(self.records[i]), self.records[i]

    def read(self, record: dict) -> np.ndarray:
        """Codes (K, T) of one of this folder's index records, a view into its memory-mapped shard."""
        if record["shard"] not in self._arrays:
            self._arrays[record["shard"]] = np.load(self.directory / f"{record['shard']}.npy", mmap_mode="r")
        return self._arrays[record["shard"]][:, record["offset"] : record["offset"] + record["frames"]]
