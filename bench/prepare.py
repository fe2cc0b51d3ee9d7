"""Speed of `audiollm prepare`: records per second for each corpus, audio minutes per wall minute offline.

Real corpora run on ../shared/data where present (LJSpeech subset, mini AN4, FSDD) and on
generated trees in each corpus's published layout (LibriSpeech, LibriTTS, MusicCaps, AudioCaps:
`--records` one-second files). Each is timed on a fresh output folder, then re-run over the
finished folder (the resume check). The offline builders are timed with 1 and 2 workers.

    .venv/bin/python -m bench.prepare [--records 2000] [--minutes 3]
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

import data_prep

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _clip(path: Path, sr: int = 16000, seconds: float = 1.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(sr * seconds)) / sr
    sf.write(str(path), 0.3 * np.sin(2 * np.pi * 440 * t), sr, subtype="PCM_16")


def make_librispeech(root: Path, n: int) -> Path:
    for c in range(n // 20):
        chapter = root / "train-clean-100" / str(100 + c % 10) / str(c)
        lines = []
        for u in range(20):
            uid = f"{100 + c % 10}-{c}-{u:04d}"
            _clip(chapter / f"{uid}.flac")
            lines.append(f"{uid} SOME WORDS FOR UTTERANCE {u}")
        (chapter / f"{100 + c % 10}-{c}.trans.txt").write_text("\n".join(lines) + "\n")
    return root


def make_libritts(root: Path, n: int) -> Path:
    for i in range(n):
        stem = f"{i % 10}_{i // 20}_{i:06d}_000000"
        _clip(root / "train-clean-100" / str(i % 10) / str(i // 20) / f"{stem}.wav", sr=24000)
        (root / "train-clean-100" / str(i % 10) / str(i // 20) / f"{stem}.normalized.txt").write_text(
            "Some words."
        )
    return root


def make_musiccaps(root: Path, n: int) -> Path:
    root.mkdir(parents=True)
    with open(root / "musiccaps-public.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ytid", "start_s", "end_s", "audioset_positive_labels", "aspect_list", "caption", "author_id",
                    "is_balanced_subset", "is_audioset_eval"])  # fmt: skip
        for i in range(n):
            w.writerow([f"yt{i:09d}", 0, 10, "", "['calm']", "A calm piece.", "1", "False", str(i % 10 == 0)])
            _clip(root / "audio" / f"yt{i:09d}.wav", sr=8000)
    return root


def make_audiocaps(root: Path, n: int) -> Path:
    (root / "dataset").mkdir(parents=True)
    rows = "".join(f"{i},yt{i:09d},0,A dog barks\n" for i in range(n))
    (root / "dataset" / "train.csv").write_text("audiocap_id,youtube_id,start_time,caption\n" + rows)
    for i in range(n):
        _clip(root / "audio" / f"Yyt{i:09d}.wav", sr=8000)
    return root


def time_corpus(name: str, src: Path, tmp: Path) -> None:
    out = tmp / f"out-{name}"
    t0 = time.perf_counter()
    data_prep.prepare(name, src, out)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    data_prep.prepare(name, src, out)
    again = time.perf_counter() - t0
    summary = json.loads((out / "summary.json").read_text())
    n = summary["kept"] + summary["rejected"]
    print(
        f"{name:12s} {n:6d} records {n / first:8.0f} rec/s   re-run {again * 1000:7.1f} ms ({first / again:5.1f}x less)"
    )


def time_builder(name: str, minutes: float, tmp: Path) -> None:
    fn = data_prep.CORPORA[name]
    rates = []
    for workers in (1, 2):
        kwargs = {"workers": workers} if name != "offline-sfx" else {}
        out = tmp / f"{name}-{workers}"
        t0 = time.perf_counter()
        fn(None, out, minutes=minutes, seed=0, **kwargs)
        wall = time.perf_counter() - t0
        made = sum(r.get("duration", 0.0) for r in _rows(out)) / 60
        rates.append(made / (wall / 60))
        print(
            f"{name:14s} workers={workers}: {made:5.2f} min of audio in {wall:6.1f} s = {rates[-1]:6.1f} min/min"
        )
        if not kwargs:
            break
    if len(rates) == 2:
        print(f"{name:14s} 2 workers / 1 worker: {rates[1] / rates[0]:.2f}x")


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for p in out.glob("*.jsonl") if p.name != "rejects.jsonl" for line in open(p)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=2000, help="files in each generated corpus tree")
    ap.add_argument("--minutes", type=float, default=3.0, help="audio per offline builder run")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        print(f"# real corpora (generated trees: {args.records} one-second files)")
        for name, make in [("librispeech", make_librispeech), ("libritts", make_libritts),
                           ("musiccaps", make_musiccaps), ("audiocaps", make_audiocaps)]:  # fmt: skip
            time_corpus(name, make(tmp / name, args.records), tmp)
        for name, folder in [
            ("ljspeech", "ljspeech_subset"),
            ("an4", "mini_an4"),
            ("fsdd", "fsdd_spoken_digits"),
        ]:
            if (SHARED / folder).is_dir():
                time_corpus(name, SHARED / folder, tmp)
        print(f"# offline builders ({args.minutes} min each)")
        for name in ("offline-speech", "offline-music", "offline-sfx"):
            time_builder(name, args.minutes, tmp)


if __name__ == "__main__":
    main()
