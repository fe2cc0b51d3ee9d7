import pytest
import torch

from audiollm import patterns
from audiollm.generate import Sampling, generate, logits_to_probs, sample
from audiollm.model import GPT_NEOX, PRESETS, AudioLanguageModel, ModelConfig
from audiollm.tasks import Prompt, Template
from audiollm.vocab import Vocab

VOCAB = Vocab(text_size=40, num_codebooks=3, codebook_size=16)
GREEDY = Sampling(temperature=0)
NO_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=NO_CUDA)]


def make(seed: int = 0, keep_audio: bool = False) -> AudioLanguageModel:
    """A debug GPT-NeoX-style model; with keep_audio its text head always prefers <audio> (audio never ends)."""
    torch.manual_seed(seed)
    model = AudioLanguageModel(ModelConfig(**PRESETS["debug"], **GPT_NEOX, vocab=VOCAB)).eval()
    if keep_audio:  # LayerNorm output has zero mean, so with bias 1 the <audio> row scores exactly d_model
        model.norm.bias.data.fill_(1.0)
        model.text_head.weight.data[VOCAB.audio] = 1.0
    return model


def prompt(ids: list[int], n_frames: int = 0, seed: int = 0) -> Prompt:
    """Text ids, then <audio> and n_frames random audio frames."""
    p = Prompt.from_text([*ids, VOCAB.audio] if n_frames else ids, VOCAB)
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, VOCAB.codebook_size, (n_frames, VOCAB.num_codebooks), generator=g)
    return Prompt(
        torch.cat([p.text, torch.full((n_frames,), VOCAB.pad)]),
        torch.cat([p.audio, frames]),
        torch.cat([p.is_audio, torch.ones(n_frames, dtype=torch.bool)]),
    )


PROMPTS = [
    prompt([VOCAB.bos, VOCAB.task("asr"), 3, 4], n_frames=5),
    prompt([VOCAB.bos, 7]),
    prompt([1, 2, 3, 4, 5, 6, 7]),
]


def assert_same(a, b, rows=None):
    assert torch.equal(a.lengths, b.lengths)
    for r in range(len(a.lengths)) if rows is None else rows:
        n = int(a.lengths[r])
        assert torch.equal(a.text[r, :n], b.text[r, :n])
        assert torch.equal(a.audio[r, :n], b.audio[r, :n])
        assert torch.equal(a.is_audio[r, :n], b.is_audio[r, :n])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("start", ["text", "audio"])
def test_cache_gives_the_tokens_and_logits_of_full_recomputation(start, device):
    model = make(keep_audio=start == "audio").to(device)
    args = dict(template=Template(start=start), sampling=GREEDY, max_new_tokens=10, return_logits=True)
    cached = generate(model, PROMPTS, **args)
    full = generate(model, PROMPTS, use_cache=False, **args)
    assert_same(cached, full)
    assert len(cached.logits) == len(full.logits) == 10
    for (t1, a1), (t2, a2) in zip(cached.logits, full.logits, strict=True):
        torch.testing.assert_close(t1, t2, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(a1, a2, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("start", ["text", "audio"])
def test_a_batch_gives_what_each_prompt_gives_alone(start, device):
    model = make(seed=1, keep_audio=start == "audio").to(device)
    args = dict(template=Template(start=start), sampling=GREEDY, max_new_tokens=8, return_logits=True)
    batch = generate(model, PROMPTS, **args)
    for r, p in enumerate(PROMPTS):
        alone = generate(model, [p], **args)
        n = int(alone.lengths[0])
        assert int(batch.lengths[r]) == n
        assert torch.equal(batch.text[r, :n], alone.text[0, :n])
        assert torch.equal(batch.audio[r, :n], alone.audio[0, :n])
        for i in range(n):
            torch.testing.assert_close(batch.logits[i][0][r], alone.logits[i][0][0], atol=1e-5, rtol=1e-5)


def test_delay_pattern_steps_revert_to_whole_frames_and_max_seconds_stops():
    model = make(keep_audio=True)
    out = generate(model, PROMPTS[:2], template=Template(start="audio"), sampling=Sampling(temperature=1.0),
                   max_new_tokens=50, max_seconds=0.5, frame_rate=10, generator=torch.Generator().manual_seed(0))  # fmt: skip
    K, T = VOCAB.num_codebooks, 5
    assert out.lengths.tolist() == [T + K - 1] * 2  # delay: T frames take T + K - 1 steps
    assert out.is_audio.all()
    steps = out.audio[0].T  # (K, S)
    for s in range(K - 1):  # codebook k has no code before step k
        assert steps[:, s].tolist()[s + 1 :] == [VOCAB.empty_code] * (K - 1 - s)
    codes = out.row_audio(0)
    assert codes.shape == (K, T)
    assert (codes < VOCAB.codebook_size).all()
    torch.testing.assert_close(
        patterns.build(codes[None], "delay", VOCAB.empty_code)[0, :, : T + K - 1][:, :K], steps[:, :K]
    )


def test_flatten_pattern_writes_one_code_per_step():
    model = make(keep_audio=True)
    out = generate(
        model,
        PROMPTS[:1],
        template=Template(start="audio"),
        sampling=GREEDY,
        pattern="flatten",
        max_new_tokens=7,
    )
    real = out.audio[0] != VOCAB.empty_code  # (N, K)
    assert real.sum(1).tolist() == [1] * 7
    assert real.float().argmax(1).tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert out.row_audio(0).shape == (3, 2)


def test_text_mode_never_writes_audio_and_eos_ends_a_row():
    model = make(seed=2)
    model.text_head.weight.data[VOCAB.audio] = 10 * model.text_head.weight.data[VOCAB.eos].abs()  # tempt it
    out = generate(
        model,
        PROMPTS,
        sampling=Sampling(temperature=2.0),
        max_new_tokens=30,
        generator=torch.Generator().manual_seed(1),
    )
    assert not out.is_audio.any()
    for r in range(len(PROMPTS)):
        n = int(out.lengths[r])
        assert VOCAB.audio not in out.text[r, :n].tolist()
        assert VOCAB.eos not in out.text[r, : n - 1].tolist()
        if n < 30:
            assert out.text[r, n - 1] == VOCAB.eos and (out.text[r, n:] == VOCAB.pad).all()
            assert out.row_text(r) == out.text[r, : n - 1].tolist()


def test_switch_lets_text_open_an_audio_segment():
    model = make(keep_audio=True)
    model.norm.weight.data.zero_()  # every position's hidden state is all ones: the choice is <audio>
    out = generate(model, PROMPTS[1:2], template=Template(switch=True), sampling=GREEDY, max_new_tokens=5)
    assert out.text[0, 0] == VOCAB.audio and not out.is_audio[0, 0]  # the <audio> marker is a text position
    assert out.is_audio[0, 1:].all()


def test_guidance_mixes_conditional_and_unconditional_logits():
    model = make()
    cond, uncond = PROMPTS[:2], [PROMPTS[2], PROMPTS[1]]
    args = dict(template=Template(start="audio"), sampling=GREEDY, max_new_tokens=3, return_logits=True)
    c = generate(model, cond, **args).logits[0]
    u = generate(model, uncond, **args).logits[0]
    mixed = generate(model, cond, uncond=uncond, guidance_scale=3.0, **args).logits[0]
    for m, ci, ui in zip(mixed, c, u, strict=True):
        torch.testing.assert_close(m, ui + 3.0 * (ci - ui), atol=1e-5, rtol=1e-5)
    # With scale 1 guidance is the conditional model, at every step.
    assert_same(
        generate(model, cond, uncond=uncond, guidance_scale=1.0, **args), generate(model, cond, **args)
    )


def test_seeded_sampling_is_reproducible():
    model = make(keep_audio=True)
    args = dict(
        template=Template(start="audio"),
        sampling=Sampling(temperature=1.0, top_k=5, top_p=0.9),
        max_new_tokens=6,
    )
    a = generate(model, PROMPTS, generator=torch.Generator().manual_seed(7), **args)
    b = generate(model, PROMPTS, generator=torch.Generator().manual_seed(7), **args)
    c = generate(model, PROMPTS, generator=torch.Generator().manual_seed(8), **args)
    assert_same(a, b)
    assert not torch.equal(a.audio, c.audio)


def test_top_k_and_top_p_filtering():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    torch.testing.assert_close(
        logits_to_probs(logits, Sampling(top_k=2)), torch.tensor([[0.625, 0.375, 0, 0]])
    )
    torch.testing.assert_close(
        logits_to_probs(logits, Sampling(top_p=0.8)), torch.tensor([[0.625, 0.375, 0, 0]])
    )
    torch.testing.assert_close(
        logits_to_probs(logits, Sampling(top_p=0.81)), torch.tensor([[0.5, 0.3, 0.15, 0]]) / 0.95
    )
    torch.testing.assert_close(logits_to_probs(logits, Sampling(temperature=1.0)), logits.exp())
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([sample(logits, Sampling(top_k=1), g) for _ in range(20)])
    assert (draws == 0).all()
    assert sample(logits, GREEDY).tolist() == [0]


def test_bad_arguments_say_what_to_do():
    model = make()
    with pytest.raises(ValueError, match="frame_rate"):
        generate(model, PROMPTS, max_seconds=1.0)
    with pytest.raises(ValueError, match="one per prompt"):
        generate(model, PROMPTS, uncond=PROMPTS[:1])


def test_min_new_tokens_holds_eos_back():
    model = make(seed=2)
    args = dict(sampling=Sampling(temperature=2.0), max_new_tokens=30)
    free = generate(model, PROMPTS, generator=torch.Generator().manual_seed(1), **args)
    held = generate(model, PROMPTS, min_new_tokens=12, generator=torch.Generator().manual_seed(1), **args)
    assert int(free.lengths.min()) < 12 <= int(held.lengths.min())


@pytest.mark.parametrize("start", ["text", "audio"])
@pytest.mark.parametrize("device", DEVICES)
def test_bfloat16_cache_gives_the_tokens_of_full_recomputation(start, device):
    model = make(keep_audio=start == "audio").to(device, torch.bfloat16)
    args = dict(template=Template(start=start), sampling=GREEDY, max_new_tokens=10)
    assert_same(generate(model, PROMPTS, **args), generate(model, PROMPTS, use_cache=False, **args))


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_compiled_decode_step_gives_the_same_tokens(device):
    model = make(keep_audio=True).to(device)
    args = dict(template=Template(start="audio"), sampling=GREEDY, max_new_tokens=5)
    assert_same(generate(model, PROMPTS, compile=True, **args), generate(model, PROMPTS, **args))


@pytest.mark.parametrize("pattern", ["delay", "flatten", "parallel"])
def test_a_model_fit_to_one_clip_ends_it_where_training_did(pattern):
    """The stop generation can take is the stop training taught: a model that learned one TTS clip by heart
    writes back its codes, whole frames, and ends there (the delay tail after `<eos>` included)."""
    from audiollm import tasks
    from audiollm.data.dataset import collate as batch_of
    from audiollm.model import lm_loss

    torch.manual_seed(0)
    model = AudioLanguageModel(ModelConfig(**PRESETS["debug"], vocab=VOCAB))
    codes = torch.randint(0, VOCAB.codebook_size, (VOCAB.num_codebooks, 8))
    batch = batch_of([tasks.tts(VOCAB, pattern, [5, 6, 7], codes).example("tts")], VOCAB)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        logits = model(batch["text"], batch["audio"], batch["is_audio"])
        keys = ("text_target", "audio_target", "text_mask", "audio_mask")
        loss = lm_loss(*logits, *(batch[k] for k in keys))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    prompt = tasks.tts(VOCAB, pattern, [5, 6, 7], None).prompt()
    out = generate(model.eval(), [prompt], template=Template(start="audio"), sampling=GREEDY, pattern=pattern,
                   max_new_tokens=60)  # fmt: skip
    assert torch.equal(out.row_audio(0), codes)
    K = VOCAB.num_codebooks  # without a tail, `<eos>` is a step of its own
    assert int(out.lengths[0]) == patterns.get(pattern).num_steps(8, K) + (
        len(patterns.tail(K, pattern)) == 0
    )
