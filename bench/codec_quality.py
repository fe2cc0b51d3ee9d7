"""Native codec vs Opus (ffmpeg libopus, voip) at the same bitrates on held-out audio, every measure in one run.

Per group of files (the manifest's `speaker` field, else the manifest's folder/name) and target bitrate: log-mel
distance, STOI, SI-SNR, pitch (librosa.pyin: median F0 error on frames voiced in both, voicing agreement),
and pocketsphinx's WER on the decoded audio of rows with text, beside the same judge on the originals.
Then each codebook's perplexity over all the files, and the encode + decode real-time factor on this CPU.
The native codec uses K = kbps / (frame_rate x log2(codebook_size)) codebooks; Opus is asked for the same
kbps (its measured packet bitrate is printed).

    python -m bench.codec_quality --codec audiollm/assets/tiny/codec \
        --manifest runs/codec_data/heldout.jsonl [--manifest music.jsonl ...] [--kbps 6 3] [--limit 12]
"""

from __future__ import annotations

import argparse
import math
import time
from collections import defaultdict
from pathlib import Path

import torch

from audiollm import audio
from audiollm.codecs import bitrate, load_codec
from audiollm.data.manifest import read_manifest
from audiollm.eval.codec import (
    codebook_perplexity,
    codec_round_trip,
    evaluate,
    evaluate_opus,
    identity_round_trip,
    phone_probe,
)

COLUMNS = ("kbps", "log_mel_distance", "stoi", "si_snr", "f0_error", "voicing", "wer")
HEADER = "| audio | files | target kbps | system | kbps | log-mel dist ↓ | STOI ↑ | SI-SNR dB ↑ | F0 err ↓ | voicing agree ↑ | WER ↓ |"


def row(group: str, files: int, kbps: str, system: str, r: dict) -> str:
    cells = ["-" if r.get(k) is None or math.isnan(r[k]) else f"{r[k]:.3f}" for k in COLUMNS]
    return f"| {group} | {files} | {kbps} | {system} | " + " | ".join(cells) + " |"


def real_time_factor(codec, path: str, repeats: int = 3) -> tuple[float, float]:
    """(encode RTF, decode RTF): best of `repeats` seconds per second of audio, on `path`."""
    wav, _ = audio.load(path, codec.sample_rate, channels=codec.channels)
    seconds = wav.shape[-1] / codec.sample_rate
    best_enc = best_dec = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        codes = codec.encode(wav[None])
        t1 = time.perf_counter()
        codec.decode(codes)
        t2 = time.perf_counter()
        best_enc, best_dec = min(best_enc, t1 - t0), min(best_dec, t2 - t1)
    return best_enc / seconds, best_dec / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codec", default="audiollm/assets/tiny/codec", help="saved native codec directory")
    ap.add_argument(
        "--manifest", action="append", help="held-out manifest(s); default runs/codec_data/heldout.jsonl"
    )
    ap.add_argument("--kbps", type=float, nargs="+", default=[6.0, 3.0])
    ap.add_argument("--limit", type=int, default=12, help="files per group at most")
    ap.add_argument(
        "--quick", action="store_true", help="native codec only, all codebooks: no pitch, WER, Opus"
    )
    ap.add_argument(
        "--phones", nargs=2, metavar=("FIT", "TEST"),
        help="manifests with `phones` (recipes/codec/phones.py): probe codebook 0 for phones, fit on FIT, score on TEST",
    )  # fmt: skip
    args = ap.parse_args()

    groups: dict[str, list] = defaultdict(list)
    for manifest in args.manifest or ["runs/codec_data/heldout.jsonl"]:
        for rec in read_manifest(manifest):
            group = groups[rec.speaker or f"{Path(manifest).parent.name}/{Path(manifest).stem}"]
            if len(group) < args.limit:
                group.append(rec)
    codec = load_codec(args.codec)
    kbps_per_codebook = codec.frame_rate * math.log2(codec.codebook_size) / 1000
    torch.manual_seed(0)

    print(HEADER)
    print("|---|---:|---:|---|" + "---:|" * len(COLUMNS))
    for name, recs in sorted(groups.items()) if args.quick else ():
        r = evaluate(codec_round_trip(codec), [r.audio for r in recs], codec.sample_rate, pitch=False)
        print(row(name, len(recs), f"{bitrate(codec) / 1000:g}", f"native K={codec.num_codebooks}", r))
    for name, recs in () if args.quick else sorted(groups.items()):
        files, texts = [r.audio for r in recs], [r.text for r in recs]
        print(
            row(
                name,
                len(files),
                "-",
                "original",
                evaluate(identity_round_trip, files, codec.sample_rate, texts),
            )
        )
        for kbps in args.kbps:
            codec.set_num_codebooks(round(kbps / kbps_per_codebook))
            native = evaluate(codec_round_trip(codec), files, codec.sample_rate, texts)
            opus = evaluate_opus(kbps, files, codec.sample_rate, texts)
            print(row(name, len(files), f"{kbps:g}", f"native K={codec.num_codebooks}", native))
            print(row(name, len(files), f"{kbps:g}", "Opus", opus))
            print(
                f"<!-- {name} {kbps:g} kbps: STOI ratio native/Opus = {native['stoi'] / opus['stoi']:.2f} -->"
            )

    codec.set_num_codebooks(codec.config.num_codebooks)
    every_file = [r.audio for recs in groups.values() for r in recs]
    perplexity = codebook_perplexity(codec, every_file)
    print(f"\ncodebook perplexity over {len(every_file)} files (codebook_size {codec.codebook_size}):")
    print("| " + " | ".join(f"k={k}" for k in range(len(perplexity))) + " |")
    print("|" + "---:|" * len(perplexity))
    print("| " + " | ".join(f"{p:.0f}" for p in perplexity) + " |")
    if args.phones:
        fit, test = ([r for r in read_manifest(m) if "phones" in r.extra] for m in args.phones)
        probe = phone_probe(codec, fit[: args.limit * 20], test)
        print(f"\ncodebook 0 names the phone of {probe['accuracy']:.3f} of {args.phones[1]}'s frames "
              f"(commonest phone: {probe['chance']:.3f}; code-phone information {probe['bits']:.2f} bits; "
              f"map fitted on {min(len(fit), args.limit * 20)} rows of {args.phones[0]})")  # fmt: skip
    longest = max(every_file, key=lambda f: audio.info(f).frames / audio.info(f).samplerate)
    enc, dec = real_time_factor(codec, longest)
    print(f"\nreal-time factor on {longest} ({torch.get_num_threads()} threads): "
          f"encode {enc:.4f} + decode {dec:.4f} = {enc + dec:.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
