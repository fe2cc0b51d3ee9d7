"""Tokenised corpora on disk: codec codes in memory-mappable shards, and the `tokenize` job that writes them.

Layout of an output folder:
    codec.json              the codec that made the codes (name or dir, rates, K, codebook size, weights digest)
    shard_<key>.npy         codes of a run of consecutive records side by side, (K, sum of T) uint16/int32
    shard_<key>.json        written last: the shard's offsets, frames and rejects (a shard is done iff it exists)
    index.jsonl             one line per record, in manifest order: its shard, offset, frames and metadata
    rejects.jsonl           records that could not be tokenised, with the reason

A shard is named by a digest of what it holds: its records' ids, audio paths, segments and file
stamps (size, mtime), and the codec and settings that encode them. Shard boundaries are
content-defined (a record ends a shard when a hash of its id says so, or at the size caps), so a
record added to or removed from a manifest changes only the shard around it; a rerun re-plans,
keeps every shard whose digest is unchanged, writes the others and removes the stale ones.

Under a launcher that sets RANK / WORLD_SIZE (torchrun) or SLURM_PROCID / SLURM_STEP_NUM_TASKS (srun), every
rank plans the same shards, writes a disjoint share of them, and rank 0 writes the index once every
planned shard is on disk: the folder is the same as a one-process run's.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from audiollm.audio import AudioError, load
from audiollm.codecs import Codec, load_codec
from audiollm.data.manifest import Record, read_manifests, record_seconds, write_jsonl
from audiollm.files import atomic_write

FORMAT = 2  # codec.json's "format": shards named by content (folders without it predate that)
WAIT_POLL = 1.0  # seconds between rank 0's looks for the other ranks' shards


@dataclass
class TokenizeSummary:
    """Counts of one tokenize run (of this rank's share when several ranks run)."""

    out: Path
    kept: int = 0
    rejected: int = 0
    reused_shards: int = 0
    written_shards: int = 0
    removed_shards: int = 0
    seconds: float = 0.0
    frames: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    rank: int = 0
    world_size: int = 1

    def describe(self) -> str:
        shards = f"shards: {self.written_shards} written, {self.reused_shards} kept from an earlier run" + (
            f", {self.removed_shards} stale removed" if self.removed_shards else ""
        )
        if self.rank:
            return f"rank {self.rank} of {self.world_size}: {shards} in {self.out}; rank 0 writes the index"
        why = "".join(f"\n  {n} x {r}" for r, n in sorted(self.reasons.items(), key=lambda x: -x[1]))
        ranks = f" by {self.world_size} ranks" if self.world_size > 1 else ""
        return (
            f"tokenised {self.kept} records ({self.seconds / 3600:.2f} h, {self.frames} frames) into {self.out}"
            f"{ranks}; {self.rejected} rejected{' (see rejects.jsonl)' if self.rejected else ''}; {shards}{why}"
        )


@dataclass
class Item:
    """One measured manifest record: its position in the manifest, seconds to encode, file stamp."""

    pos: int
    record: Record
    seconds: float
    stamp: tuple[int, int]  # (size in bytes, mtime in ns) of the audio file


def launcher_rank() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's RANK / WORLD_SIZE / LOCAL_RANK, else srun's
    SLURM_PROCID / SLURM_STEP_NUM_TASKS / SLURM_LOCALID, else (0, 1, 0).

    The tasks of the srun step count, not the job's SLURM_NTASKS: a batch script that runs the
    command without srun also sees SLURM_NTASKS and SLURM_PROCID=0, and is one process.
    """
    launchers = (
        ("RANK", "WORLD_SIZE", "LOCAL_RANK"),
        ("SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_LOCALID"),
    )
    for rank, world, local in launchers:
        if rank in os.environ and world in os.environ:
            r, w = int(os.environ[rank]), int(os.environ[world])
            if not 0 <= r < w:
                raise ValueError(f"{rank}={r} is not in [0, {world}={w})")
            return r, w, int(os.environ.get(local, "0"))
    return 0, 1, 0


def _weights_digest(codec: Codec) -> str:
    """blake2b of the codec's parameters and buffers (its codebooks where it exposes no module)."""
    module = codec if isinstance(codec, torch.nn.Module) else getattr(codec, "model", None)
    tensors = (
        sorted(module.state_dict().items())
        if isinstance(module, torch.nn.Module)
        else [("codebooks", codec.codebook_vectors())]
    )
    h = hashlib.blake2b(digest_size=16)
    for key, t in tensors:
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _codec_description(codec: Codec, name: str) -> dict:
    return {
        "codec": str(Path(name).resolve()) if Path(name).is_dir() else name,
        "sample_rate": codec.sample_rate,
        "channels": codec.channels,
        "frame_rate": codec.frame_rate,
        "num_codebooks": codec.num_codebooks,
        "codebook_size": codec.codebook_size,
        "bandwidth": getattr(codec, "bandwidth", None),  # EnCodec's kbps (None for codecs without one)
        "weights": _weights_digest(codec),
        "format": FORMAT,
    }


def _measure(records: list[Record]) -> tuple[list[Item], list[tuple[int, dict]]]:
    """Duration of each record from its header (no decoding); unusable ones become (position, reject)."""
    items, rejects = [], []
    for pos, r in enumerate(records):
        try:
            seconds = record_seconds(r)
        except AudioError as e:
            rejects.append((pos, {"id": r.id, "audio": r.audio, "reason": e.problem}))
            continue
        st = os.stat(r.audio)
        items.append(Item(pos, r, seconds, (st.st_size, st.st_mtime_ns)))
    return items, rejects


def _ms(items: list[Item]) -> int:
    """Milliseconds of audio of `items`, for the progress bar."""
    return sum(round(i.seconds * 1000) for i in items)


def _unit(key: str) -> float:
    """A uniform number in [0, 1) fixed by `key`."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") / 2**64


def plan_shards(items: list[Item], shard_seconds: float, shard_records: int) -> list[list[Item]]:
    """Cut items (in manifest order) into runs of at most `shard_seconds` of audio and `shard_records`.

    A record also ends its run when a hash of its id falls under 4 x its share of either cap, so runs
    average about a quarter of the caps and their ends move with the records, not with positions:
    adding or removing a record changes one run (and rarely the next), never the rest.
    """
    shards, current, total = [], [], 0.0
    for item in items:
        current.append(item)
        total += item.seconds
        chance = 4 * max(item.seconds / shard_seconds, 1 / shard_records)
        if total >= shard_seconds or len(current) >= shard_records or _unit(item.record.id) < chance:
            shards.append(current)
            current, total = [], 0.0
    if current:
        shards.append(current)
    return shards


def shard_name(items: list[Item], settings: dict) -> str:
    """`shard_<digest>` of what a shard holds: each record's id, audio path, segment and file stamp, and
    `settings` (the codec description and the options that change codes or rejects)."""
    content = [
        [i.record.id, os.path.abspath(i.record.audio), i.record.start, i.record.duration, list(i.stamp)]
        for i in items
    ]
    digest = hashlib.blake2b(json.dumps([settings, content]).encode(), digest_size=10).hexdigest()
    return f"shard_{digest}"


def assign(shards: list[list[Item]], world_size: int) -> list[int]:
    """The rank of each shard: in plan order, each goes to the rank with the fewest seconds so far."""
    load, ranks = [0.0] * world_size, []
    for items in shards:
        rank = min(range(world_size), key=lambda r: (load[r], r))
        load[rank] += sum(i.seconds for i in items)
        ranks.append(rank)
    return ranks


def _batches(items: list[Item], batch_seconds: float) -> Iterator[list[Item]]:
    """Length-sorted items grouped so that (longest item x count) stays under `batch_seconds`."""
    batch: list[Item] = []
    for item in sorted(items, key=lambda i: (i.seconds, i.pos)):
        if batch and item.seconds * (len(batch) + 1) > batch_seconds:
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
    if codes.numel() and (codes.min() < 0 or codes.max() >= codec.codebook_size):
        raise ValueError(f"the codec wrote codes outside [0, {codec.codebook_size}); it is broken")
    frames = [math.ceil(w.shape[-1] * codec.frame_rate / codec.sample_rate) for w in wavs]
    return [codes[i, :, :t] for i, t in enumerate(frames)]


def _load_batch(
    codec: Codec, batch: list[Item], min_seconds: float
) -> tuple[list[Item], list[torch.Tensor], list[dict]]:
    """Read a batch's audio at the codec's rate and channels; bad or too-short clips become rejects."""
    ok, wavs, rejects = [], [], []
    for item in batch:
        r = item.record
        try:
            wav, _ = load(r.audio, codec.sample_rate, codec.channels, r.start, r.duration)
            if wav.shape[-1] < min_seconds * codec.sample_rate:
                raise AudioError(
                    r.audio, f"too short ({wav.shape[-1] / codec.sample_rate:.3f}s < {min_seconds}s)"
                )
        except AudioError as e:
            rejects.append({"id": r.id, "reason": e.problem})
            continue
        ok.append(item)
        wavs.append(wav)
    return ok, wavs, rejects


def _write_shard(
    codec: Codec, items: list[Item], path: Path, batch_seconds: float, min_seconds: float, bar: tqdm
) -> None:
    """Load, encode and store one shard: codes in `path` (.npy), then its summary (.json) last."""
    dtype = np.uint16 if codec.codebook_size <= 2**16 else np.int32
    pieces, lines, rejects, offset = [], [], [], 0
    for batch in _batches(items, batch_seconds):
        ok, wavs, bad = _load_batch(codec, batch, min_seconds)
        rejects += bad
        for item, codes in zip(ok, _encode_batch(codec, wavs) if wavs else [], strict=True):
            T = codes.shape[-1]
            pieces.append(codes.numpy().astype(dtype))
            lines.append({"id": item.record.id, "offset": offset, "frames": T})
            offset += T
        bar.update(_ms(batch))
    data = np.concatenate(pieces, axis=1) if pieces else np.zeros((codec.num_codebooks, 0), dtype)
    with atomic_write(path) as f:
        np.save(f, data)
    write_jsonl(
        path.with_suffix(".json"), [{"records": lines, "rejects": rejects}]
    )  # renamed into place last


def tokenize_manifest(
    manifest: str | Path | list[str | Path],
    out: str | Path,
    codec: str | Path | Codec,
    checkpoint: str | Path | None = None,
    bandwidth: float | None = None,
    batch_seconds: float | None = None,
    shard_seconds: float = 600.0,
    shard_records: int = 2000,
    min_seconds: float = 0.1,
    device: str = "cpu",
    rank: int | None = None,
    world_size: int | None = None,
) -> TokenizeSummary:
    """Encode every record of `manifest` (one or several JSONL files) with `codec` into shards under `out`.

    Bad audio never stops the run: it is listed in rejects.jsonl. A rerun keeps the shards whose content
    is unchanged. `batch_seconds` bounds a batch's padded audio (None: batches on CUDA, one clip at a time
    on CPU). `shard_seconds` / `shard_records` cap a shard (what a kill can lose). `rank` / `world_size`
    (None: from the launcher's environment) split the shards between processes; rank 0 writes the index.
    """
    manifests = manifest if isinstance(manifest, list) else [manifest]
    records = read_manifests(manifests)  # cheap checks first: a bad manifest fails before the codec loads
    if shard_seconds <= 0 or shard_records < 1:
        raise ValueError(
            f"shard_seconds must be > 0 and shard_records >= 1, got {shard_seconds}, {shard_records}"
        )
    env_rank, env_world, local_rank = launcher_rank()
    rank, world_size = env_rank if rank is None else rank, env_world if world_size is None else world_size
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if device == "cuda" and world_size > 1:
        device = f"cuda:{local_rank}"  # one device per rank of this node
    codec, description = _open_codec(codec, checkpoint, bandwidth, device)
    _check_same_codec(out / "codec.json", description)
    if (
        batch_seconds is None
    ):  # on CPU, one clip at a time is 2x faster (BENCHMARKS.md); GPUs gain from batches
        batch_seconds = 80.0 if str(getattr(codec, "device", device)).startswith("cuda") else 0.0

    items, rejects = _measure(records)
    shards = plan_shards(items, shard_seconds, shard_records)
    settings = {**description, "codec": None, "batch_seconds": batch_seconds, "min_seconds": min_seconds}
    names = [shard_name(s, settings) for s in shards]
    owners = assign(shards, world_size)
    summary = TokenizeSummary(out, rank=rank, world_size=world_size)
    started = time.time()
    mine = [i for i, owner in enumerate(owners) if owner == rank]
    _write_own_shards(codec, [shards[i] for i in mine], [out / names[i] for i in mine], summary,
                      batch_seconds, min_seconds)  # fmt: skip
    if rank == 0:
        _wait_for(out, [n for n, owner in zip(names, owners, strict=True) if owner != 0], started)
        _merge(out, shards, names, rejects, summary, codec.frame_rate)
    return summary


def _write_own_shards(
    codec: Codec, shards: list[list[Item]], stems: list[Path], summary: TokenizeSummary,
    batch_seconds: float, min_seconds: float,
) -> None:  # fmt: skip
    """Write this rank's shards (stems: out/<name>), keeping finished ones, with one progress bar. A failure
    on a rank > 0 leaves `.rank<r>.failed`, which tells rank 0 to stop waiting for its shards."""
    rank, world_size = summary.rank, summary.world_size
    desc = "tokenize" if world_size == 1 else f"tokenize rank {rank}/{world_size}"
    total = sum(_ms(s) for s in shards)  # integer ms, so the updates add up to the total exactly
    failed = summary.out / f".rank{rank}.failed"
    failed.unlink(missing_ok=True)
    try:
        with tqdm(total=total, unit="s", desc=desc, unit_scale=1e-3, position=rank) as bar:
            for shard, stem in zip(shards, stems, strict=True):
                if _done(stem):
                    summary.reused_shards += 1
                    bar.update(_ms(shard))
                else:
                    _write_shard(codec, shard, stem.with_suffix(".npy"), batch_seconds, min_seconds, bar)
                    summary.written_shards += 1
    except Exception as e:
        if rank > 0:
            failed.write_text(f"{type(e).__name__}: {e}\n")
        raise


def _open_codec(
    codec: str | Path | Codec, checkpoint: str | Path | None, bandwidth: float | None, device: str
) -> tuple[Codec, dict]:
    """The codec (loaded when named) and its codec.json description."""
    if isinstance(codec, Codec):
        return codec, _codec_description(codec, getattr(codec, "name", type(codec).__name__))
    options = {"device": device}
    if checkpoint is not None:
        options["checkpoint"] = checkpoint
    if bandwidth is not None:
        options["bandwidth"] = bandwidth
    loaded = load_codec(codec, **options)
    return loaded, _codec_description(loaded, str(codec))


def _done(stem: Path) -> bool:
    return stem.with_suffix(".json").is_file() and stem.with_suffix(".npy").is_file()


def _wait_for(out: Path, names: list[str], since: float) -> None:
    """Block until the other ranks' shards are all on disk (a barrier through the shared folder); raise
    if a rank has left a failure note there since `since` (a time.time())."""
    said = False
    while missing := [n for n in names if not _done(out / n)]:
        for note in out.glob(".rank*.failed"):
            if note.stat().st_mtime >= since:
                raise RuntimeError(f"{note}: {note.read_text().strip()}; rerun every rank to resume")
        if not said:
            print(f"tokenize rank 0: waiting for {len(missing)} shards of the other ranks", flush=True)
            said = True
        time.sleep(WAIT_POLL)


def _merge(
    out: Path,
    shards: list[list[Item]],
    names: list[str],
    rejects: list[tuple[int, dict]],
    summary: TokenizeSummary,
    frame_rate: float,
) -> None:
    """Write index.jsonl (manifest order) and rejects.jsonl from the shards; remove stale shard files."""
    index = []
    for items, stem in zip(shards, names, strict=True):
        result = json.loads((out / f"{stem}.json").read_text())
        placed = {line["id"]: line for line in result["records"]}
        bad = {line["id"]: line["reason"] for line in result["rejects"]}
        for item in items:
            r = item.record
            if r.id in placed:
                index.append({**r.to_json(), "shard": stem, **placed[r.id]})  # + offset, frames
            else:
                rejects.append((item.pos, {"id": r.id, "audio": r.audio, "reason": bad[r.id]}))
    rejects = [reject for _, reject in sorted(rejects, key=lambda x: x[0])]
    write_jsonl(out / "index.jsonl", index)
    write_jsonl(out / "rejects.jsonl", rejects)
    keep = set(names)
    for path in [
        *out.glob("shard_*.npy"),
        *out.glob("shard_*.json"),
        *out.glob(".shard_*.tmp"),
        *out.glob(".rank*.failed"),
    ]:
        if path.name.startswith(".") or path.stem not in keep:
            summary.removed_shards += path.suffix == ".json"
            path.unlink(missing_ok=True)
    summary.kept, summary.rejected = len(index), len(rejects)
    summary.frames = sum(r["frames"] for r in index)
    summary.seconds = summary.frames / frame_rate
    summary.reasons = dict(Counter(r["reason"].split(" (")[0] for r in rejects))  # reason without its detail


def _check_same_codec(path: Path, description: dict) -> None:
    """Refuse a folder made by another codec (compared without its name: a dir may be named two ways)."""
    if path.is_file():
        before = json.loads(path.read_text())
        if before.get("format") != FORMAT:
            raise ValueError(
                f"{path.parent}: tokenised by an older audiollm (shards not named by their content); "
                "re-tokenise into a new --out folder (reading it still works)"
            )
        if {**before, "codec": None} != {**description, "codec": None}:
            raise ValueError(
                f"{path}: this folder was tokenised with another codec ({before}); use a new --out folder"
            )
    else:
        with atomic_write(path, "w", concurrent=True) as f:  # ranks may race here; same content
            f.write(json.dumps(description, indent=2) + "\n")


class CodeShards:
    """Read access to a tokenised folder: `shards[i] -> (codes (K, T) uint16/int32 memmap view, record dict)`.

    Opening checks every shard against codec.json and the index (shape, extent, codes in
    [0, codebook_size)), so a damaged folder fails here, not in the middle of a training run; the check
    reads each shard once (about a second per GB).
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        index = self.directory / "index.jsonl"
        if not index.is_file():
            raise FileNotFoundError(f"{index}: not found; run `audiollm tokenize` first")
        self.codec = json.loads((self.directory / "codec.json").read_text())
        with open(index, encoding="utf-8") as f:
            self.records = [json.loads(line) for line in f if line.strip()]
        self._arrays: dict[str, np.ndarray] = {}
        self._check()

    def _check(self) -> None:
        K, size = self.codec["num_codebooks"], self.codec["codebook_size"]
        extent: dict[str, int] = {}
        for r in self.records:
            extent[r["shard"]] = max(extent.get(r["shard"], 0), r["offset"] + r["frames"])
        for shard, end in extent.items():
            codes, path = self._array(shard), self.directory / f"{shard}.npy"
            if codes.ndim != 2 or codes.shape[0] != K or codes.shape[1] < end:
                raise ValueError(
                    f"{path}: codes shaped {codes.shape}, expected ({K}, >= {end}) from codec.json and "
                    "index.jsonl; re-tokenise the folder"
                )
            if codes.size and (int(codes.min()) < 0 or int(codes.max()) >= size):
                raise ValueError(
                    f"{path}: codes span [{int(codes.min())}, {int(codes.max())}], outside [0, {size}) of "
                    "codec.json; the shard is damaged, re-tokenise the folder"
                )

    def _array(self, shard: str) -> np.ndarray:
        if shard not in self._arrays:
            path = self.directory / f"{shard}.npy"
            try:
                self._arrays[shard] = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as e:
                raise ValueError(f"{path}: cannot read the shard ({e}); re-tokenise the folder") from None
        return self._arrays[shard]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[np.ndarray, dict]:
        return self.read(self.records[i]), self.records[i]

    def read(self, record: dict) -> np.ndarray:
        """Codes (K, T) of one of this folder's index records, a view into its memory-mapped shard."""
        return self._array(record["shard"])[:, record["offset"] : record["offset"] + record["frames"]]
