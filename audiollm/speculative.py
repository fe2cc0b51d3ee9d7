"""Speculative decoding: a cheap draft proposes `gamma` steps, the model checks them in one pass.

A step is a text token, or an audio frame: the text head's choice (another frame, `<eos>`, `<text>`) and
the codes of the codebooks the pattern gives that step (`audiollm.generate._as_step`: the delay pattern's
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
from typing import NamedTuple

import torch
from torch import nn

from audiollm.generate import (
    Generation,
    Logits,
    Sampling,
    _as_step,
    _commit,
    _Decoding,
    _guide,
    _masked,
    _result,
    _Rows,
    _setup,
    _Step,
    _step,
    logits_to_probs,
    positions,
    prefill,
)
from audiollm.model import AudioLanguageModel, KVCache, Rotary, attention_mask, rope
from audiollm.tasks import Prompt, Template

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


class _Proposal(NamedTuple):
    """A drafted step: the draft's choices and, when sampling, the probabilities it drew them from."""

    tok: torch.Tensor  # (B,) int64
    q_tok: torch.Tensor | None  # (B, V) float32
    codes: torch.Tensor | None  # (B * K,) int64, None when no row was in audio
    q_codes: torch.Tensor | None  # (B * K, C) float32


class _Net(NamedTuple):
    """A model with the RoPE factors (R, 1, L, head_dim) of every slot and its KV cache over them."""

    model: AudioLanguageModel
    rotary: Rotary
    cache: KVCache


def _draw(
    logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Draft choices (N,) from logits (N, V), with their probabilities (N, V) (None when greedy)."""
    if sampling.temperature == 0:
        return logits.argmax(-1), None
    q = logits_to_probs(logits, sampling)
    return torch.multinomial(q, 1, generator=generator)[:, 0], q


def _check(
    logits: torch.Tensor,
    q: torch.Tensor | None,
    x: torch.Tensor,
    sampling: Sampling,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor]:
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


def _feed(net: _Net, run: _Decoding, lo: int, hi: int, audio_heads: bool) -> Logits:
    """Feed slots [lo, hi) into the net's cache; logits of every position: text (R, hi - lo, V), audio
    (R, hi - lo, K, C) or None."""
    text, audio, is_audio = (b[:, lo:hi] for b in (run.text, run.audio, run.is_audio))
    mask = attention_mask(run.valid[:, :hi], torch.arange(lo, hi, device=run.valid.device))
    x = net.model.embed(text, audio, is_audio)
    h = net.model.trunk(x, rotary=net.rotary.at(lo, hi), mask=mask, cache=net.cache, start=lo)
    return net.model.heads(h, audio=audio_heads)


def _part(logits: Logits, g: int, run: _Decoding, rows: _Rows) -> Logits:
    """Position g of chunk logits, guided, with the audio heads only while some row is in audio."""
    text, audio = _guide(
        (logits[0][:, g], None if logits[1] is None else logits[1][:, g]), run.B, run.guidance_scale
    )
    return text, audio if bool(rows.in_audio.any()) else None


def _cat(a: Logits, b: Logits) -> Logits:
    """Chunk logits a then b along positions; audio only when both have it."""
    audio = None if a[1] is None or b[1] is None else torch.cat([a[1], b[1]], 1)
    return torch.cat([a[0], b[0]], 1), audio


def _draft_step(run: _Decoding, rows: _Rows, logits: Logits, i: int) -> tuple[_Step, _Proposal]:
    """The draft's step i from its guided logits, as `audiollm.generate._choose` draws one."""
    text, audio = _masked(logits, rows, run.rules, eos_ok=i >= run.min_new_tokens)
    tok, q_tok = _draw(text, run.sampling, run.generator)
    codes, q_codes = (
        (None, None) if audio is None else _draw(audio.flatten(0, 1), run.sampling, run.generator)
    )
    step = _as_step(tok, None if codes is None else codes.view(run.B, -1), rows, run.rules)
    return step, _Proposal(tok, q_tok, codes, q_codes)


def _propose(
    draft: _Net, logits: Logits, run: _Decoding, rows: _Rows, n: int, G: int
) -> tuple[list[_Proposal], bool]:
    """Draft steps n .. n+G-1 from the draft's chunk logits (predicting step n last), on a copy of rows,
    written into the buffers; returns them and whether any row was in audio at any of them."""
    trial = _Rows(**{k: v.clone() for k, v in vars(rows).items()})
    proposals, any_audio = [], bool(rows.in_audio.any())
    for g in range(G):
        i = n + g
        step, proposal = _draft_step(run, trial, _part(logits, -1, run, trial), i)
        _commit(run, trial, step, i)
        proposals.append(proposal)
        any_audio |= bool(trial.in_audio.any())
        if g < G - 1:
            logits = _feed(draft, run, run.S + i, run.S + i + 1, bool(trial.in_audio.any()))
    return proposals, any_audio


def _verify(run: _Decoding, rows: _Rows, logits: Logits, proposal: _Proposal, i: int) -> tuple[_Step, bool]:
    """Check drafted step i against the model's guided logits: the step to write (the draft's, or where a
    row rejects a part, the corrected one) and whether every row accepted it."""
    text, audio = _masked(logits, rows, run.rules, eos_ok=i >= run.min_new_tokens)
    ok_row, tok = _check(text, proposal.q_tok, proposal.tok, run.sampling, run.generator)
    codes = ok_codes = None
    if audio is not None:
        checked = _check(audio.flatten(0, 1), proposal.q_codes, proposal.codes, run.sampling, run.generator)
        ok_codes, codes = (x.view(run.B, -1) for x in checked)  # (B, K)
    ok_row |= (rows.tail > 0) & ~rows.done  # a tail step's text is fixed, not chosen
    step = _as_step(tok, codes, rows, run.rules)
    if step.frame is not None:  # a frame is accepted when every code it writes is
        writes = step.frame[:, None] & (step.codes != run.rules.empty_code)  # (B, K)
        ok_row &= ~(writes & ~ok_codes).any(-1)
    return step, bool((ok_row | rows.done).all())


def _accept(
    logits: Logits, proposals: list[_Proposal], run: _Decoding, rows: _Rows, n: int
) -> tuple[int, int]:
    """Check the drafted steps against the model's chunk logits (R, G + 1, ...) and commit into rows and
    the buffers those every row accepted, then the first corrected step (or the model's own next one).
    Returns (steps written, drafted steps accepted)."""
    for g, proposal in enumerate(proposals):
        step, ok = _verify(run, rows, _part(logits, g, run, rows), proposal, n + g)
        _commit(run, rows, step, n + g)
        if not ok or bool(rows.done.all()):
            return g + 1, g + ok
    G = len(proposals)  # every draft accepted: the model's own next step
    _step(run, rows, _part(logits, G, run, rows), n + G)
    return G + 1, G


def _round(
    model: _Net,
    draft: _Net,
    run: _Decoding,
    rows: _Rows,
    n: int,
    G: int,
    fed: int,
    first: tuple[Logits, Logits] | None,
) -> tuple[int, int]:
    """One round from step n: the draft (its cache valid below slot `fed`) proposes G steps, the model
    checks them in one pass. `first`: the prefills' logits (model, draft) in round 0, else None.
    Returns (steps written, drafted steps accepted)."""
    S = run.S
    d_logits = first[1] if first is not None else _feed(draft, run, fed, S + n, bool(rows.in_audio.any()))
    proposals, any_audio = _propose(draft, d_logits, run, rows, n, G)
    lo = S + n - 1 if n > 0 else S  # the last written step's slot, whose output predicts step n
    logits = _feed(model, run, lo, S + n + G, any_audio) if S + n + G > lo else None
    if first is not None:
        logits = first[0] if logits is None else _cat(first[0], logits)
    return _accept(logits, proposals, run, rows, n)


def _net(model: AudioLanguageModel, run: _Decoding) -> tuple[_Net, Logits]:
    """The model with RoPE factors and a cache over the run's slots, and its prefill's logits: text
    (R, 1, V), audio (R, 1, K, C) predicting step 0."""
    (R, L), param = run.text.shape, next(model.parameters())
    net = _Net(
        model,
        rope(positions(run.valid), model.config, param.dtype),
        KVCache(model.config, R, L, param.dtype, param.device),
    )
    first = prefill(model, *run.prompt(), net.cache)
    return net, (first[0][:, None], None if first[1] is None else first[1][:, None])


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
    B = len(prompts)
    if gamma < 1 or max_new_tokens < 1 or (uncond is not None and len(uncond) != B):
        raise ValueError(
            f"need gamma >= 1, max_new_tokens >= 1 and one uncond prompt per prompt; got gamma={gamma}, "
            f"max_new_tokens={max_new_tokens}, {B} prompts, {None if uncond is None else len(uncond)} uncond"
        )
    run, rows = _setup(
        model, prompts, uncond, template=template, sampling=sampling, max_new_tokens=max_new_tokens,
        min_new_tokens=min_new_tokens, max_seconds=max_seconds, frame_rate=frame_rate, pattern=pattern,
        guidance_scale=guidance_scale, generator=generator,
    )  # fmt: skip
    (target, first), (drafter, d_first) = _net(model, run), _net(draft, run)
    n, fed, drafted, accepted, rounds = 0, run.S, 0, 0, 0  # draft cache valid below slot `fed`
    while n < max_new_tokens and not bool(rows.done.all()):
        G = min(gamma, max_new_tokens - n - 1)
        firsts = (first, d_first) if n == 0 else None
        written, ok = _round(target, drafter, run, rows, n, G, fed, firsts)
        fed = min(run.S + n + max(G - 1, 0), run.S + n + ok)
        n, drafted, accepted, rounds = n + written, drafted + G, accepted + ok, rounds + 1
    if stats is not None:
        stats.update(drafted=drafted, accepted=accepted, rounds=rounds)
    return _result(run, rows, n, [])
