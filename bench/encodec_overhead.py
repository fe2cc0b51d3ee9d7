"""EnCodec through audiollm's wrapper vs the encodec package called directly: real-time factor ratio.

Same weights (offline-built; compute does not depend on the weights), same input, interleaved runs
in one process. Prints one line per direction ending in ratio=X.XX (package time / ours, higher is
better; >= 0.95 means the wrapper costs under 5%).

    python bench/encodec_overhead.py [--seconds 10] [--repeats 5] [--bandwidth 6]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from encodec import EncodecModel

from audiollm import audio
from audiollm.codecs.base import check_codes, prepare_input
from audiollm.codecs.encodec import EncodecCodec

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ljspeech_subset" / "wavs"


def timed_pair(a, b, repeats: int) -> tuple[float, float]:
    """Best (minimum) wall times of `a()` and `b()`, run alternately `repeats` times after one warm-up each,
    so that load from other processes falls on both alike."""
    a(), b()
    ta, tb = [], []
    for _ in range(repeats):
        for fn, times in ((a, ta), (b, tb)):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return min(ta), min(tb)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--bandwidth", type=float, default=6.0)
    args = ap.parse_args()

    torch.manual_seed(0)
    wav, _ = audio.load(DATA / "LJ001-0001.flac", sample_rate=24000, channels=1, duration=args.seconds)
    x = wav[None]  # (1, 1, N)
    seconds = x.shape[-1] / 24000
    package = EncodecModel.encodec_model_24khz(pretrained=False)
    package.set_target_bandwidth(args.bandwidth)
    ours = EncodecCodec("encodec_24khz", EncodecModel.encodec_model_24khz(pretrained=False), args.bandwidth)
    ours.model.load_state_dict(package.state_dict())

    with torch.inference_mode():
        frames = package.encode(x)
    codes = ours.encode(x)
    assert torch.equal(codes, frames[0][0]), "wrapper and package disagree"

    def package_encode():
        with torch.inference_mode():
            package.encode(x)

    def package_decode():
        with torch.inference_mode():
            package.decode(frames)

    pairs = {
        "encode": (lambda: ours.encode(x), package_encode),
        "decode": (lambda: ours.decode(codes), package_decode),
    }
    # What the wrapper adds, timed alone (input checks and conversions, code checks): noise-free evidence.
    t = time.perf_counter()
    for _ in range(200):
        prepare_input(ours, x, 24000)
        check_codes(ours, codes)
    extra = (time.perf_counter() - t) / 200
    print(f"# {seconds:.1f} s of speech at 24 kHz, {args.bandwidth} kbps, {torch.get_num_threads()} threads")
    for label, (our_fn, their_fn) in pairs.items():
        t_ours, t_pkg = timed_pair(our_fn, their_fn, args.repeats)
        print(
            f"codec encodec_24khz {label}: ours RTF {t_ours / seconds:.4f}, encodec package RTF "
            f"{t_pkg / seconds:.4f}, wrapper-only work {1000 * extra:.3f} ms = {100 * extra / t_pkg:.3f}% "
            f"of the package's time, ratio={t_pkg / t_ours:.2f}"
        )


if __name__ == "__main__":
    main()
