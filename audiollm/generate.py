"""Generation: prefill, one `decode_step` at a time over a static KV cache, sampling, classifier-free guidance.

Contract with training (the templates in tasks.py): the text head at position p predicts position p+1's
text token, or `<audio>` when position p+1 is an audio frame; the K audio heads at p predict the codes of
p+1. So at an audio step the text head decides between another frame (`<audio>`), the end (`<eos>`) and,
if the template allows, a return to text (`<text>`); in text mode, writing `<audio>` (the segment marker)
switches a row to audio. Audio steps follow a codebook pattern (`audiollm.patterns`): codebooks with no
code at a step get the empty code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from audiollm import patterns
from audiollm.model import AudioLanguageModel, KVCache, additive, attention_mask, rope
from audiollm.tasks import Prompt, Template
from audiollm.vocab import Vocab


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
    logits: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)  # per step, if asked

    def row_text(self, b: int) -> list[int]:
        """Text ids row b wrote, without `<eos>`."""
        n = int(self.lengths[b])
        ids = self.text[b, :n][~self.is_audio[b, :n]].tolist()
        return [i for i in ids if i != self.vocab.eos]

    def row_audio(self, b: int) -> torch.Tensor:
        """(K, T) int64 codes of row b's audio steps, reverted by the pattern to complete frames."""
        n = int(self.lengths[b])
        steps = self.audio[b, :n][self.is_audio[b, :n]].T  # (K, S)
        return patterns.revert(steps[None], self.pattern)[0]


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


def decode_step(model, text, audio, is_audio, rotary, start, mask, cache: KVCache | None, audio_heads=True):
    """Run positions text (B, S), audio (B, S, K) or None (no audio frame among them), is_audio (B, S),
    with RoPE factors `rotary` (`audiollm.model.rope` of their positions) into cache slots [start, start + S),
    attending as mask (B, 1, S, L) allows. Returns the last position's logits: text (B, text_vocab_size), audio
    (B, K, audio_card), or None for audio when `audio_heads` is False (no row is in an audio segment: the
    K audio heads, as large as the text head, are skipped)."""
    h = model.trunk(model.embed(text, audio, is_audio), rotary=rotary, mask=mask, cache=cache, start=start)
    text_logits, audio_logits = model.heads(h[:, -1:], audio=audio_heads)
    return text_logits[:, 0], None if audio_logits is None else audio_logits[:, 0]


def positions(valid: torch.Tensor) -> torch.Tensor:
    """RoPE positions (B, L) int64 of left-padded rows valid (B, L) bool: real tokens are counted from 0."""
    return (valid.long().cumsum(1) - 1).clamp(min=0)


def prefill(model, text, audio, is_audio, valid, cache: KVCache | None, audio_heads: bool = True):
    """Run a left-padded prompt batch (see `collate`; valid (B, S) is False at padding) into cache slots
    0..S-1. Returns the last position's logits, as `decode_step`."""
    rotary = rope(positions(valid), model.config, next(model.parameters()).dtype)
    slots = torch.arange(text.shape[1], device=text.device)
    mask = None if bool(valid.all()) else attention_mask(valid, slots)  # (B, 1, S, S) only with padding
    return decode_step(model, text, audio, is_audio, rotary, 0, mask, cache, audio_heads)


@dataclass
class _Rows:
    """Per-row decoding state of the B conditional rows."""

    in_audio: torch.Tensor  # (B,) bool: the next step is an audio step
    audio_step: torch.Tensor  # (B,) int64: pattern step of the next audio position
    done: torch.Tensor  # (B,) bool
    lengths: torch.Tensor  # (B,) int64 steps written
    tail: torch.Tensor  # (B,) int64: steps of the pattern's tail written since the row chose to end


def _guide(
    logits: tuple[torch.Tensor, torch.Tensor], B: int, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Classifier-free guidance: rows [0, B) are conditional, [B, 2B) unconditional; mix them."""
    if logits[0].shape[0] == B:
        return logits
    return tuple(_mix(x, B, scale) for x in logits)


def _mix(x: torch.Tensor | None, B: int, scale: float) -> torch.Tensor | None:
    """Rows [0, B) conditional, [B, 2B) unconditional -> uncond + scale * (cond - uncond); None stays None."""
    if x is None:
        return None
    cond, uncond = x.split(B)
    return uncond + scale * (cond - uncond)


def _choose(
    text_logits, audio_logits, rows: _Rows, rules: dict[str, torch.Tensor], sampling, generator, eos_ok
):
    """Pick each row's next step: text id (B,) (`<pad>` for finished rows), codes (B, K) and whether the step
    is an audio frame (B,) bool; codes and frame are None when the audio heads were skipped (no frame)."""
    bias = rules["text_mode"]  # (V,) 0 or -inf
    if audio_logits is not None:  # some row is in audio mode: (B, V)
        bias = torch.where(rows.in_audio[:, None], rules["audio_mode"], bias)
    tok = sample(text_logits + (bias if eos_ok else bias + rules["no_eos"]), sampling, generator)  # (B,)
    tok = torch.where(rows.done, rules["pad"], tok)
    if audio_logits is None:
        return tok, None, None
    B, K, C = audio_logits.shape
    real = audio_logits + rules["real_code"]  # a sampled code is always a real code, never the empty one
    codes = sample(real.view(B * K, C), sampling, generator).view(B, K)  # (B, K)
    # After `<eos>` at an audio step the pattern's tail follows (delay: the last frames' upper codebooks);
    # a tail step is a frame whose codebooks the tail table gives, not a choice of the text head.
    in_tail = (rows.tail > 0) & ~rows.done
    tok = torch.where(in_tail, rules["audio_id"], tok)
    starts = rows.in_audio & (tok == rules["eos_id"]) & (rules["n_tail"] > 0)
    active = torch.where(
        (starts | in_tail)[:, None], rules["tail"][rows.tail], rules["active"][rows.audio_step]
    )  # (B, K) codebooks with a code at this step
    frame = rows.in_audio & ((tok == rules["audio_id"]) | starts)
    return tok, torch.where(active, codes, rules["empty"]), frame


def _advance(rows: _Rows, tok, frame, rules: dict[str, torch.Tensor], step: int) -> None:
    """Update modality, pattern step and stop flags after step `step` wrote tok (B,) / frame (B,) or None."""
    eos = tok == rules["eos_id"]
    stop = eos
    if frame is not None:
        tailing = frame & (eos | (rows.tail > 0))  # rows writing a tail step (the first one carries <eos>)
        rows.tail += tailing
        rows.audio_step += frame
        stop = (eos & ~tailing) | (tailing & (rows.tail >= rules["n_tail"]))
        stop |= rows.audio_step >= rules["max_audio_steps"]
    rows.lengths = torch.where(rows.done, rows.lengths, step + 1)
    rows.done |= stop
    rows.in_audio = (tok == rules["audio_id"]) | (rows.in_audio & (tok != rules["text_id"]))


def _rules(vocab: Vocab, template: Template, K: int, pattern: str, max_audio_steps: int, device) -> dict:
    """Constant tensors for `_choose` / `_advance`: what each mode may write (additive logit masks: 0 or
    -inf), pattern slots, special ids."""
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
    tail = patterns.tail(K, pattern)  # (n_tail, K), and a last row for rows past it (never read)
    tail = torch.cat([tail, tail.new_zeros(1, K)])
    ids = {"pad": vocab.pad, "eos_id": vocab.eos, "audio_id": vocab.audio, "text_id": vocab.text}
    ids |= {"empty": vocab.empty_code, "max_audio_steps": max_audio_steps + template.first_audio_step}
    ids |= {"n_tail": len(tail) - 1}
    tensors = dict(
        text_mode=text_mode,
        audio_mode=audio_mode,
        no_eos=no_eos,
        real_code=real_code,
        active=active,
        tail=tail,
    )
    return {k: torch.as_tensor(v).to(device) for k, v in (ids | tensors).items()}


def _sequences(prompts: list[Prompt], new: int, vocab: Vocab, device) -> list[torch.Tensor]:
    """Left-padded prompts followed by room for `new` steps: text, audio, is_audio, valid, each (R, S + new, ...)."""
    fills = (vocab.pad, vocab.empty_code, False, True)
    return [
        torch.cat([x, x.new_full((x.shape[0], new, *x.shape[2:]), fill)], 1).to(device)
        for x, fill in zip(collate(prompts, vocab), fills, strict=True)
    ]


def _audio_step_limit(max_new_tokens: int, max_seconds, frame_rate, pattern: str, K: int) -> int:
    """Audio steps a row may write: all new tokens, or the steps holding `max_seconds` of whole frames."""
    if max_seconds is None:
        return max_new_tokens
    if frame_rate is None:
        raise ValueError("max_seconds needs frame_rate (the codec's frames per second)")
    return min(max_new_tokens, patterns.get(pattern).num_steps(int(max_seconds * frame_rate), K))


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
    vocab, B, K = model.config.vocab, len(prompts), model.config.vocab.num_codebooks
    if uncond is not None and len(uncond) != B:
        raise ValueError(f"uncond has {len(uncond)} prompts for {B} prompts: give one per prompt")
    if max_new_tokens < 1 or template.start not in ("text", "audio"):
        raise ValueError(
            f"need max_new_tokens >= 1 and template.start text|audio, got {max_new_tokens}, {template}"
        )
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    S = max(len(p.text) for p in prompts + (uncond or []))
    text, audio, is_audio, valid = _sequences(prompts + (uncond or []), max_new_tokens, vocab, device)
    R, L = text.shape
    max_audio = _audio_step_limit(max_new_tokens, max_seconds, frame_rate, pattern, K)
    rules = _rules(vocab, template, K, pattern, max_audio, device)
    rows = _Rows(
        in_audio=torch.full((B,), template.start == "audio", device=device),
        audio_step=torch.full((B,), template.first_audio_step, device=device),
        done=torch.zeros(B, dtype=torch.bool, device=device),
        lengths=torch.zeros(B, dtype=torch.long, device=device),
        tail=torch.zeros(B, dtype=torch.long, device=device),
    )
    cache = KVCache(model.config, R, L, dtype, device) if use_cache else None
    step_fn = torch.compile(decode_step) if compile else decode_step
    slots = torch.arange(L, device=device)
    # Per-step work done once: RoPE factors of every slot, and what a new position may attend to: every real
    # slot up to itself (slicing the keys to the filled slots makes it causal); no mask without padding.
    rotary = rope(positions(valid), model.config, dtype)  # (R, 1, L, head_dim)
    attend = None if bool(valid.all()) else additive(valid[:, None, None], dtype)  # (R, 1, 1, L)
    # The K audio heads (as large as the text head) run only while some row is in an audio segment.
    logits = prefill(
        model, text[:, :S], audio[:, :S], is_audio[:, :S], valid[:, :S], cache, bool(rows.in_audio.any())
    )
    saved = []
    for i in range(max_new_tokens):
        mixed = _guide(logits, B, guidance_scale)
        saved += [mixed] if return_logits else []
        tok, codes, frame = _choose(*mixed, rows, rules, sampling, generator, eos_ok=i >= min_new_tokens)
        _advance(rows, tok, frame, rules, i)
        j = S + i  # the slot this step writes
        step = [(text, tok)]  # without a frame, audio and is_audio keep their fill (empty code, False)
        if frame is not None:
            step = [(text, torch.where(frame, vocab.pad, tok)), (is_audio, frame)]
            step += [(audio, torch.where(frame[:, None], codes, vocab.empty_code))]
        for buf, x in step:
            buf.view(R // B, B, *buf.shape[1:])[:, :, j] = x  # the B rows and, with CFG, their B uncond twins
        if bool(rows.done.all()) or i == max_new_tokens - 1:
            break
        if not use_cache:  # the whole sequence again: the reference for tests
            lo, mask = 0, attention_mask(valid[:, : j + 1], slots[: j + 1])
        elif compile:  # static shapes: every slot is a key, the unfilled ones masked
            lo, mask = j, attention_mask(valid, slots[j : j + 1])
        else:
            lo, mask = j, None if attend is None else attend[..., : j + 1]
        frames_in = frame is not None or not use_cache  # else the audio embedding is skipped
        inputs = text[:, lo : j + 1], audio[:, lo : j + 1] if frames_in else None, is_audio[:, lo : j + 1]
        fn = step_fn if use_cache else decode_step
        logits = fn(model, *inputs, rotary.at(lo, j + 1), lo, mask, cache, bool(rows.in_audio.any()))
    rows.lengths = torch.where(rows.done, rows.lengths, i + 1)
    n = int(rows.lengths.max())
    out = (text[:B, S : S + n], audio[:B, S : S + n], is_audio[:B, S : S + n])
    return Generation(*out, lengths=rows.lengths, pattern=pattern, vocab=vocab, logits=saved)
