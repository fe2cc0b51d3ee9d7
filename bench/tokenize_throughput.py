"""Tokenisation throughput: hours of audio per hour of wall time, batched vs one file at a time.

Runs `tokenize_manifest` twice over the same real recordings in one process (FSDD digits and the
LJSpeech subset from ../shared/data), once with batches of `--batch-seconds` of audio and once with
one file per batch, and prints ratio=X.XX (batched speed / one-at-a-time speed).

    python bench/tokenize.py [--codec encodec_24khz|DIR] [--files 200] [--batch-seconds 80]
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--codec", default="encodec_24khz", help="encodec_24khz (offline-built weights) or a codec dir"
    )
    ap.add_argument("--files", type=int, default=120)
    ap.add_argument("--batch-seconds", type=float, default=80.0)
    args = ap.parse_args()

    torch.manual_seed(0)
    codec = args.codec
    if codec == "encodec_24khz":  # no published weights offline; compute does not depend on them
        codec = EncodecCodec("encodec_24khz", EncodecModel.encodec_model_24khz(pretrained=False), 6.0)
    if not isinstance(codec, str):
        codec.encode(torch.zeros(2, 1, 24000))  # warm-up, so neither timed run pays first-call costs
    with tempfile.TemporaryDirectory() as tmp:
        manifest = build_manifest(Path(tmp) / "m.jsonl", args.files)
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
