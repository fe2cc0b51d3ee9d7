"""Speculative decoding: a cheap draft proposes `gamma` steps, the model checks them in one pass.

A step is a text token, or an audio frame: the text head's choice (another frame, `<eos>`, `<text>`) and
the codes of the codebooks the pattern gives that step (`audiollm.generate._choose`: the delay pattern's
offsets and its tail after `<eos>`). Each part of a step is checked with the rule that keeps the model's
distribution: the draft's choice x ~ q stays with probability min(1, p(x)/q(x)), else a draw from the
residual max(0, p - q) replaces it. The parts of a step are independent given the prefix, so checking each
keeps the distribution of the whole step; a frame counts as accepted only when all of its codes are. The
first step that is not accepted ends the round (its corrected value is kept); when all are, the model's
own next step is added. Greedy decoding (temperature 0) is the limit p, q one-hot: the same tokens as
`audiollm.generate.generate`. The B rows of a batch stay in step: a round keeps the steps every row
accepted, so acceptance falls with batch size.

The draft is any model with the same vocabulary, or `early_exit(model, layers)`: the model's first layers
with its own final norm and heads (self-speculation; no extra weights).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from audiollm.generate import (
    Generation,
    Sampling,
    _advance,
    _audio_step_limit,
    _choose,
    _guide,
    _Rows,
    _rules,
    _sequences,
    logits_to_probs,
    positions,
    prefill,
)
from audiollm.model import AudioLanguageModel, KVCache, attention_mask, rope
from audiollm.tasks import Prompt, Template

GREEDY = Sampling(temperature=0)
PLAIN_TEMPLATE, PLAIN_SAMPLING = Template(), Sampling()  # the defaults of `audiollm.generate.generate`


def early_exit(model: AudioLanguageModel, layers: int | None = None) -> AudioLanguageModel:
    """A draft made of `model`'s first `layers` blocks (default: a quarter, at least 1), its final norm,
    embeddings and heads; it shares their weights (quantised ones too)."""
    n = model.config.n_layer
    if n < 2:
        raise ValueError(
            f"the model has {n} layer: too small to draft from its own early layers (it needs at least 2); "
            "give a separate draft model"
        )
    layers = max(1, n // 4) if layers is None else layers
    if not 1 <= layers < n:
        raise ValueError(f"early_exit layers must be in [1, {n}) for this {n}-layer model, got {layers}")
    with torch.device("meta"):
        draft = AudioLanguageModel(dataclasses.replace(model.config, n_layer=layers))
    for name in ("text_embed", "audio_embed", "norm", "text_head", "audio_heads"):
        setattr(draft, name, getattr(model, name))
    draft.blocks = nn.ModuleList(model.blocks[:layers])
    draft.audio_offsets = model.audio_offsets
    return draft.eval()


def check_draft(model: AudioLanguageModel, draft: AudioLanguageModel) -> None:
    """Refuse a draft whose token layout is not the model's: its proposals would be other tokens."""
    mine, theirs = model.config.vocab.to_dict(), draft.config.vocab.to_dict()
    if mine != theirs:
        diff = {
            k: (theirs.get(k), mine.get(k))
            for k in mine.keys() | theirs.keys()
            if mine.get(k) != theirs.get(k)
        }
        raise ValueError(f"the draft's vocabulary differs from the model's (field: (draft, model)): {diff}")


def _masked(text_logits, audio_logits, rows: _Rows, rules: dict, eos_ok: bool):
    """The logits `_choose` draws from: text (B, V) under each row's mode (and `<eos>` rule), audio
    (B, K, C) with the empty code excluded, or None."""
    bias = rules["text_mode"]
    if audio_logits is not None:
        bias = torch.where(rows.in_audio[:, None], rules["audio_mode"], bias)
    text = text_logits + (bias if eos_ok else bias + rules["no_eos"])
    return text, None if audio_logits is None else audio_logits + rules["real_code"]


def _draw(logits: torch.Tensor, sampling: Sampling, generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Draft choices (N,) from logits (N, V), with their probabilities (N, V) (None when greedy)."""
    if sampling.temperature == 0:
        return logits.argmax(-1), None
    q = logits_to_probs(logits, sampling)
    return torch.multinomial(q, 1, generator=generator)[:, 0], q


def _check(logits, q, x, sampling: Sampling, generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The speculative-sampling rule on N parts: logits (N, V) of the model, draft probs q (N, V) and draft
    choices x (N,) -> accepted (N,) bool and the kept value (N,): x, or a draw from max(0, p - q)."""
    if sampling.temperature == 0:
        best = logits.argmax(-1)
        return best == x, best
    p = logits_to_probs(logits, sampling)
    px, qx = p.gather(-1, x[:, None])[:, 0], q.gather(-1, x[:, None])[:, 0]
    ok = torch.rand(px.shape, generator=generator, device=px.device) * qx < px  # u < p(x) / q(x)
    residual = (p - q).clamp(min=0)
    residual = torch.where(residual.sum(-1, keepdim=True) > 0, residual, p)  # p == q: never rejected
    return ok, torch.where(ok, x, torch.multinomial(residual, 1, generator=generator)[:, 0])


def _one_hot(x: torch.Tensor, size: int) -> torch.Tensor:
    """Logits (N, size) whose argmax is x (N,): 0 there, -inf elsewhere."""
    return torch.full((*x.shape, size), float("-inf"), device=x.device).scatter(-1, x[:, None], 0.0)


def _step(tok, codes, rows: _Rows, rules: dict):
    """`_choose` applied to already chosen values tok (B,) and codes (B, K) or None: the step it writes."""
    C = rules["real_code"].shape[0]
    audio = None if codes is None else _one_hot(codes.flatten(), C).view(*codes.shape, C)
    return _choose(_one_hot(tok, rules["text_mode"].shape[0]), audio, rows, rules, GREEDY, None, True)


def _write(bufs, j: int, B: int, step, vocab) -> None:
    """Write step (tok (B,), codes (B, K) or None, frame (B,) or None) at slot j of the B rows and their
    unconditional twins."""
    text, audio, is_audio = bufs
    tok, codes, frame = step
    if frame is None:
        frame, codes = (
            torch.zeros_like(tok, dtype=torch.bool),
            torch.full_like(audio[:B, 0], vocab.empty_code),
        )
    values = [(text, torch.where(frame, vocab.pad, tok)), (is_audio, frame)]
    values += [(audio, torch.where(frame[:, None], codes, vocab.empty_code))]
    for buf, x in values:
        buf.view(buf.shape[0] // B, B, *buf.shape[1:])[:, :, j] = x


def _run(model, bufs, valid, rotary, lo: int, hi: int, cache: KVCache, audio_heads: bool):
    """Feed slots [lo, hi) into cache; logits of every position: text (R, hi - lo, V), audio or None."""
    text, audio, is_audio = (b[:, lo:hi] for b in bufs)
    mask = attention_mask(valid[:, :hi], torch.arange(lo, hi, device=valid.device))
    h = model.trunk(
        model.embed(text, audio, is_audio), rotary=rotary.at(lo, hi), mask=mask, cache=cache, start=lo
    )
    return model.heads(h, audio=audio_heads)


def _part(logits, g: int, B: int, scale: float, rows: _Rows):
    """Position g of chunk logits, guided, with the audio heads only while some row is in audio."""
    text, audio = _guide((logits[0][:, g], None if logits[1] is None else logits[1][:, g]), B, scale)
    return text, audio if bool(rows.in_audio.any()) else None


def _cat(a, b):
    """Chunk logits a then b along positions; audio only when both have it."""
    audio = None if a[1] is None or b[1] is None else torch.cat([a[1], b[1]], 1)
    return torch.cat([a[0], b[0]], 1), audio


def _propose(draft, logits, bufs, valid, rotary, cache, rows: _Rows, n: int, G: int, ctx: dict):
    """Draft steps n .. n+G-1 on a copy of rows, written into bufs; per step (x_tok, q_tok, x_codes, q_codes)
    and whether any row was in audio at any of them."""
    B, S, rules, sampling = ctx["B"], ctx["S"], ctx["rules"], ctx["sampling"]
    trial = _Rows(**{k: v.clone() for k, v in vars(rows).items()})
    proposals, any_audio = [], bool(rows.in_audio.any())
    for g in range(G):
        i = n + g
        part = _part(logits, -1, B, ctx["scale"], trial)
        text, audio = _masked(*part, trial, rules, i >= ctx["min_new_tokens"])
        x_tok, q_tok = _draw(text, sampling, ctx["generator"])
        x_codes, q_codes = (
            (None, None) if audio is None else _draw(audio.flatten(0, 1), sampling, ctx["generator"])
        )
        step = _step(x_tok, None if x_codes is None else x_codes.view(B, -1), trial, rules)
        _advance(trial, step[0], step[2], rules, i)
        _write(bufs, S + i, B, step, ctx["vocab"])
        proposals.append((x_tok, q_tok, x_codes, q_codes))
        any_audio |= bool(trial.in_audio.any())
        if g < G - 1:
            logits = _run(draft, bufs, valid, rotary, S + i, S + i + 1, cache, bool(trial.in_audio.any()))
    return proposals, any_audio


def _accept(logits, proposals, bufs, rows: _Rows, n: int, ctx: dict) -> tuple[int, int]:
    """Check the drafted steps against the model's logits (R, G + 1, ...) and commit into rows and bufs
    those every row accepted, then the first corrected step (or the model's own next one).
    Returns (steps written, drafted steps accepted)."""
    B, S, rules, sampling, generator = ctx["B"], ctx["S"], ctx["rules"], ctx["sampling"], ctx["generator"]
    accepted = 0
    for g in range(len(proposals) + 1):
        i, eos_ok = n + g, n + g >= ctx["min_new_tokens"]
        text, audio = _part(logits, g, B, ctx["scale"], rows)
        ok = False
        if g == len(proposals):  # every draft accepted: the model's own next step
            step = _choose(text, audio, rows, rules, sampling, generator, eos_ok)
        else:
            x_tok, q_tok, x_codes, q_codes = proposals[g]
            text, audio = _masked(text, audio, rows, rules, eos_ok)
            ok_row, tok = _check(text, q_tok, x_tok, sampling, generator)
            codes = None
            if audio is not None:
                ok_codes, codes = (
                    x.view(B, -1) for x in _check(audio.flatten(0, 1), q_codes, x_codes, sampling, generator)
                )
            ok_row |= (rows.tail > 0) & ~rows.done  # a tail step's text is fixed, not chosen
            step = _step(tok, codes, rows, rules)
            if step[2] is not None:  # a frame is accepted when every code it writes is
                writes = step[2][:, None] & (step[1] != ctx["vocab"].empty_code)  # (B, K)
                ok_row &= ~(writes & ~ok_codes).any(-1)
            ok = bool((ok_row | rows.done).all())
        _advance(rows, step[0], step[2], rules, i)
        _write(bufs, S + i, B, step, ctx["vocab"])
        accepted += ok
        if not ok or bool(rows.done.all()):
            return g + 1, accepted
    raise AssertionError("unreachable: the last step is never accepted")


@torch.inference_mode()
def generate(
    model: AudioLanguageModel,
    prompts: list[Prompt],
    *,
    draft: AudioLanguageModel,
    gamma: int = 4,
    template: Template = PLAIN_TEMPLATE,
    sampling: Sampling = PLAIN_SAMPLING,
    max_new_tokens: int = 256,
    min_new_tokens: int = 0,
    max_seconds: float | None = None,
    frame_rate: float | None = None,
    pattern: str = "delay",
    uncond: list[Prompt] | None = None,
    guidance_scale: float = 3.0,
    generator: torch.Generator | None = None,
    stats: dict | None = None,
) -> Generation:
    """`audiollm.generate.generate` (same arguments and result) with `draft` proposing `gamma` steps a
    round. Greedy: the same tokens; sampling: the same distribution. `stats`, when given, receives
    `drafted` and `accepted` step counts and `rounds`."""
    check_draft(model, draft)
    vocab, B, K = model.config.vocab, len(prompts), model.config.vocab.num_codebooks
    if gamma < 1 or max_new_tokens < 1 or (uncond is not None and len(uncond) != B):
        raise ValueError(
            f"need gamma >= 1, max_new_tokens >= 1 and one uncond prompt per prompt; got gamma={gamma}, "
            f"max_new_tokens={max_new_tokens}, {B} prompts, {None if uncond is None else len(uncond)} uncond"
        )
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    S = max(len(p.text) for p in prompts + (uncond or []))
    text, audio, is_audio, valid = _sequences(prompts + (uncond or []), max_new_tokens, vocab, device)
    bufs, (R, L) = (text, audio, is_audio), text.shape
    max_audio = _audio_step_limit(max_new_tokens, max_seconds, frame_rate, pattern, K)
    rules = _rules(vocab, template, K, pattern, max_audio, device)
    rows = _Rows(
        in_audio=torch.full((B,), template.start == "audio", device=device),
        audio_step=torch.full((B,), template.first_audio_step, device=device),
        done=torch.zeros(B, dtype=torch.bool, device=device),
        lengths=torch.zeros(B, dtype=torch.long, device=device),
        tail=torch.zeros(B, dtype=torch.long, device=device),
    )
    ctx = dict(B=B, S=S, rules=rules, sampling=sampling, generator=generator, vocab=vocab)
    ctx |= dict(scale=guidance_scale, min_new_tokens=min_new_tokens)
    nets = (model, draft)
    rotary = [rope(positions(valid), m.config, dtype) for m in nets]
    caches = [KVCache(m.config, R, L, dtype, device) for m in nets]
    first = [
        tuple(x[:, None] for x in prefill(m, text[:, :S], audio[:, :S], is_audio[:, :S], valid[:, :S], c))
        for m, c in zip(nets, caches, strict=True)
    ]  # per net: text (R, 1, V), audio (R, 1, K, C) predicting step 0
    n, fed, drafted, accepted, rounds = 0, S, 0, 0, 0  # draft cache valid below slot `fed`
    while n < max_new_tokens and not bool(rows.done.all()):
        G = min(gamma, max_new_tokens - n - 1)
        heads = bool(rows.in_audio.any())
        d_logits = first[1] if n == 0 else _run(draft, bufs, valid, rotary[1], fed, S + n, caches[1], heads)
        proposals, any_audio = _propose(draft, d_logits, bufs, valid, rotary[1], caches[1], rows, n, G, ctx)
        lo = S + n - 1 if n > 0 else S  # the last written step's slot, whose output predicts step n
        logits = (
            _run(model, bufs, valid, rotary[0], lo, S + n + G, caches[0], any_audio)
            if S + n + G > lo
            else None
        )
        if n == 0:
            logits = first[0] if logits is None else _cat(first[0], logits)
        written, ok = _accept(logits, proposals, bufs, rows, n, ctx)
        fed = min(S + n + max(G - 1, 0), S + n + ok)
        n, drafted, accepted, rounds = n + written, drafted + G, accepted + ok, rounds + 1
    if stats is not None:
        stats.update(drafted=drafted, accepted=accepted, rounds=rounds)
    rows.lengths = torch.where(rows.done, rows.lengths, n)
    N = int(rows.lengths.max())
    out = (text[:B, S : S + N], audio[:B, S : S + N], is_audio[:B, S : S + N])
    return Generation(*out, lengths=rows.lengths, pattern=pattern, vocab=vocab)
