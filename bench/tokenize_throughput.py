"""Tokenisation throughput: hours of audio per hour of wall time.

`--mode batching` (default) runs `tokenize_manifest` twice over the same real recordings in one process
(FSDD digits and the LJSpeech subset from ../shared/data), once with batches of `--batch-seconds` of
audio and once with one file per batch, and prints ratio=X.XX (batched speed / one-at-a-time speed).

`--mode ranks` runs `audiollm tokenize` under torchrun with 1 process and with `--ranks` processes
(`--threads` torch threads each) over the same manifest, checks that both folders are byte-equal, and
prints ratio=X.XX (wall time of the N-process run / the 1-process run; process start-up included).

    python bench/tokenize_throughput.py [--codec encodec_24khz|DIR] [--files 200] [--batch-seconds 80]
    python bench/tokenize_throughput.py --mode ranks --ranks 2 --threads 1 [--shard-seconds 20]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from encodec import EncodecModel

from audiollm.codecs.encodec import EncodecCodec
from audiollm.data.manifest import write_jsonl
from audiollm.data.shards import tokenize_manifest

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def build_manifest(path: Path, files: int) -> Path:
    digits = sorted((DATA / "fsdd_spoken_digits" / "recordings").glob("*.wav"))[: files // 2]
    lj = sorted((DATA / "ljspeech_subset" / "wavs").glob("*.flac"))[: files - len(digits)]
    return write_jsonl(path, [{"id": p.stem, "audio": str(p)} for p in digits + lj])


def ranks(args: argparse.Namespace, codec: str | EncodecCodec, tmp: Path, manifest: Path) -> None:
    """Wall time of `audiollm tokenize` under torchrun with 1 and with `args.ranks` processes."""
    if not isinstance(codec, str):
        codec = str(codec.save_pretrained(tmp / "codec"))
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    walls = {}
    for n in (1, args.ranks):
        out = tmp / f"ranks{n}"
        argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}"]
        argv += ["-m", "audiollm.cli", "tokenize", str(manifest), "--codec", codec, "--out", str(out)]
        argv += ["--shard-seconds", str(args.shard_seconds)]
        t = time.perf_counter()
        subprocess.run(argv, env=env, check=True, capture_output=True, text=True)
        walls[n] = time.perf_counter() - t
        print(f"tokenize with {n} process(es) x {args.threads} thread(s): {walls[n]:.1f} s wall")
    one, many = tmp / "ranks1", tmp / f"ranks{args.ranks}"
    files = sorted(p.name for p in one.iterdir())
    same = files == sorted(p.name for p in many.iterdir()) and all(
        (one / f).read_bytes() == (many / f).read_bytes() for f in files
    )
    print(f"folders byte-equal: {same} ({len(files)} files)")
    print(f"tokenize {args.ranks} processes vs 1: ratio={walls[args.ranks] / walls[1]:.2f} (wall time)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--codec", default="encodec_24khz", help="encodec_24khz (offline-built weights) or a codec dir"
    )
    ap.add_argument("--files", type=int, default=120)
    ap.add_argument("--batch-seconds", type=float, default=80.0)
    ap.add_argument("--mode", choices=("batching", "ranks"), default="batching")
    ap.add_argument("--ranks", type=int, default=2, help="processes of the parallel run (--mode ranks)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process (--mode ranks)")
    ap.add_argument("--shard-seconds", type=float, default=20.0, help="shard cap (--mode ranks)")
    args = ap.parse_args()

    torch.manual_seed(0)
    codec = args.codec
    if codec == "encodec_24khz":  # no published weights offline; compute does not depend on them
        codec = EncodecCodec("encodec_24khz", EncodecModel.encodec_model_24khz(pretrained=False), 6.0)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = build_manifest(Path(tmp) / "m.jsonl", args.files)
        if args.mode == "ranks":
            return ranks(args, codec, Path(tmp), manifest)
        if not isinstance(codec, str):
            codec.encode(torch.zeros(2, 1, 24000))  # warm-up, so neither timed run pays first-call costs
        speeds = {}
        for label, batch_seconds in (("batched", args.batch_seconds), ("one-at-a-time", 0.0)):
            t = time.perf_counter()
            summary = tokenize_manifest(manifest, Path(tmp) / label, codec, batch_seconds=batch_seconds)
            wall = time.perf_counter() - t
            speeds[label] = summary.seconds / wall
            print(
                f"tokenize {label}: {summary.kept} files, {summary.seconds / 60:.1f} min of audio in {wall:.1f} s "
                f"= {speeds[label]:.1f} h of audio per hour"
            )
    print(f"tokenize batched vs one-at-a-time: ratio={speeds['batched'] / speeds['one-at-a-time']:.2f}")


if __name__ == "__main__":
    main()
