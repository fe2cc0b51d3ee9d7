"""`audiollm serve`: continuous batching against one request at a time, on the same model in one process.

Two servers share the loaded model: one batches (--max-batch 16), the other runs one request at a time
(--max-batch 1). Clients are threads speaking HTTP on loopback. For 1, 4 and 16 concurrent clients it
measures transcription requests/s and p50/p99 latency, then time to first audio of streamed speech; the
two servers take turns at each level so load from other work on the machine hits both alike. Lines end in
ratio=X.XX: batched / one-at-a-time for requests/s (higher is better), one-at-a-time / batched for time
to first audio. Last, 200 mixed requests (a quarter of them bad uploads) hit the batching server: every
bad one must be a 4xx, the server must stay up, and its resident memory is printed before and after.
Both servers read and encode uploads on the same number of codec workers (--codec-workers, printed first).

    python bench/serve.py [--quick] [--model tiny] [--codec-workers N]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf
import torch

from audiollm.api import AudioLM
from audiollm.serve import ServeConfig
from audiollm.serve.app import BackgroundServer, create_app
from audiollm.serve.config import CODEC_WORKERS

SHARED = Path(os.environ.get("AUDIOLLM_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def clips(n: int) -> list[bytes]:
    """Spoken digits from FSDD when ../shared/data has them, else tones in noise; WAV bytes."""
    found = sorted((SHARED / "fsdd_spoken_digits" / "recordings").glob("*_theo_4*.wav"))[:n]
    if found:
        return [p.read_bytes() for p in found]
    rng, out = np.random.default_rng(0), []
    for i in range(n):
        t = np.arange(12000) / 16000
        x = 0.2 * np.sin(2 * np.pi * (200 + 40 * i) * t) + 0.05 * rng.standard_normal(len(t))
        buf = io.BytesIO()
        sf.write(buf, x.astype(np.float32), 16000, format="WAV")
        out.append(buf.getvalue())
    return out


def transcribe(url: str, data: bytes) -> float:
    started = time.monotonic()
    r = httpx.post(url + "/v1/audio/transcriptions", files={"file": ("x.wav", data)}, data={"model": "tiny"},
                   timeout=600)  # fmt: skip
    assert r.status_code == 200, r.text
    return time.monotonic() - started


def first_audio(url: str, text: str) -> float:
    """Seconds until the first PCM bytes of a streamed speech request (the rest is read and dropped)."""
    body = {"model": "tiny", "input": text, "voice": "default", "stream": True, "response_format": "pcm",
            "max_seconds": 2.0, "seed": 0}  # fmt: skip
    started, first = time.monotonic(), None
    with httpx.stream("POST", url + "/v1/audio/speech", json=body, timeout=600) as r:
        assert r.status_code == 200
        for _ in r.iter_bytes():
            first = first or time.monotonic() - started
    return first if first is not None else time.monotonic() - started


def load(fn, url: str, items: list, clients: int) -> tuple[float, list[float]]:
    """(requests/s, per-request results) of `clients` threads sending items."""
    started = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda x: fn(url, x), items))
    return len(items) / (time.monotonic() - started), results


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q))


def rss_mib() -> float:
    """Resident memory of this process (servers and clients) now, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def robustness(url: str, data: list[bytes], n: int = 200) -> None:
    """n mixed requests, every fourth a bad upload (garbage, empty, too long, wrong model)."""
    buf = io.BytesIO()
    sf.write(buf, np.zeros(40 * 16000, np.float32), 16000, format="WAV")  # 40 s: over the 30 s limit
    bad = [(b"not audio", "tiny"), (b"", "tiny"), (buf.getvalue(), "tiny"), (data[0], "whisper-1")]

    def one(i: int) -> tuple[int, bool]:
        upload, model = bad[(i // 4) % 4] if i % 4 == 0 else (data[i % len(data)], "tiny")
        r = httpx.post(url + "/v1/audio/transcriptions", files={"file": ("x.wav", upload)}, data={"model": model},
                       timeout=600)  # fmt: skip
        return r.status_code, i % 4 != 0

    rss = [rss_mib()]
    results = []
    with ThreadPoolExecutor(16) as pool:
        for half in (range(n // 2), range(n // 2, n)):  # memory after each half: flat once warm
            results += list(pool.map(one, half))
            rss.append(rss_mib())
    wrong = [(s, ok) for s, ok in results if (s != 200 if ok else not 400 <= s < 500)]
    up = httpx.get(url + "/health").json()["status"] == "ok"
    bad_n = sum(1 for _, ok in results if not ok)
    print(f"robustness: {n} mixed requests, {bad_n} bad: every bad one a 4xx and every good one a 200: "
          f"{not wrong}; server up: {up}; RSS {' -> '.join(f'{x:.0f}' for x in rss)} MiB")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--quick", action="store_true", help="fewer requests per level")
    parser.add_argument("--codec-workers", type=int, default=CODEC_WORKERS,
                        help=f"codec workers of each server (default here: {CODEC_WORKERS})")  # fmt: skip
    args = parser.parse_args()
    lm = AudioLM.from_pretrained(args.model)
    data = clips(16)
    levels = (1, 4, 16)
    per_level = {1: 4, 4: 8, 16: 16} if args.quick else {1: 8, 4: 16, 16: 32}
    workers = args.codec_workers
    print(f"model {args.model}, codec workers {workers} per server, torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    same = {"max_queue": 256, "codec_workers": workers}
    batched = BackgroundServer(create_app(lm, ServeConfig(max_batch=16, **same), "tiny"))
    single = BackgroundServer(create_app(lm, ServeConfig(max_batch=1, **same), "tiny"))
    with batched, single:
        for s in (batched, single):  # warm-up
            transcribe(s.url, data[0])
        for clients in levels:
            items = [data[i % len(data)] for i in range(per_level[clients])]
            rows = {}
            for name, s in (("batched", batched), ("one-at-a-time", single)):
                rps, lat = load(transcribe, s.url, items, clients)
                rows[name] = rps
                print(f"transcription {clients:>2} clients {name:>13}: {rps:6.2f} req/s  "
                      f"p50 {pct(lat, 50):.2f} s  p99 {pct(lat, 99):.2f} s  p99/p50 {pct(lat, 99) / pct(lat, 50):.2f}")  # fmt: skip
            print(f"transcription {clients:>2} clients, {workers} codec workers: requests/s "
                  f"ratio={rows['batched'] / rows['one-at-a-time']:.2f}")  # fmt: skip
        texts = ["one two three", "seven", "hello there", "four five"]
        for clients in (1, 16):
            items = [texts[i % len(texts)] for i in range(clients if clients > 1 else 4)]
            firsts = {}
            for name, s in (("batched", batched), ("one-at-a-time", single)):
                _, ttfa = load(first_audio, s.url, items, clients)
                firsts[name] = statistics.median(ttfa)
                print(f"streamed speech {clients:>2} clients {name:>13}: time to first audio p50 "
                      f"{firsts[name]:.3f} s  max {max(ttfa):.3f} s")  # fmt: skip
            print(f"streamed speech {clients:>2} clients: time to first audio "
                  f"ratio={firsts['one-at-a-time'] / firsts['batched']:.2f}")  # fmt: skip
        robustness(batched.url, data, 100 if args.quick else 200)


if __name__ == "__main__":
    main()
