"""Greedy `generate` (batched, left-padded, KV cache) against a slow reference written from the rules: one
row at a time, the whole sequence through the plain forward at every step, the choices made in Python."""

import pytest
import torch

from audiollm import patterns
from audiollm.generate import Sampling, generate
from audiollm.model import AudioLanguageModel, ModelConfig
from audiollm.tasks import Prompt, Template
from audiollm.vocab import Vocab

VOCAB = Vocab(text_size=24, num_codebooks=3, codebook_size=8)


def _model(seed: int) -> AudioLanguageModel:
    torch.manual_seed(seed)  # init_std 0.3: peaked distributions, so rows end within a few steps
    return AudioLanguageModel(ModelConfig(n_layer=2, n_head=2, d_model=32, vocab=VOCAB, init_std=0.3)).eval()


def _prompts() -> list[Prompt]:
    g = torch.Generator().manual_seed(3)
    ids = [[VOCAB.bos, *torch.randint(0, VOCAB.text_size, (n,), generator=g).tolist()] for n in (1, 4, 2)]
    return [Prompt.from_text(x, VOCAB) for x in ids]


def _argmax(logits: torch.Tensor, allowed: list[int]) -> int:
    return max(sorted(allowed), key=lambda i: float(logits[i]))  # the first of equal maxima, as torch's


def slow_greedy(model: AudioLanguageModel, prompt: Prompt, start: str, pattern: str, new: int) -> tuple:
    """One row's steps: text ids (`<pad>` at frames), codes (empty where the pattern has none), is_audio."""
    v, K = VOCAB, VOCAB.num_codebooks
    text, audio, is_audio = prompt.text.tolist(), prompt.audio.tolist(), prompt.is_audio.tolist()
    tail = patterns.tail(K, pattern).tolist()  # codebooks of each step from `<eos>` on (delay: K - 1 steps)
    in_audio, audio_step, tail_step = start == "audio", 0, None
    codes_ok = [c for c in range(v.audio_card) if c != v.empty_code]

    def write(tok: int, codes: list[int] | None) -> None:
        text.append(v.pad if codes else tok)
        audio.append(codes or [v.empty_code] * K)
        is_audio.append(codes is not None)

    for _ in range(new):
        with torch.no_grad():
            t, a = model(torch.tensor([text]), torch.tensor([audio]), torch.tensor([is_audio]))
        t, a = t[0, -1], a[0, -1]  # (V,), (K, C): what the last position predicts
        if not in_audio:  # text mode (no switch): anything but `<audio>`; `<eos>` ends the row
            write(tok := _argmax(t, [i for i in range(v.text_vocab_size) if i != v.audio]), None)
            if tok == v.eos:
                break
            continue
        tok = v.audio if tail_step is not None else _argmax(t, [v.audio, v.eos])
        if tok == v.eos and not tail:  # no tail: `<eos>` is a text step of its own
            write(tok, None)
            break
        if tok == v.eos:
            tail_step = 0
        active = tail[tail_step] if tail_step is not None else patterns.codebooks_at(audio_step, K, pattern)
        write(tok, [_argmax(a[k], codes_ok) if active[k] else v.empty_code for k in range(K)])
        audio_step += 1
        if tail_step is not None:
            tail_step += 1
            if tail_step == len(tail):
                break
    n = len(prompt.text)
    return text[n:], audio[n:], is_audio[n:]


@pytest.mark.parametrize(
    ("start", "pattern"), [("text", "delay"), ("audio", "delay"), ("audio", "flatten"), ("audio", "parallel")]
)
def test_greedy_generate_gives_the_steps_of_the_slow_reference(start, pattern):
    prompts, new, ended = _prompts(), 12, 0
    for seed in range(3):
        model = _model(seed)
        out = generate(model, prompts, template=Template(start=start), sampling=Sampling(temperature=0),
                       max_new_tokens=new, pattern=pattern)  # fmt: skip
        for r, p in enumerate(prompts):
            n = int(out.lengths[r])
            steps = out.text[r, :n].tolist(), out.audio[r, :n].tolist(), out.is_audio[r, :n].tolist()
            assert steps == slow_greedy(model, p, start, pattern, new), (seed, r)
            ended += n < new
    assert ended > 0  # some row ended before the limit: `<eos>` (and the delay tail) were compared too
