"""Add flite's phone timings to the flite-spoken rows of speech manifests (the `phones` field of
`audiollm.data.phones`), for the codec recipe's phone loss (`model.weights.phones`).

A row qualifies when its `speaker` is `flite-VOICE` and it has `text`: flite is deterministic, so
`flite -voice VOICE -psdur` on the same text prints the phones of the very audio the builders wrote
(`data_prep/offline_speech.py`, `recipes/codec/make_speech.py`) with their end times. Other rows are
copied unchanged. Each manifest is written under `--out` with its own name and absolute audio paths.

    python recipes/codec/phones.py runs/speech/train.jsonl runs/codec_data/train.jsonl --out runs/phones
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from audiollm.data.manifest import Record, read_manifest, write_jsonl
from audiollm.data.phones import PHONE_INDEX


def flite_phones(voice: str, text: str) -> list[list]:
    """[[phone, end_seconds], ...] that flite speaks for `text` in `voice` (no audio is written)."""
    done = subprocess.run(
        ["flite", "-voice", voice, "-psdur", "-t", text, "-o", "none"], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"flite -voice {voice} failed on {text!r}: {done.stderr.strip()}")
    pairs = [item.rsplit(":", 1) for item in done.stdout.split()]
    unknown = sorted({p for p, _ in pairs} - PHONE_INDEX.keys())
    if unknown:
        raise RuntimeError(f"flite printed phones outside audiollm.data.phones.PHONES: {unknown}")
    return [[p, float(end)] for p, end in pairs]


def with_phones(record: Record) -> dict:
    """The record's manifest object, with `phones` when flite spoke it."""
    row = record.to_json()  # audio: the absolute path read_manifest gave it
    speaker = record.speaker or ""
    if speaker.startswith("flite-") and record.text:
        row["phones"] = flite_phones(speaker.removeprefix("flite-"), record.text)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("manifests", nargs="+", help="JSONL manifests to read")
    parser.add_argument("--out", required=True, help="folder for the manifests with phones")
    parser.add_argument("--workers", type=int, default=2, help="flite processes at once")
    args = parser.parse_args(argv)
    out = Path(args.out)
    for path in map(Path, args.manifests):
        records = list(read_manifest(path))
        with ThreadPoolExecutor(args.workers) as pool:
            rows = list(pool.map(with_phones, records))
        target = write_jsonl(out / path.name, rows)
        labelled = sum("phones" in r for r in rows)
        print(f"{target}: {labelled} of {len(rows)} rows with phones", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
