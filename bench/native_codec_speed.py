"""Native codec encode/decode real-time factor on CPU, next to EnCodec 24 kHz (the encodec package) at 6 kbps.

RTF = seconds of compute / seconds of audio (lower is faster). Both run in this process on the same
speech (each at its own sample rate), alternately, after one warm-up; medians of `--repeats` runs.
EnCodec is built offline (random weights: its compute does not depend on them). Prints one line per
codec and direction, and ratio = EnCodec RTF / native RTF (above 1: the native codec is faster).

    python -m bench.native_codec_speed --codec runs/codec/checkpoints/codec [--seconds 10] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from encodec import EncodecModel

from audiollm import audio
from audiollm.codecs import bitrate, load_codec

SPEECH = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "ljspeech_subset" / "wavs" / "LJ001-0001.flac"
)


def median_times(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall time of each function, run round-robin `repeats` times after one warm-up each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codec", default="runs/codec/checkpoints/codec", help="saved native codec directory")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of the speech clip")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    native = load_codec(args.codec)
    encodec = EncodecModel.encodec_model_24khz(pretrained=False).eval()
    encodec.set_target_bandwidth(6.0)
    x16, _ = audio.load(SPEECH, native.sample_rate, 1, duration=args.seconds)
    x24, _ = audio.load(SPEECH, 24000, 1, duration=args.seconds)
    seconds = x16.shape[-1] / native.sample_rate
    codes16 = native.encode(x16[None])
    with torch.inference_mode():
        frames24 = encodec.encode(x24[None])

    def encodec_encode():
        with torch.inference_mode():
            encodec.encode(x24[None])

    def encodec_decode():
        with torch.inference_mode():
            encodec.decode(frames24)

    times = median_times(
        {
            "native encode": lambda: native.encode(x16[None]),
            "encodec encode": encodec_encode,
            "native decode": lambda: native.decode(codes16),
            "encodec decode": encodec_decode,
        },
        args.repeats,
    )
    print(f"{seconds:.1f} s of speech, {args.threads} threads, native {bitrate(native) / 1000:g} kbps "
          f"({native.sample_rate} Hz), EnCodec 6 kbps (24000 Hz)")  # fmt: skip
    for direction in ("encode", "decode"):
        ours, peer = times[f"native {direction}"] / seconds, times[f"encodec {direction}"] / seconds
        print(f"{direction}: native RTF {ours:.4f}  EnCodec RTF {peer:.4f}  ratio={peer / ours:.2f}")


if __name__ == "__main__":
    main()
