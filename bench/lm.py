"""The LM against Hugging Face GPTNeoXForCausalLM: training and generation speed, peak memory; delay vs flatten.

Both models have the same GPT-NeoX trunk (LayerNorm, GELU, parallel residual, 25% RoPE), the same dims,
a 4,096-token text vocabulary, the same threads and the same loss and AdamW. Measurements alternate ours
and theirs step by step in one process, so load from other work on the machine hits both alike. Every
line ends in ratio=X.XX, higher is better for us (speed: ours / theirs; memory: theirs / ours). Peak
memory is measured afterwards in a child process whose allocator returns freed memory (MALLOC_MMAP_
THRESHOLD_), so the RSS peak above the start of each measurement is that measurement's memory.

    python bench/lm.py [--quick] [--threads 2] [--device cuda]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from audiollm import patterns
from audiollm.generate import Sampling, generate
from audiollm.model import GPT_NEOX, PRESETS, AudioLanguageModel, ModelConfig, lm_loss
from audiollm.tasks import Prompt, Template
from audiollm.vocab import Vocab

TEXT_VOCAB = 4096
GREEDY = Sampling(temperature=0)


def make_pair(preset: str, device: str = "cpu") -> tuple[AudioLanguageModel, GPTNeoXForCausalLM]:
    """Ours (text only: one 1-code audio table) and HF's GPT-NeoX with the same dims and vocabulary."""
    torch.manual_seed(0)
    n_specials = Vocab(1, 1, 1).text_vocab_size - 1
    vocab = Vocab(text_size=TEXT_VOCAB - n_specials, num_codebooks=1, codebook_size=1)
    ours = AudioLanguageModel(ModelConfig(**PRESETS[preset], **GPT_NEOX, vocab=vocab))
    c = ours.config
    hf_config = GPTNeoXConfig(
        vocab_size=TEXT_VOCAB, hidden_size=c.d_model, num_hidden_layers=c.n_layer, num_attention_heads=c.n_head,
        intermediate_size=c.ff_dim, rotary_pct=c.rotary_pct, use_parallel_residual=True, hidden_act="gelu",
        max_position_embeddings=2048, tie_word_embeddings=False,
    )  # fmt: skip
    hf_config._attn_implementation = "sdpa"
    return ours.to(device), GPTNeoXForCausalLM(hf_config).to(device)


def train_step(logits_fn: Callable, model: torch.nn.Module, bf16: bool) -> Callable[[torch.Tensor], None]:
    """One forward + backward + AdamW step on ids (B, L), next-token loss, optional bf16 autocast."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(ids: torch.Tensor) -> None:
        with torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = logits_fn(ids)  # (B, L, V)
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def pair_steps(ours: AudioLanguageModel, hf: GPTNeoXForCausalLM, bf16: bool) -> list[Callable]:
    """Training steps of ours and HF's model, with the same loss and optimiser."""
    return [train_step(ours.text_logits, ours, bf16), train_step(lambda x: hf(input_ids=x).logits, hf, bf16)]


def synced(fn: Callable[[], object], device: str) -> Callable[[], None]:
    """fn, returning only when the device has finished its work (CUDA runs asynchronously)."""

    def run() -> None:
        fn()
        if device == "cuda":
            torch.cuda.synchronize()

    return run


def alternate(fns: list[Callable[[], object]], reps: int, warmup: int = 1) -> list[float]:
    """Median seconds of each fn, running them in turn `warmup + reps` times; the order flips every round,
    because whichever runs first is measurably slower (about 4% in a train step here)."""
    times: list[list[float]] = [[] for _ in fns]
    for r in range(warmup + reps):
        order = list(zip(fns, times, strict=True))
        for fn, t in order if r % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            fn()
            if r >= warmup:
                t.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def report(label: str, ours: float, theirs: float, unit: str, higher_is_better: bool = True) -> None:
    ratio = ours / theirs if higher_is_better else theirs / ours
    print(f"{label}: ours {ours:,.0f} {unit}, hf {theirs:,.0f} {unit}, ratio={ratio:.2f}", flush=True)


def bench_train(preset: str, bf16: bool, batch: int, length: int, reps: int, warmup: int = 1, device="cpu"):
    ours, hf = make_pair(preset, device)
    ids = torch.randint(0, TEXT_VOCAB, (batch, length), generator=torch.Generator().manual_seed(0)).to(device)
    steps = pair_steps(ours, hf, bf16)
    t_ours, t_hf = alternate([synced(lambda s=s: s(ids), device) for s in steps], reps, warmup)
    n = batch * length
    label = f"train {'bf16' if bf16 else 'fp32'} {preset} ({ours.num_params() / 1e6:.1f}M, batch {batch}x{length})"
    report(label, n / t_ours, n / t_hf, "tok/s")


def generators(preset: str, batch: int, new: int, device: str = "cpu") -> tuple[Callable, Callable]:
    """Greedy generation of `new` tokens after a 32-token prompt, ours and HF's `generate`."""
    ours, hf = make_pair(preset, device)
    ours.eval(), hf.eval()
    vocab = ours.config.vocab
    ids = torch.randint(0, vocab.text_size, (batch, 32), generator=torch.Generator().manual_seed(0)).to(
        device
    )
    prompts = [Prompt.from_text(row, vocab) for row in ids]

    def run_ours():
        out = generate(ours, prompts, sampling=GREEDY, max_new_tokens=new, min_new_tokens=new)
        assert int(out.lengths.min()) == new

    def run_hf():
        with torch.inference_mode():
            hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                        do_sample=False, pad_token_id=0)  # fmt: skip

    return synced(run_ours, device), synced(run_hf, device)


def bench_generate(preset: str, batch: int, new: int, reps: int, warmup: int, device: str = "cpu") -> None:
    t_ours, t_hf = alternate(list(generators(preset, batch, new, device)), reps, warmup)
    report(
        f"generate {preset} batch {batch} (prompt 32, {new} new)",
        batch * new / t_ours,
        batch * new / t_hf,
        "tok/s",
    )


def audio_training_step(model: AudioLanguageModel, opt, codes: torch.Tensor, pattern: str) -> None:
    """One step on audio-only sequences: codes (B, K, T) laid out by `pattern`, next-step code loss."""
    vocab = model.config.vocab
    steps = patterns.build(codes, pattern, fill=vocab.empty_code).transpose(1, 2)  # (B, S, K)
    B, S, _ = steps.shape
    text = torch.full((B, S), vocab.pad)
    text_logits, audio_logits = model(text, steps, torch.ones(B, S, dtype=torch.bool))
    no_text = torch.zeros(B, S - 1, dtype=torch.bool)
    real = steps[:, 1:] != vocab.empty_code  # (B, S-1, K)
    loss = lm_loss(text_logits[:, :-1], audio_logits[:, :-1], text[:, 1:], steps[:, 1:], no_text, real)[
        "loss"
    ]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def bench_patterns(preset: str, seconds: float, frame_rate: int, reps: int, warmup: int) -> None:
    """Delay vs flatten at K = 8: sequence steps per second of audio, training step time, generation speed."""
    K, T = 8, int(seconds * frame_rate)
    torch.manual_seed(0)
    model = AudioLanguageModel(ModelConfig(**PRESETS[preset], vocab=Vocab(256, K, 1024)))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    codes = torch.randint(0, 1024, (8, K, T), generator=torch.Generator().manual_seed(0))
    names = ("delay", "flatten")
    train = alternate([lambda p=p: audio_training_step(model, opt, codes, p) for p in names], reps, warmup)
    prompt = [Prompt.from_text([model.config.vocab.bos], model.config.vocab)]

    def gen(p: str) -> None:
        n = patterns.get(p).num_steps(T, K)
        out = generate(model.eval(), prompt, template=Template(start="audio"), sampling=GREEDY, pattern=p,
                       max_new_tokens=n, min_new_tokens=n, max_seconds=seconds, frame_rate=frame_rate)  # fmt: skip
        assert out.row_audio(0).shape == (K, T)
        model.train()

    gen_t = alternate([lambda p=p: gen(p) for p in names], reps, warmup)
    S = [patterns.get(p).num_steps(T, K) for p in names]
    print(f"train pattern steps per second of audio (K={K}, {frame_rate} Hz): delay {S[0] / seconds:.0f}, "
          f"flatten {S[1] / seconds:.0f}, ratio={S[1] / S[0]:.2f}")  # fmt: skip
    label = f"train step delay vs flatten {preset} (K={K}, batch 8 x {seconds:g} s)"
    print(f"{label}: delay {train[0]:.2f} s, flatten {train[1]:.2f} s, ratio={train[1] / train[0]:.2f}")
    label = f"generate audio delay vs flatten {preset} (K={K}, {seconds:g} s, batch 1)"
    print(f"{label}: delay {seconds / gen_t[0]:.2f} s audio/s, flatten {seconds / gen_t[1]:.2f} s audio/s, "
          f"ratio={gen_t[1] / gen_t[0]:.2f}", flush=True)  # fmt: skip


class PeakRSS:
    """Peak resident memory (MiB) above the level at entry, sampled every millisecond by a thread."""

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.mib = (max(self.peak, self._rss()) - self.start) / 2**20

    def _watch(self) -> None:
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, self._rss())

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(fn: Callable[[], object]) -> float:
    gc.collect()
    with PeakRSS() as m:
        fn()
    return m.mib


def memory_worker(sizes: list[str], batches: list[int], new: int) -> None:
    """Peak memory lines (run in a child with MALLOC_MMAP_THRESHOLD_ set; see the module docstring)."""
    ids = torch.randint(0, TEXT_VOCAB, (8, 512), generator=torch.Generator().manual_seed(0))
    # Thread pools, kernels' scratch buffers and the autograd engine start on first use: start them here,
    # so that neither model's measurement pays for them.
    for step in pair_steps(*make_pair("debug"), bf16=False):
        step(ids[:, :64])
    for fn in generators("debug", 8, 4):
        fn()
    for preset in sizes:
        steps = pair_steps(*make_pair(preset), bf16=False)
        m_ours, m_hf = (measure(lambda s=s: s(ids)) for s in steps)  # the first step allocates AdamW state
        label = f"train fp32 {preset} peak memory of a step (batch 8x512, grads and AdamW state included)"
        report(label, m_ours, m_hf, "MiB", higher_is_better=False)
    for batch in batches:
        m_ours, m_hf = (measure(fn) for fn in generators(sizes[0], batch, new))
        report(f"generate {sizes[0]} batch {batch} peak memory", m_ours, m_hf, "MiB", higher_is_better=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions, small bf16 and audio runs")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for every measurement (CPU)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cuda: speed lines only")
    ap.add_argument("--memory-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sizes, batches, new = ["tiny", "small"], [1, 8], 256
    if args.memory_worker:
        return memory_worker(sizes, batches, new)
    quick, device = args.quick, args.device
    where = torch.cuda.get_device_name() if device == "cuda" else f"cpu, threads {torch.get_num_threads()}"
    print(f"torch {torch.__version__}, {where}, {'quick' if quick else 'full'} run")
    for preset in sizes:
        bench_train(preset, bf16=False, batch=8, length=512, reps=2 if quick else 5, device=device)
    # bf16 autocast is ~20x slower than fp32 on CPUs without AVX-512 BF16: quick times one small CPU step.
    small_bf16 = quick and device == "cpu"
    for preset in sizes[:1] if small_bf16 else sizes:
        bench_train(preset, bf16=True, batch=1 if small_bf16 else 8, length=512, reps=1 if small_bf16 else 5,
                    device=device)  # fmt: skip
    for preset in sizes[:1] if quick and device == "cpu" else sizes:
        for batch in batches:
            bench_generate(preset, batch, new, reps=3 if quick else 5, warmup=1, device=device)
    if device == "cuda":
        return  # the audio-pattern and memory lines are CPU measurements
    bench_patterns("tiny", seconds=1.0 if quick else 10.0, frame_rate=50, reps=1, warmup=0 if quick else 1)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    cmd = [sys.executable, __file__, "--memory-worker", "--threads", str(args.threads)]
    subprocess.run(cmd, env=env, check=True)


if __name__ == "__main__":
    main()
