"""Native codec vs Opus (ffmpeg libopus, voip) at the same bitrates on held-out speech: log-mel, STOI, SI-SNR.

For each target bitrate the native codec uses K = kbps / (frame_rate x log2(codebook_size)) codebooks and
Opus is asked for the same kbps (its measured packet bitrate is printed). Held-out files are grouped by
the manifest's `speaker` field. Prints a markdown table and the native/Opus STOI ratio per row.

    python -m bench.codec_quality --codec runs/codec/checkpoints/codec \
        --manifest runs/codec_data/heldout.jsonl [--kbps 6 3]
"""

from __future__ import annotations

import argparse
import math
from collections import defaultdict

from audiollm.codecs import load_codec
from audiollm.data.manifest import read_manifest
from audiollm.eval.codec import evaluate_codec, evaluate_opus


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codec", default="runs/codec/checkpoints/codec", help="saved native codec directory")
    ap.add_argument("--manifest", default="runs/codec_data/heldout.jsonl", help="held-out speech manifest")
    ap.add_argument("--kbps", type=float, nargs="+", default=[6.0, 3.0])
    args = ap.parse_args()

    groups: dict[str, list[str]] = defaultdict(list)
    for rec in read_manifest(args.manifest):
        groups[rec.speaker or "unknown"].append(rec.audio)
    codec = load_codec(args.codec)
    kbps_per_codebook = codec.frame_rate * math.log2(codec.codebook_size) / 1000

    print("| speech | files | target kbps | codec | kbps | log-mel dist ↓ | STOI ↑ | SI-SNR dB ↑ |")
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    for name, files in sorted(groups.items()):
        for kbps in args.kbps:
            codec.set_num_codebooks(round(kbps / kbps_per_codebook))
            native, opus = evaluate_codec(codec, files), evaluate_opus(kbps, files, codec.sample_rate)
            for label, r in ((f"native K={codec.num_codebooks}", native), ("Opus", opus)):
                print(f"| {name} | {r['files']} | {kbps:g} | {label} | {r['kbps']:.2f} | "
                      f"{r['log_mel_distance']:.3f} | {r['stoi']:.3f} | {r['si_snr']:.2f} |")  # fmt: skip
            print(
                f"<!-- {name} {kbps:g} kbps: STOI ratio native/Opus = {native['stoi'] / opus['stoi']:.2f} -->"
            )


if __name__ == "__main__":
    main()
