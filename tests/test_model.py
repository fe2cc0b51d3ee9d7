import json

import pytest
import torch
import torch.nn.functional as F

from audiollm.model import (
    GPT_NEOX,
    PRESETS,
    AudioLanguageModel,
    KVCache,
    ModelConfig,
    apply_rope,
    attention_mask,
    lm_loss,
    rope,
)
from audiollm.vocab import Vocab

VOCAB = Vocab(text_size=40, num_codebooks=3, codebook_size=16)
VARIANTS = {
    "default": {},
    "gpt_neox": GPT_NEOX,
    "gqa_tied": dict(n_head=4, n_kv_head=2, tie_embeddings=True, mlp="gelu_tanh"),
}


def make(variant: str = "default", seed: int = 0) -> AudioLanguageModel:
    torch.manual_seed(seed)
    return AudioLanguageModel(ModelConfig(**{**PRESETS["debug"], **VARIANTS[variant]}, vocab=VOCAB)).eval()


def mixed_batch(B: int = 2, S: int = 9, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(0, VOCAB.text_vocab_size, (B, S), generator=g)
    audio = torch.randint(0, VOCAB.audio_card, (B, S, VOCAB.num_codebooks), generator=g)
    is_audio = torch.rand(B, S, generator=g) < 0.5
    return text, audio, is_audio


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_shapes_and_causality(variant):
    model = make(variant)
    text, audio, is_audio = mixed_batch()
    text_logits, audio_logits = model(text, audio, is_audio)
    assert text_logits.shape == (2, 9, VOCAB.text_vocab_size)
    assert audio_logits.shape == (2, 9, VOCAB.num_codebooks, VOCAB.audio_card)
    # Changing the last position changes nothing before it.
    text2, audio2 = text.clone(), audio.clone()
    text2[:, -1], audio2[:, -1] = 0, 0
    again, _ = model(text2, audio2, is_audio)
    torch.testing.assert_close(again[:, :-1], text_logits[:, :-1])


def test_audio_frame_embedding_is_the_sum_of_its_codebook_embeddings():
    model = make()
    text, audio, is_audio = mixed_batch()
    x = model.embed(text, audio, is_audio)
    strided = (
        audio.transpose(0, 1).contiguous().transpose(0, 1)
    )  # same values, non-contiguous (as patterns give)
    torch.testing.assert_close(model.embed(text, strided, is_audio), x)
    b, s = is_audio.nonzero()[0].tolist()
    expected = sum(
        model.audio_embed.weight[VOCAB.audio_id(k, int(audio[b, s, k])) - VOCAB.text_vocab_size]
        for k in range(3)
    )
    torch.testing.assert_close(x[b, s], expected)
    b, s = (~is_audio).nonzero()[0].tolist()
    torch.testing.assert_close(x[b, s], model.text_embed.weight[text[b, s]])


def test_text_logits_equals_forward_on_text_only():
    model = make("gpt_neox")
    text, audio, _ = mixed_batch()
    expected, _ = model(text, audio, torch.zeros_like(text, dtype=torch.bool))
    torch.testing.assert_close(model.text_logits(text), expected)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_cached_chunks_equal_one_full_pass(variant):
    model = make(variant)
    text, audio, is_audio = mixed_batch(S=10)
    full_text, full_audio = model(text, audio, is_audio)
    cache = KVCache(model.config, batch=2, max_len=12, dtype=torch.float32, device=torch.device("cpu"))
    valid = torch.ones(2, 12, dtype=torch.bool)
    outs = []
    # Without padding a mask is needed only for a chunk of several positions after slot 0.
    for start, end, masked in [(0, 6, False), (6, 7, False), (7, 10, True)]:
        slots = torch.arange(start, end)
        x = model.embed(text[:, start:end], audio[:, start:end], is_audio[:, start:end])
        rotary = rope(slots[None], model.config, torch.float32)
        mask = attention_mask(valid, slots) if masked else None
        h = model.trunk(x, rotary=rotary, mask=mask, cache=cache, start=start)
        outs.append(model.heads(h))
    torch.testing.assert_close(torch.cat([o[0] for o in outs], 1), full_text, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat([o[1] for o in outs], 1), full_audio, atol=1e-5, rtol=1e-5)


def test_an_unmasked_chunk_after_slot_0_is_refused():
    model = make()
    cache = KVCache(model.config, batch=1, max_len=8, dtype=torch.float32, device=torch.device("cpu"))
    x = model.embed(torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="needs a mask"):
        model.trunk(
            x, rotary=rope(torch.arange(2, 5)[None], model.config, torch.float32), cache=cache, start=2
        )


@pytest.mark.parametrize("rotary_pct", [1.0, 0.25])
def test_rope_turns_each_pair_of_dims_by_its_angle(rotary_pct):
    """Against the textbook form: dims (i, i + half) of each head turn by pos * theta^(-i / half)."""
    config = ModelConfig(**PRESETS["debug"], rotary_pct=rotary_pct, vocab=VOCAB)  # head_dim 16
    x = torch.randn(2, 3, 5, config.head_dim, generator=torch.Generator().manual_seed(0))
    pos = torch.arange(7, 12)
    half = config.rotary_dims // 2
    angle = pos[:, None] * config.rope_theta ** (-torch.arange(half) / half)  # (S, half)
    x1, x2, rest = x[..., :half], x[..., half : 2 * half], x[..., 2 * half :]
    cos, sin = angle.cos(), angle.sin()
    expected = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest], -1)
    torch.testing.assert_close(apply_rope(x, rope(pos[None], config, torch.float32)), expected)


def test_linear_weights_stay_input_major_through_save_and_load(tmp_path):
    """The (out, in) weights are laid out as contiguous (in, out) arrays: GEMM's fast case on CPUs."""
    model = make("gpt_neox")
    model.save_pretrained(tmp_path)
    for m in (model, AudioLanguageModel.from_pretrained(tmp_path), model.to(torch.float64)):
        linears = [(n, lin) for n, lin in m.named_modules() if isinstance(lin, torch.nn.Linear)]
        assert linears and all(lin.weight.t().is_contiguous() for _, lin in linears)


def test_loss_uses_only_masked_positions():
    model = make()
    text, audio, is_audio = mixed_batch()
    text_logits, audio_logits = model(text, audio, is_audio)
    text_mask, audio_mask = ~is_audio, is_audio[..., None].expand(-1, -1, 3).clone()
    audio_mask[:, :, 2] = False
    out = lm_loss(text_logits, audio_logits, text, audio, text_mask, audio_mask)
    expected_text = F.cross_entropy(text_logits[text_mask], text[text_mask])
    expected_audio = F.cross_entropy(audio_logits[audio_mask], audio[audio_mask])
    torch.testing.assert_close(out["text_loss"], expected_text)
    torch.testing.assert_close(out["audio_loss"], expected_audio)
    n_text, n_audio = text_mask.sum(), audio_mask.sum()
    torch.testing.assert_close(
        out["loss"], (expected_text * n_text + expected_audio * n_audio) / (n_text + n_audio)
    )
    # Targets outside the masks do not matter.
    text2 = torch.where(text_mask, text, 0)
    torch.testing.assert_close(
        lm_loss(text_logits, audio_logits, text2, audio, text_mask, audio_mask)["loss"], out["loss"]
    )


def test_example_balance_averages_each_row_on_its_own():
    model = make()
    text, audio, is_audio = mixed_batch()
    text_logits, audio_logits = model(text, audio, is_audio)
    text_mask, audio_mask = ~is_audio, is_audio[..., None].expand(-1, -1, 3).clone()
    text_mask[0, 1:] = False  # row 0: one text target and its codes; the others keep all of theirs
    weight = torch.rand(text.shape)
    out = lm_loss(text_logits, audio_logits, text, audio, text_mask, audio_mask, weight, balance="example")
    rows = []
    for b in range(len(text)):
        t = F.cross_entropy(text_logits[b][text_mask[b]], text[b][text_mask[b]], reduction="none")
        w = weight[b][text_mask[b]]
        a = F.cross_entropy(audio_logits[b][audio_mask[b]], audio[b][audio_mask[b]], reduction="sum")
        rows.append(((t * w).sum() + a) / (w.sum() + audio_mask[b].sum()))
    torch.testing.assert_close(out["loss"], torch.stack(rows).mean())
    with pytest.raises(ValueError, match="balance"):
        lm_loss(text_logits, audio_logits, text, audio, text_mask, audio_mask, balance="task")


def test_a_few_steps_of_training_reduce_the_loss():
    model = make().train()
    text, audio, is_audio = mixed_batch(B=4, S=16)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    masks = (~is_audio[:, 1:], is_audio[:, 1:, None].expand(-1, -1, 3))
    losses = []
    for _ in range(20):
        text_logits, audio_logits = model(text, audio, is_audio)
        loss = lm_loss(text_logits[:, :-1], audio_logits[:, :-1], text[:, 1:], audio[:, 1:], *masks)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_save_and_load_round_trip(tmp_path, variant):
    model = make(variant, seed=3)
    model.save_pretrained(tmp_path, codec={"name": "encodec_24khz", "bandwidth": 6.0})
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model"]["vocab"] == VOCAB.to_dict()
    assert config["codec"]["name"] == "encodec_24khz"
    loaded = AudioLanguageModel.from_pretrained(tmp_path)
    assert loaded.config == model.config
    text, audio, is_audio = mixed_batch()
    for a, b in zip(loaded(text, audio, is_audio), model(text, audio, is_audio), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    if model.config.tie_embeddings:
        assert loaded.text_head.weight is loaded.text_embed.weight


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        AudioLanguageModel.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="n_kv_head"):
        ModelConfig(n_head=4, n_kv_head=3)
