"""Generation: prefill, one `decode_step` at a time over a static KV cache, sampling, classifier-free guidance.

Contract with training (the templates in tasks.py): the text head at position p predicts position p+1's
text token, or `<audio>` when position p+1 is an audio frame; the K audio heads at p predict the codes of
p+1. So at an audio step the text head decides between another frame (`<audio>`), the end (`<eos>`) and,
if the template allows, a return to text (`<text>`); in text mode, writing `<audio>` (the segment marker)
switches a row to audio. Audio steps follow a codebook pattern (`audiollm.patterns`): codebooks with no
code at a step get the empty code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from audiollm import patterns
from audiollm.model import AudioLanguageModel, KVCache, Rotary, additive, attention_mask, rope
from audiollm.tasks import Prompt, Template
from audiollm.vocab import Vocab

# A position's logits, per row: text (R, text_vocab_size), audio (R, K, audio_card) or None (heads skipped).
Logits = tuple[torch.Tensor, torch.Tensor | None]


@dataclass(frozen=True)
class Sampling:
    """How a token is drawn from logits."""

    temperature: float = 1.0  # 0 means greedy (argmax)
    top_k: int | None = None  # keep the k most likely tokens
    top_p: float | None = None  # keep the smallest set of tokens whose probability reaches p


@dataclass
class Generation:
    """Generated steps of B rows; a row's steps after its `<eos>` (or limit) are padding."""

    text: torch.Tensor  # (B, N) int64 text ids (`<pad>` at audio steps)
    audio: torch.Tensor  # (B, N, K) int64 codes (empty code at text steps)
    is_audio: torch.Tensor  # (B, N) bool
    lengths: torch.Tensor  # (B,) int64 steps written per row, its final `<eos>` included
    pattern: str  # codebook pattern of the audio steps
    vocab: Vocab
    logits: list[Logits] = field(default_factory=list)  # per step, if asked: guided, as sampled from

    def row_text(self, b: int) -> list[int]:
        """Text ids row b wrote, without `<eos>`."""
        n = int(self.lengths[b])
        ids = self.text[b, :n][~self.is_audio[b, :n]].tolist()
        return [i for i in ids if i != self.vocab.eos]

    def row_audio(self, b: int, before: torch.Tensor | None = None) -> torch.Tensor:
        """(K, T) int64 codes of row b's audio steps, after the prompt's audio steps `before` (S0, K) when
        generation continued them (`Template.first_audio_step`), reverted by the pattern to complete frames."""
        n = int(self.lengths[b])
        steps = self.audio[b, :n][self.is_audio[b, :n]]  # (S, K)
        if before is not None:
            steps = torch.cat([before, steps])
        return patterns.revert(steps.T[None], self.pattern)[0]


def collate(prompts: list[Prompt], vocab: Vocab) -> tuple[torch.Tensor, ...]:
    """Left-pad prompts to one batch: text (B, S), audio (B, S, K), is_audio (B, S), valid (B, S) bool."""
    S, B, K = max(len(p.text) for p in prompts), len(prompts), vocab.num_codebooks
    text = torch.full((B, S), vocab.pad, dtype=torch.long)
    audio = torch.full((B, S, K), vocab.empty_code, dtype=torch.long)
    is_audio = torch.zeros(B, S, dtype=torch.bool)
    valid = torch.zeros(B, S, dtype=torch.bool)
    for b, p in enumerate(prompts):
        n = len(p.text)
        if n == 0 or p.audio.shape != (n, K) or p.is_audio.shape != (n,):
            raise ValueError(f"prompt {b}: expected text (S,), audio (S, {K}), is_audio (S,) with S > 0")
        text[b, S - n :], audio[b, S - n :], is_audio[b, S - n :], valid[b, S - n :] = (
            p.text,
            p.audio,
            p.is_audio,
            True,
        )
    return text, audio, is_audio, valid


def logits_to_probs(logits: torch.Tensor, sampling: Sampling) -> torch.Tensor:
    """Probabilities (..., V) after temperature, top-k and top-p filtering of logits (..., V)."""
    logits = logits.float() / max(sampling.temperature, 1e-5)
    if sampling.top_k is not None:
        kth = torch.topk(logits, min(sampling.top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if sampling.top_p is not None:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop_sorted = cum - sorted_logits.softmax(-1) >= sampling.top_p  # mass before this token already >= p
        logits = logits.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), float("-inf"))
    return logits.softmax(-1)


def sample(
    logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Token ids (N,) from logits (N, V): argmax when temperature is 0, else a draw from `logits_to_probs`."""
    if sampling.temperature == 0:
        return logits.argmax(-1)
    probs = logits_to_probs(logits, sampling)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def decode_step(
    model: AudioLanguageModel,
    text: torch.Tensor,
    audio: torch.Tensor | None,
    is_audio: torch.Tensor,
    rotary: Rotary,
    start: int,
    mask: torch.Tensor | None,
    cache: KVCache | None,
    audio_heads: bool = True,
) -> Logits:
    """Run positions text (B, S) int64, audio (B, S, K) int64 or None (no audio frame among them), is_audio
    (B, S) bool, with RoPE factors `rotary` (`audiollm.model.rope` of their positions) into cache slots
    [start, start + S), attending as mask (B, 1, S, L) bool or additive allows. Returns the last position's
    logits: text (B, text_vocab_size), audio (B, K, audio_card), or None for audio when `audio_heads` is
    False (no row is in an audio segment: the K audio heads, as large as the text head, are skipped)."""
    h = model.trunk(model.embed(text, audio, is_audio), rotary=rotary, mask=mask, cache=cache, start=start)
    text_logits, audio_logits = model.heads(h[:, -1:], audio=audio_heads)
    return text_logits[:, 0], None if audio_logits is None else audio_logits[:, 0]


def positions(valid: torch.Tensor) -> torch.Tensor:
    """RoPE positions (B, L) int64 of left-padded rows valid (B, L) bool: real tokens are counted from 0."""
    return (valid.long().cumsum(1) - 1).clamp(min=0)


def prefill(
    model: AudioLanguageModel,
    text: torch.Tensor,
    audio: torch.Tensor,
    is_audio: torch.Tensor,
    valid: torch.Tensor,
    cache: KVCache | None,
    audio_heads: bool = True,
) -> Logits:
    """Run a left-padded prompt batch (see `collate`: text (B, S), audio (B, S, K), is_audio (B, S), valid
    (B, S) bool, False at padding) into cache slots 0..S-1. Returns the last position's logits, as
    `decode_step`."""
    rotary = rope(positions(valid), model.config, next(model.parameters()).dtype)
    slots = torch.arange(text.shape[1], device=text.device)
    mask = None if bool(valid.all()) else attention_mask(valid, slots)  # (B, 1, S, S) only with padding
    return decode_step(model, text, audio, is_audio, rotary, 0, mask, cache, audio_heads)


class Rules(NamedTuple):
    """What a step may write, fixed for one call: additive logit masks (0 or -inf), the pattern's codebook
    slots, special ids."""

    text_mode: torch.Tensor  # (V,) float32: the ids a text step may write
    audio_mode: torch.Tensor  # (V,) float32: an audio step's choices: <audio>, <eos> (and <text> with switch)
    no_eos: torch.Tensor  # (V,) float32: -inf at <eos>, for steps before min_new_tokens
    real_code: torch.Tensor  # (audio_card,) float32: -inf at the empty code
    active: torch.Tensor  # (n, K) bool: codebooks with a code at pattern step s
    tail: torch.Tensor  # (n_tail + 1, K) bool: codebooks of each tail step; a last row past it (never read)
    pad_id: int
    eos_id: int
    audio_id: int
    text_id: int
    empty_code: int
    audio_step_limit: int  # a row stops when its pattern step reaches this
    n_tail: int  # steps of the pattern's tail after <eos> (delay: K - 1)


def _rules(
    vocab: Vocab, template: Template, K: int, pattern: str, max_audio_steps: int, device: torch.device | str
) -> Rules:
    """The `Rules` of a call: rows writing at most `max_audio_steps` audio steps under `template`."""
    text_mode, audio_mode, no_eos = (torch.zeros(vocab.text_vocab_size) for _ in range(3))
    audio_mode.fill_(float("-inf"))
    audio_mode[[vocab.audio, vocab.eos] + ([vocab.text] if template.switch else [])] = 0
    if not template.switch:
        text_mode[vocab.audio] = float("-inf")
    no_eos[vocab.eos] = float("-inf")
    real_code = torch.zeros(vocab.audio_card)
    real_code[vocab.empty_code] = float("-inf")
    n = template.first_audio_step + max_audio_steps + 1
    active = torch.stack([patterns.codebooks_at(s, K, pattern) for s in range(n)])  # (n, K) codes per step
    tail = patterns.tail(K, pattern)  # (n_tail, K)
    tail = torch.cat([tail, tail.new_zeros(1, K)])
    masks = (x.to(device) for x in (text_mode, audio_mode, no_eos, real_code, active, tail))
    return Rules(
        *masks,
        pad_id=vocab.pad,
        eos_id=vocab.eos,
        audio_id=vocab.audio,
        text_id=vocab.text,
        empty_code=vocab.empty_code,
        audio_step_limit=max_audio_steps + template.first_audio_step,
        n_tail=len(tail) - 1,
    )


@dataclass
class _Rows:
    """Per-row decoding state of the B conditional rows."""

    in_audio: torch.Tensor  # (B,) bool: the next step is an audio step
    audio_step: torch.Tensor  # (B,) int64: pattern step of the next audio position
    done: torch.Tensor  # (B,) bool
    lengths: torch.Tensor  # (B,) int64 steps written
    tail: torch.Tensor  # (B,) int64: steps of the pattern's tail written since the row chose to end

    @classmethod
    def start(cls, B: int, template: Template, device: torch.device) -> _Rows:
        """B rows before their first step."""
        return cls(
            in_audio=torch.full((B,), template.start == "audio", device=device),
            audio_step=torch.full((B,), template.first_audio_step, device=device),
            done=torch.zeros(B, dtype=torch.bool, device=device),
            lengths=torch.zeros(B, dtype=torch.long, device=device),
            tail=torch.zeros(B, dtype=torch.long, device=device),
        )


class _Step(NamedTuple):
    """One step of the B rows."""

    tok: torch.Tensor  # (B,) int64 text head's id (`<pad>` for finished rows)
    codes: torch.Tensor | None  # (B, K) int64, the empty code where the pattern has none; None: no frame
    frame: torch.Tensor | None  # (B,) bool: the step is an audio frame; None when no row is in audio


@dataclass(frozen=True)
class _Decoding:
    """What one call holds fixed: the buffers of its R rows (B conditional, then with CFG B unconditional
    twins fed the same steps), prompt at slots [0, S) and step i at slot S + i; its rules and sampling."""

    text: torch.Tensor  # (R, L) int64
    audio: torch.Tensor  # (R, L, K) int64
    is_audio: torch.Tensor  # (R, L) bool
    valid: torch.Tensor  # (R, L) bool: False at left padding
    B: int
    S: int
    rules: Rules
    sampling: Sampling
    generator: torch.Generator | None
    guidance_scale: float
    min_new_tokens: int
    pattern: str
    vocab: Vocab

    def prompt(self) -> tuple[torch.Tensor, ...]:
        """The prompt slots, as `prefill` takes them: text (R, S), audio (R, S, K), is_audio, valid (R, S)."""
        return tuple(x[:, : self.S] for x in (self.text, self.audio, self.is_audio, self.valid))


def _guide(logits: Logits, B: int, scale: float) -> Logits:
    """Classifier-free guidance: rows [0, B) are conditional, [B, 2B) unconditional; mix them."""
    if logits[0].shape[0] == B:
        return logits
    return _mix(logits[0], B, scale), _mix(logits[1], B, scale)


def _mix(x: torch.Tensor | None, B: int, scale: float) -> torch.Tensor | None:
    """Rows [0, B) conditional, [B, 2B) unconditional -> uncond + scale * (cond - uncond); None stays None."""
    if x is None:
        return None
    cond, uncond = x.split(B)
    return uncond + scale * (cond - uncond)


def _masked(logits: Logits, rows: _Rows, rules: Rules, eos_ok: bool) -> Logits:
    """What a step draws from: text logits (B, V) under each row's mode (and `<eos>` rule), audio (B, K, C)
    with the empty code excluded, or None."""
    text_logits, audio_logits = logits
    bias = rules.text_mode  # (V,) 0 or -inf
    if audio_logits is not None:  # some row is in audio mode: (B, V)
        bias = torch.where(rows.in_audio[:, None], rules.audio_mode, bias)
    text = text_logits + (bias if eos_ok else bias + rules.no_eos)
    return text, None if audio_logits is None else audio_logits + rules.real_code


def _as_step(tok: torch.Tensor, codes: torch.Tensor | None, rows: _Rows, rules: Rules) -> _Step:
    """The step that drawn ids tok (B,) and codes (B, K) or None write: finished rows `<pad>`; codebooks the
    pattern leaves empty the empty code."""
    tok = torch.where(rows.done, rules.pad_id, tok)
    if codes is None:
        return _Step(tok, None, None)
    # After `<eos>` at an audio step the pattern's tail follows (delay: the last frames' upper codebooks);
    # a tail step is a frame whose codebooks the tail table gives, not a choice of the text head.
    in_tail = (rows.tail > 0) & ~rows.done
    tok = torch.where(in_tail, rules.audio_id, tok)
    starts = rows.in_audio & (tok == rules.eos_id) & (rules.n_tail > 0)
    active = torch.where(
        (starts | in_tail)[:, None], rules.tail[rows.tail], rules.active[rows.audio_step]
    )  # (B, K) codebooks with a code at this step
    frame = rows.in_audio & ((tok == rules.audio_id) | starts)
    return _Step(tok, torch.where(active, codes, rules.empty_code), frame)


def _choose(run: _Decoding, rows: _Rows, logits: Logits, i: int) -> _Step:
    """Draw step i from guided logits (text (B, V), audio (B, K, C) or None); codes and frame are None when
    the audio heads were skipped."""
    text, audio = _masked(logits, rows, run.rules, eos_ok=i >= run.min_new_tokens)
    tok = sample(text, run.sampling, run.generator)  # (B,)
    if audio is None:
        return _as_step(tok, None, rows, run.rules)
    B, K, C = audio.shape
    codes = sample(audio.view(B * K, C), run.sampling, run.generator).view(B, K)  # (B, K)
    return _as_step(tok, codes, rows, run.rules)


def _advance(rows: _Rows, step: _Step, rules: Rules, i: int) -> None:
    """Update modality, pattern step and stop flags after step i."""
    tok, frame = step.tok, step.frame
    eos = tok == rules.eos_id
    stop = eos
    if frame is not None:
        tailing = frame & (eos | (rows.tail > 0))  # rows writing a tail step (the first one carries <eos>)
        rows.tail += tailing
        rows.audio_step += frame
        stop = (eos & ~tailing) | (tailing & (rows.tail >= rules.n_tail))
        stop |= rows.audio_step >= rules.audio_step_limit
    rows.lengths = torch.where(rows.done, rows.lengths, i + 1)
    rows.done |= stop
    rows.in_audio = (tok == rules.audio_id) | (rows.in_audio & (tok != rules.text_id))


def _commit(run: _Decoding, rows: _Rows, step: _Step, i: int) -> None:
    """Advance rows past step i and write it at slot S + i of the B rows and their unconditional twins
    (over whatever a draft wrote there)."""
    _advance(rows, step, run.rules, i)
    pad, empty = run.rules.pad_id, run.rules.empty_code
    if step.frame is None:  # a text step
        values = [(run.text, step.tok), (run.is_audio, False), (run.audio, empty)]
    else:
        values = [(run.text, torch.where(step.frame, pad, step.tok)), (run.is_audio, step.frame)]
        values += [(run.audio, torch.where(step.frame[:, None], step.codes, empty))]
    for buf, x in values:
        buf.view(buf.shape[0] // run.B, run.B, *buf.shape[1:])[:, :, run.S + i] = x


def _step(run: _Decoding, rows: _Rows, logits: Logits, i: int) -> _Step:
    """Choose step i from guided logits, advance rows past it and write it."""
    step = _choose(run, rows, logits, i)
    _commit(run, rows, step, i)
    return step


def _sequences(prompts: list[Prompt], new: int, vocab: Vocab, device: torch.device) -> list[torch.Tensor]:
    """Left-padded prompts followed by room for `new` steps: text, audio, is_audio, valid, each (R, S + new, ...)."""
    fills = (vocab.pad, vocab.empty_code, False, True)
    return [
        torch.cat([x, x.new_full((x.shape[0], new, *x.shape[2:]), fill)], 1).to(device)
        for x, fill in zip(collate(prompts, vocab), fills, strict=True)
    ]


def _audio_step_limit(
    max_new_tokens: int, max_seconds: float | None, frame_rate: float | None, pattern: str, K: int
) -> int:
    """Audio steps a row may write: all new tokens, or the steps holding `max_seconds` of whole frames."""
    if max_seconds is None:
        return max_new_tokens
    if frame_rate is None:
        raise ValueError("max_seconds needs frame_rate (the codec's frames per second)")
    return min(max_new_tokens, patterns.get(pattern).num_steps(int(max_seconds * frame_rate), K))


def _setup(
    model: AudioLanguageModel,
    prompts: list[Prompt],
    uncond: list[Prompt] | None,
    *,
    template: Template,
    sampling: Sampling,
    max_new_tokens: int,
    min_new_tokens: int,
    max_seconds: float | None,
    frame_rate: float | None,
    pattern: str,
    guidance_scale: float,
    generator: torch.Generator | None,
) -> tuple[_Decoding, _Rows]:
    """The buffers (prompts and uncond twins, room for `max_new_tokens` steps), rules and rows of a call."""
    vocab, K = model.config.vocab, model.config.vocab.num_codebooks
    device, both = next(model.parameters()).device, prompts + (uncond or [])
    buffers = _sequences(both, max_new_tokens, vocab, device)
    max_audio = _audio_step_limit(max_new_tokens, max_seconds, frame_rate, pattern, K)
    run = _Decoding(
        *buffers,
        B=len(prompts),
        S=max(len(p.text) for p in both),
        rules=_rules(vocab, template, K, pattern, max_audio, device),
        sampling=sampling,
        generator=generator,
        guidance_scale=guidance_scale,
        min_new_tokens=min_new_tokens,
        pattern=pattern,
        vocab=vocab,
    )
    return run, _Rows.start(len(prompts), template, device)


def _result(run: _Decoding, rows: _Rows, n: int, logits: list[Logits]) -> Generation:
    """The B conditional rows' first n steps; rows still running end at step n."""
    rows.lengths = torch.where(rows.done, rows.lengths, n)
    N = int(rows.lengths.max())
    out = (x[: run.B, run.S : run.S + N] for x in (run.text, run.audio, run.is_audio))
    return Generation(*out, lengths=rows.lengths, pattern=run.pattern, vocab=run.vocab, logits=logits)


@dataclass(frozen=True)
class _Feed:
    """How a written slot goes into the model: one position over the KV cache (compiled: with static
    shapes), or without a cache the whole sequence again (the reference for tests)."""

    model: AudioLanguageModel
    step_fn: Callable[..., Logits]  # `decode_step`, or it wrapped in `torch.compile`
    cache: KVCache | None
    rotary: Rotary  # (R, 1, L, head_dim) RoPE factors of every slot
    attend: torch.Tensor | None  # (R, 1, 1, L) additive: every real slot; None without padding
    slots: torch.Tensor  # (L,) int64
    static: bool  # compiled: static shapes, every slot a key and the unfilled ones masked

    @classmethod
    def over(cls, model: AudioLanguageModel, run: _Decoding, use_cache: bool, compile: bool) -> _Feed:
        """Per-step work done once: RoPE factors of every slot, and what a new position may attend to: every
        real slot up to itself (slicing the keys to the filled slots makes it causal)."""
        (R, L), param = run.text.shape, next(model.parameters())
        valid, dtype = run.valid, param.dtype
        cache = KVCache(model.config, R, L, dtype, param.device) if use_cache else None
        step_fn = torch.compile(decode_step) if compile and use_cache else decode_step
        attend = None if bool(valid.all()) else additive(valid[:, None, None], dtype)  # (R, 1, 1, L)
        rotary = rope(positions(valid), model.config, dtype)
        slots = torch.arange(L, device=param.device)
        return cls(model, step_fn, cache, rotary, attend, slots, static=compile and use_cache)

    def __call__(self, run: _Decoding, j: int, frame: bool, audio_heads: bool) -> Logits:
        """Logits (R, ...) after slot j, which holds a frame of some row if `frame`."""
        if self.cache is None:  # the whole sequence again
            lo, mask = 0, attention_mask(run.valid[:, : j + 1], self.slots[: j + 1])
        elif self.static:
            lo, mask = j, attention_mask(run.valid, self.slots[j : j + 1])
        else:
            lo, mask = j, None if self.attend is None else self.attend[..., : j + 1]
        frames_in = frame or self.cache is None  # else the audio embedding is skipped
        text, audio, is_audio = (x[:, lo : j + 1] for x in (run.text, run.audio, run.is_audio))
        audio = audio if frames_in else None
        rotary = self.rotary.at(lo, j + 1)
        return self.step_fn(self.model, text, audio, is_audio, rotary, lo, mask, self.cache, audio_heads)


def _decode(
    feed: _Feed, run: _Decoding, rows: _Rows, logits: Logits, max_new_tokens: int, return_logits: bool
) -> tuple[int, list[Logits]]:
    """Steps from the prefill's logits until every row is done or `max_new_tokens` are written. Returns the
    steps taken and, if asked, each step's guided logits."""
    saved: list[Logits] = []
    for i in range(max_new_tokens):
        mixed = _guide(logits, run.B, run.guidance_scale)
        saved += [mixed] if return_logits else []
        frame = _step(run, rows, mixed, i).frame
        if bool(rows.done.all()) or i == max_new_tokens - 1:
            break
        # The K audio heads (as large as the text head) run only while some row is in an audio segment.
        logits = feed(run, run.S + i, frame is not None, bool(rows.in_audio.any()))
    return i + 1, saved


@torch.inference_mode()
def generate(
    model: AudioLanguageModel,
    prompts: list[Prompt],
    *,
    template: Template = Template(),
    sampling: Sampling = Sampling(),
    max_new_tokens: int = 256,
    min_new_tokens: int = 0,
    max_seconds: float | None = None,
    frame_rate: float | None = None,
    pattern: str = "delay",
    uncond: list[Prompt] | None = None,
    guidance_scale: float = 3.0,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    compile: bool = False,
    return_logits: bool = False,
) -> Generation:
    """Continue each prompt by up to `max_new_tokens` steps (audio: at most `max_seconds` at `frame_rate`);
    `<eos>` may end a row only after `min_new_tokens` steps (music: set it to the wanted length).

    `uncond` (one prompt per row, e.g. the prompt without its caption) turns on classifier-free guidance:
    both run in one batch and logits mix as uncond + guidance_scale * (cond - uncond). `use_cache=False`
    recomputes the whole sequence at every step (the reference for tests); `compile` wraps `decode_step` in
    `torch.compile` (for GPUs). Draws come from `generator`, so a seed reproduces a run.
    """
    B = len(prompts)
    if uncond is not None and len(uncond) != B:
        raise ValueError(f"uncond has {len(uncond)} prompts for {B} prompts: give one per prompt")
    if max_new_tokens < 1 or template.start not in ("text", "audio"):
        raise ValueError(
            f"need max_new_tokens >= 1 and template.start text|audio, got {max_new_tokens}, {template}"
        )
    run, rows = _setup(
        model, prompts, uncond, template=template, sampling=sampling, max_new_tokens=max_new_tokens,
        min_new_tokens=min_new_tokens, max_seconds=max_seconds, frame_rate=frame_rate, pattern=pattern,
        guidance_scale=guidance_scale, generator=generator,
    )  # fmt: skip
    feed = _Feed.over(model, run, use_cache, compile)
    logits = prefill(model, *run.prompt(), feed.cache, bool(rows.in_audio.any()))
    n, saved = _decode(feed, run, rows, logits, max_new_tokens, return_logits)
    return _result(run, rows, n, saved)
