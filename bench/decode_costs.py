"""Where a CPU decoding step's time goes: the fixed per-step cost, and the weight layout at one and 8 rows.

1. Milliseconds per greedy decoding step of a 4-layer GPT-NeoX-style model at d_model 8 (almost no
   arithmetic: the per-op cost) and at `tiny`'s 256, batch 1, 256 new tokens.
2. The 4,096 x 256 text head as F.linear at 1 and 8 rows with weights streamed from memory (32 MB are
   rewritten before each call): the usual (out, in) row-major layout against `input_major`'s.
Ratios are usual / input-major time: higher means the layout the model uses is faster.

    python -m bench.decode_costs [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from audiollm.generate import Sampling, generate
from audiollm.model import GPT_NEOX, AudioLanguageModel, ModelConfig
from audiollm.tasks import Prompt
from audiollm.vocab import Vocab


def step_ms(d_model: int, new: int = 256) -> float:
    """Median ms per decoding step over 3 runs (after one warm-up), batch 1, prompt 32."""
    torch.manual_seed(0)
    vocab = Vocab(text_size=4000, num_codebooks=1, codebook_size=1)
    model = AudioLanguageModel(
        ModelConfig(n_layer=4, n_head=4, d_model=d_model, **GPT_NEOX, vocab=vocab)
    ).eval()
    prompts = [Prompt.from_text(list(range(1, 33)), vocab)]
    times = []
    for _ in range(4):
        start = time.perf_counter()
        generate(model, prompts, sampling=Sampling(temperature=0), max_new_tokens=new, min_new_tokens=new)
        times.append((time.perf_counter() - start) / new * 1e3)
    return statistics.median(times[1:])


def head_us(rows: int, rounds: int = 150) -> tuple[float, float]:
    """Median µs of the text head in the usual and the input-major layout, alternating, caches flushed."""
    usual = torch.randn(4096, 256)
    layouts = [usual, usual.t().contiguous().t()]
    x, junk = torch.randn(rows, 256), torch.randn(8 << 20)
    times: list[list[float]] = [[], []]
    for r in range(rounds):
        for i in (0, 1) if r % 2 else (1, 0):
            junk.add_(1.0)
            start = time.perf_counter()
            F.linear(x, layouts[i])
            times[i].append((time.perf_counter() - start) * 1e6)
    return statistics.median(times[0]), statistics.median(times[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    torch.set_num_threads(ap.parse_args().threads)
    fixed, tiny = step_ms(8), step_ms(256)
    print(f"decode step, 4 layers, batch 1: d_model 8 {fixed:.2f} ms, d_model 256 {tiny:.2f} ms, "
          f"fixed share={fixed / tiny:.2f}")  # fmt: skip
    for rows in (1, 8):
        usual, ours = head_us(rows)
        print(f"text head 4096x256 at {rows} row(s): usual {usual:.0f} us, input-major {ours:.0f} us, "
              f"ratio={usual / ours:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
