"""Speculative decoding (issue 17): greedy gives exactly the tokens of plain decoding under every pattern,
batched, with CFG and the delay tail; sampling keeps the model's distribution (chi-square against the exact
one); bad drafts and too-small models are refused."""

import copy

import pytest
import torch
from scipy.stats import chisquare

from audiollm import speculative
from audiollm.generate import Sampling, _rules, generate, logits_to_probs
from audiollm.model import AudioLanguageModel, ModelConfig
from audiollm.quantize import quantize
from audiollm.tasks import Prompt, Template
from audiollm.vocab import Vocab

VOCAB = Vocab(text_size=32, num_codebooks=3, codebook_size=16)


def _model(vocab: Vocab = VOCAB, n_layer: int = 4, seed: int = 0) -> AudioLanguageModel:
    torch.manual_seed(seed)  # init_std 0.3: peaked distributions, as in a trained model
    return AudioLanguageModel(
        ModelConfig(n_layer=n_layer, n_head=2, d_model=32, vocab=vocab, init_std=0.3)
    ).eval()


def _noisy(model: AudioLanguageModel, scale: float) -> AudioLanguageModel:
    """A draft close to the model: its weights plus noise."""
    draft = copy.deepcopy(model)
    with torch.no_grad():
        for p in draft.parameters():
            p.add_(scale * p.std() * torch.randn_like(p))
    return draft


def _prompts(n: int, vocab: Vocab = VOCAB) -> list[Prompt]:
    g = torch.Generator().manual_seed(2)
    return [
        Prompt.from_text(
            [vocab.bos, *torch.randint(0, vocab.text_size, (2 + b,), generator=g).tolist()], vocab
        )
        for b in range(n)  # different lengths: left padding
    ]


def _same(a, b) -> bool:
    return all(torch.equal(getattr(a, f), getattr(b, f)) for f in ("text", "audio", "is_audio", "lengths"))


@pytest.mark.parametrize("pattern", ["delay", "flatten", "parallel"])
@pytest.mark.parametrize("start", ["text", "audio"])
def test_greedy_gives_the_tokens_of_plain_generation(pattern, start):
    model = _model()
    kw = dict(template=Template(start=start, switch=start == "text"), sampling=Sampling(temperature=0))
    kw |= dict(max_new_tokens=24, min_new_tokens=12 if start == "audio" else 0, pattern=pattern)
    for batch, uncond in ((1, None), (3, None), (2, [Prompt.from_text([VOCAB.bos], VOCAB)] * 2)):
        prompts = _prompts(batch)
        ref = generate(model, prompts, uncond=uncond, **kw)
        for draft in (speculative.early_exit(model, 1), model):  # a weak draft and a perfect one
            stats = {}
            out = speculative.generate(model, prompts, draft=draft, gamma=3, uncond=uncond, stats=stats, **kw)
            assert _same(out, ref), (batch, uncond is not None, draft is model)
            assert stats["drafted"] > 0
            if draft is model and batch == 1:  # a perfect draft loses only proposals past the row's end
                assert stats["accepted"] >= stats["drafted"] - 3


@pytest.mark.parametrize("first_audio_step", [0, 2])  # 2: a continuation, its prompt already holds frames
def test_greedy_writes_the_delay_tail_after_eos(first_audio_step):
    model = _model()
    template = Template(start="audio", first_audio_step=first_audio_step)
    kw = dict(template=template, sampling=Sampling(temperature=0), max_new_tokens=20)
    ref = generate(model, _prompts(3), **kw)
    assert int(ref.lengths.min()) < 20  # some row chose to end, then wrote the tail
    out = speculative.generate(model, _prompts(3), draft=speculative.early_exit(model, 2), gamma=4, **kw)
    assert _same(out, ref)
    for b in range(3):
        assert torch.equal(out.row_audio(b), ref.row_audio(b))


def test_works_with_int8_weights():
    model = quantize(_model())
    kw = dict(template=Template(start="audio"), sampling=Sampling(temperature=0), max_new_tokens=16)
    ref = generate(model, _prompts(2), **kw)
    assert _same(speculative.generate(model, _prompts(2), draft=speculative.early_exit(model), **kw), ref)


def _text_joint(model, prompt: Prompt, sampling: Sampling) -> dict[tuple[int, int], float]:
    """Exact probability of each (first, second) text step of plain sampling (after `<eos>`: `<pad>`)."""
    vocab = model.config.vocab
    bias = _rules(vocab, Template(), vocab.num_codebooks, "delay", 8, "cpu").text_mode
    with torch.inference_mode():
        p0 = logits_to_probs(model.text_logits(prompt.text[None])[0, -1] + bias, sampling)
        joint = {}
        for t0 in p0.nonzero()[:, 0].tolist():
            if t0 == vocab.eos:
                joint[(t0, vocab.pad)] = float(p0[t0])
                continue
            ids = torch.cat([prompt.text, torch.tensor([t0])])[None]
            p1 = logits_to_probs(model.text_logits(ids)[0, -1] + bias, sampling)
            joint |= {(t0, t1): float(p0[t0] * p1[t1]) for t1 in p1.nonzero()[:, 0].tolist()}
    return joint


def _fit(counts: dict, joint: dict, n: int) -> float:
    """Chi-square p-value of the counts against the distribution `joint` (cells outside it: a failure)."""
    if set(counts) - set(joint):
        return 0.0
    cells = sorted(joint)
    total = sum(joint.values())  # 1 up to float rounding, which chisquare checks to 1e-8
    return chisquare([counts.get(c, 0) for c in cells], [joint[c] / total * n for c in cells]).pvalue


def test_sampling_keeps_the_models_distribution_over_two_text_steps():
    """Rows of 2 with a close draft: most rounds accept and the second step is often a checked draft,
    not the model's own draw. The counts fit the model's exact joint and not the draft's."""
    model, sampling = _model(), Sampling(temperature=1.0, top_k=3)
    draft = _noisy(model, 0.1)
    prompt = _prompts(1)[0]
    g = torch.Generator().manual_seed(0)
    counts: dict[tuple[int, int], int] = {}
    stats, accepted, drafted = {}, 0, 0
    for _ in range(300):
        out = speculative.generate(
            model, [prompt] * 2, draft=draft, gamma=2, sampling=sampling, max_new_tokens=3,
            generator=g, stats=stats,
        )  # fmt: skip
        accepted, drafted = accepted + stats["accepted"], drafted + stats["drafted"]
        for t0, t1 in out.text[:, :2].tolist():
            counts[(t0, t1)] = counts.get((t0, t1), 0) + 1
    assert 0.15 < accepted / drafted < 0.95  # both the accept and the residual branch ran
    n = sum(counts.values())
    assert _fit(counts, _text_joint(model, prompt, sampling), n) > 1e-3
    assert _fit(counts, _text_joint(draft, prompt, sampling), n) < 1e-3  # the test can tell them apart


def test_sampling_keeps_the_models_distribution_of_a_frame():
    """The first audio step (the text head's <audio>/<eos> and both codes of a parallel frame) of 4000
    rows at once: each row's step is the checked draft or the residual draw."""
    vocab = Vocab(text_size=8, num_codebooks=2, codebook_size=4)
    model, sampling = _model(vocab), Sampling(temperature=1.0, top_k=2)
    draft = _noisy(model, 1.0)
    prompt, B = _prompts(1, vocab)[0], 4000
    kw = dict(template=Template(start="audio"), sampling=sampling, max_new_tokens=2, pattern="parallel")
    out = speculative.generate(
        model, [prompt] * B, draft=draft, gamma=1, generator=torch.Generator().manual_seed(0), **kw
    )
    first = [(int(f), *c) for f, c in zip(out.is_audio[:, 0], out.audio[:, 0].tolist(), strict=True)]
    counts: dict = {}
    for cell in first:
        counts[cell] = counts.get(cell, 0) + 1

    def exact(m) -> dict:
        rules = _rules(vocab, kw["template"], 2, "parallel", 2, "cpu")
        with torch.inference_mode():
            text, audio = m(prompt.text[None], prompt.audio[None], prompt.is_audio[None])
        tok = logits_to_probs(text[0, -1] + rules.audio_mode, sampling)  # <audio> or <eos>
        codes = logits_to_probs(audio[0, -1] + rules.real_code, sampling)  # (2, C)
        joint = {(0, vocab.empty_code, vocab.empty_code): float(tok[vocab.eos])}  # <eos>: no frame
        for a in codes[0].nonzero()[:, 0].tolist():
            for b in codes[1].nonzero()[:, 0].tolist():
                joint[(1, a, b)] = float(tok[vocab.audio] * codes[0, a] * codes[1, b])
        return {c: p for c, p in joint.items() if p > 0}

    assert _fit(counts, exact(model), B) > 1e-3
    assert _fit(counts, exact(draft), B) < 1e-3


def test_bad_drafts_are_refused():
    model = _model()
    other = _model(Vocab(text_size=40, num_codebooks=3, codebook_size=16))
    with pytest.raises(
        ValueError, match=r"draft's vocabulary differs from the model's.*text_size.*\(40, 32\)"
    ):
        speculative.generate(model, _prompts(1), draft=other)
    with pytest.raises(ValueError, match="has 1 layer: too small to draft from"):
        speculative.early_exit(_model(n_layer=1))
    with pytest.raises(ValueError, match=r"layers must be in \[1, 4\)"):
        speculative.early_exit(model, 4)


def test_cli_flag_and_demo_switch_on_tiny(shared_data, tmp_path, capsys):
    """`--speculative` transcribes as plain decoding does (greedy); the demo's switch turns it on and off."""
    from audiollm import AudioLM
    from audiollm.cli import main
    from demos.app import Demo

    clip = shared_data / "fsdd_spoken_digits" / "recordings" / "4_theo_40.wav"
    assert main(["transcribe", str(clip)]) == 0
    plain = capsys.readouterr().out
    assert main(["transcribe", str(clip), "--speculative", "--quantize", "int8"]) == 0
    assert main(["transcribe", str(clip), "--speculative"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == plain.strip()
    for command in (["tts", "four", "--max-seconds", "0.3"], ["music", "calm piano", "--duration", "0.2"]):
        assert main([*command, "-o", str(tmp_path / "x.wav"), "--seed", "0", "--speculative"]) == 0  # sampled
    demo = Demo(AudioLM.from_pretrained("tiny"))
    assert "on" in demo.speculative(True) and demo.lm.decode is not generate
    assert demo.lm.transcribe(clip) == plain.strip().split("\t")[1]
    demo.speculative(False)
    assert demo.lm.decode is generate
