"""Faster generation (issue 17): speculative vs plain decoding, int8 vs float32 weights, ours vs HF `generate`.

For the shipped `tiny` (real prompts: spoken digits for ASR, sentences for TTS) and for the `small` preset
with random weights on the same vocabulary: tokens/s of plain and speculative decoding (the model's first
layer drafting) at batch 1 and 8 with the acceptance rate, int8 vs float32 speed and weight bytes, and
bench/lm.py's comparison with Hugging Face `generate` on GPT-NeoX trunks of the same dims. Timings
alternate the two sides run by run (bench/lm.py's `alternate`), medians of --reps. Every line ends in
ratio=X.XX, higher is better for the new side.

    python -m bench.fast_generation [--reps 2] [--new 24]   # about 4-5 minutes on the 2-core CPU
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

from audiollm import AudioLM, speculative, tasks
from audiollm.generate import Sampling, generate
from audiollm.model import PRESETS, AudioLanguageModel, ModelConfig
from audiollm.quantize import quantize, weight_bytes
from audiollm.tasks import Prompt, Template
from bench.lm import alternate, bench_generate

SHARED = Path(os.environ.get("AUDIOLLM_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
SENTENCES = ["four", "hello there", "the cat sat on the mat", "seven", "good morning", "one two three"]
GREEDY, TTS_SAMPLING = Sampling(temperature=0), Sampling(temperature=1.0, top_k=50)


def workloads(lm: AudioLM) -> dict[str, tuple[list[Prompt], Template, Sampling]]:
    """ASR (greedy, transcripts end where the model ends them) and TTS (sampled, as the API does) prompts."""
    clips = sorted((SHARED / "fsdd_spoken_digits" / "recordings").glob("*.wav"))[:8]
    if not clips:
        raise SystemExit(f"no FSDD clips under {SHARED}: set AUDIOLLM_SHARED_DATA to the shared data folder")
    asr = [tasks.asr(lm.vocab, lm.pattern, lm._encode(c), None).prompt() for c in clips]
    tts = [tasks.tts(lm.vocab, lm.pattern, lm._text_ids(t, "text"), None, None).prompt() for t in SENTENCES]
    tts = (tts * 2)[:8]
    return {"asr": (asr, Template(start="text"), GREEDY), "tts": (tts, Template(start="audio"), TTS_SAMPLING)}


def runner(model, prompts, template, sampling, new: int, pattern: str, draft=None) -> Callable[[], dict]:
    """A generation call returning {'tokens': steps written, 'accepted', 'drafted'}; TTS runs `new` steps."""
    fixed = new if template.start == "audio" else 0  # TTS: a fixed number of frames, so runs compare

    def run() -> dict:
        g = torch.Generator().manual_seed(0)
        kw = dict(
            template=template, sampling=sampling, max_new_tokens=new, min_new_tokens=fixed, pattern=pattern
        )
        stats: dict = {}
        if draft is None:
            out = generate(model, prompts, generator=g, **kw)
        else:
            out = speculative.generate(model, prompts, draft=draft, generator=g, stats=stats, **kw)
        return {"tokens": int(out.lengths.sum()), **stats}

    return run


def compare(label: str, runs: list[Callable[[], dict]], reps: int, names: tuple[str, str]) -> None:
    """Tokens/s of two runs, alternated; the second side's acceptance rate when it speculates."""
    results: list[dict] = [{}, {}]

    def keep(i: int) -> Callable[[], None]:
        return lambda: results[i].update(runs[i]())

    t = alternate([keep(0), keep(1)], reps)
    speeds = [r["tokens"] / s for r, s in zip(results, t, strict=True)]
    extra = ""
    if "drafted" in results[1]:
        extra = f" (accepted {results[1]['accepted']}/{results[1]['drafted']} drafted steps)"
    print(
        f"{label}: {names[0]} {speeds[0]:,.0f} tok/s, {names[1]} {speeds[1]:,.0f} tok/s{extra}, "
        f"ratio={speeds[1] / speeds[0]:.2f}",
        flush=True,
    )


def bench_model(name: str, model: AudioLanguageModel, lm: AudioLM, reps: int, new: int) -> None:
    work = workloads(lm)
    draft = speculative.early_exit(model)
    int8 = quantize(copy.deepcopy(model))
    fp32_bytes, int8_bytes = weight_bytes(model, linear_only=True), weight_bytes(int8, linear_only=True)
    print(
        f"{name} ({model.num_params() / 1e6:.1f}M, {model.config.n_layer} layers, draft: first "
        f"{draft.config.n_layer}) Linear weights: fp32 {fp32_bytes / 2**20:.2f} MiB, int8 "
        f"{int8_bytes / 2**20:.2f} MiB, ratio={fp32_bytes / int8_bytes:.2f}; all weights fp32 "
        f"{weight_bytes(model) / 2**20:.2f} MiB, int8 {weight_bytes(int8) / 2**20:.2f} MiB",
        flush=True,
    )
    for task, (prompts, template, sampling) in work.items():
        for batch in (1, 8):
            args = (prompts[:batch], template, sampling, new, lm.pattern)
            compare(
                f"{name} {task} batch {batch} speculative",
                [runner(model, *args), runner(model, *args, draft=draft)],
                reps,
                ("plain", "speculative"),
            )
            compare(
                f"{name} {task} batch {batch} int8",
                [runner(model, *args), runner(int8, *args)],
                reps,
                ("fp32", "int8"),
            )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=2, help="timed runs per side (after one warm-up)")
    p.add_argument("--new", type=int, default=24, help="new steps per generation (ASR: at most)")
    p.add_argument(
        "--larger", default="small", choices=sorted(PRESETS), help="preset run with random weights"
    )
    args = p.parse_args()
    start = time.time()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    lm = AudioLM.from_pretrained("tiny", device="cpu")
    bench_model("tiny", lm.model, lm, args.reps, args.new)
    torch.manual_seed(0)
    larger = AudioLanguageModel(ModelConfig(**PRESETS[args.larger], vocab=lm.vocab)).eval()
    bench_model(f"{args.larger} (random weights)", larger, lm, args.reps, args.new)
    for preset in ("tiny", args.larger):  # plain generation against HF, GPT-NeoX trunks of these dims
        bench_generate(preset, 1, args.new, args.reps, 1)
    print(f"took {time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
