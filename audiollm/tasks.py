"""Task templates: how one record becomes a sequence of positions, its next-position targets and loss masks.

    asr       <bos> <asr> <audio> AUDIO <text> ids <eos>                   loss: ids, <eos>
    tts       <bos> <tts> <text> ids [<prompt> PROMPT] <audio> AUDIO <eos>  loss: AUDIO codes, stop decisions
    music     <bos> <music> <text> caption <audio> AUDIO <eos>             loss: AUDIO (caption dropped with p)
    sfx       <bos> <sfx> <text> caption <audio> AUDIO <eos>               loss: AUDIO (caption dropped with p)
    continue  <bos> <continue> <audio> AUDIO <eos>                         loss: AUDIO

AUDIO is a clip's codes laid out in steps by a codebook pattern (`audiollm.patterns`). The contract with
`audiollm.generate`: the text head at position p predicts p+1's token, or `<audio>` when p+1 is an audio
step; the K audio heads at p predict p+1's codes (empty codes are never trained). A prompt for inference
is the same template cut where generation starts, so training and inference share one definition.

`TABLE` holds one `Task` per name: the record field it reads, what it writes, its training sequence, its
inference prompt, and the positions its template adds to the record's audio (batch planning). Data, eval,
the API and the server ask the table instead of branching on task names.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from audiollm import patterns
from audiollm.vocab import Vocab


@dataclass
class TemplateOptions:
    """Values the task templates need beyond the record."""

    max_len: int = 1024  # positions per example; longer audio is cropped (asr records are skipped)
    pattern: str = "delay"  # codebook pattern
    caption_dropout: float = 0.1  # probability of an empty caption (music/sfx), for classifier-free guidance
    prompt_prob: float = 0.5  # probability that a tts example carries a voice prompt (if the speaker has one)
    prompt_seconds: float = 3.0  # longest voice prompt


@dataclass
class Prompt:
    """One prompt, position by position: text ids (S,), audio codes (S, K) and an is-audio flag (S,)."""

    text: torch.Tensor  # (S,) int64 text/special ids (ignored at audio positions)
    audio: torch.Tensor  # (S, K) int64 local codes in [0, audio_card) (ignored at text positions)
    is_audio: torch.Tensor  # (S,) bool

    @classmethod
    def from_text(cls, ids: list[int] | torch.Tensor, vocab: Vocab) -> Prompt:
        """A text-only prompt; audio slots hold the empty code."""
        text = torch.as_tensor(ids, dtype=torch.long)
        audio = torch.full((len(text), vocab.num_codebooks), vocab.empty_code, dtype=torch.long)
        return cls(text, audio, torch.zeros(len(text), dtype=torch.bool))


@dataclass(frozen=True)
class Template:
    """Which modality each generated step has."""

    start: str = "text"  # modality of the first generated position: "text" or "audio"
    switch: bool = False  # allow <audio> (text -> audio) and <text> (audio -> text) mid-generation
    first_audio_step: int = 0  # pattern step of the first generated audio position (continuation of a prompt)


@dataclass
class Example:
    """One training sequence of S positions and what each position must predict about the next."""

    task: str
    text: torch.Tensor  # (S,) int64 text/special ids (<pad> at audio steps)
    audio: torch.Tensor  # (S, K) int64 local codes (empty code at text positions)
    is_audio: torch.Tensor  # (S,) bool
    text_target: torch.Tensor  # (S,) int64 next text id, or <audio> where the next position is an audio step
    audio_target: torch.Tensor  # (S, K) int64 next position's codes
    text_mask: torch.Tensor  # (S,) bool: train the text head here
    audio_mask: torch.Tensor  # (S, K) bool: train audio head k here

    def __len__(self) -> int:
        return len(self.text)


class Sequence:
    """Builds one sequence segment by segment; `learn=True` marks positions whose prediction is trained."""

    def __init__(self, vocab: Vocab, pattern: str):
        self.vocab, self.pattern = vocab, pattern
        self.parts: list[
            tuple[torch.Tensor, ...]
        ] = []  # (text (n,), audio (n, K), is_audio (n,), learn (n,))
        self.stop: int | None = None  # the position trained to predict `<eos>` (the end of generated audio)

    def __len__(self) -> int:
        return sum(len(part[0]) for part in self.parts)

    def tokens(self, ids: list[int], learn: bool = False) -> Sequence:
        n, K = len(ids), self.vocab.num_codebooks
        audio = torch.full((n, K), self.vocab.empty_code, dtype=torch.long)
        return self._add(torch.tensor(ids, dtype=torch.long), audio, False, learn)

    def audio(self, codes: torch.Tensor, learn: bool = False, steps: int | None = None) -> Sequence:
        """codes: (K, T) int64 in [0, codebook_size) -> pattern steps (S, K), the first `steps` of them if given."""
        grid = patterns.build(codes[None], self.pattern, self.vocab.empty_code)[0].T[:steps]  # (S, K)
        text = torch.full((grid.shape[0],), self.vocab.pad, dtype=torch.long)
        return self._add(text, grid.contiguous(), True, learn)

    def ending_audio(self, codes: torch.Tensor) -> Sequence:
        """Generated audio codes (K, T), trained, then `<eos>`. The end is decided where codebook 0 would
        begin frame T (`patterns.next_frame_step`), the step generation can see; the pattern's tail (delay:
        the last frames' upper codebooks) follows that decision, so `<eos>` after it is not trained again."""
        start = len(self)
        self.audio(codes, learn=True)
        K, T = codes.shape
        self.stop = start + patterns.next_frame_step(T, K, self.pattern) - 1
        return self.tokens([self.vocab.eos], learn=len(patterns.tail(K, self.pattern)) == 0)

    def _add(self, text: torch.Tensor, audio: torch.Tensor, is_audio: bool, learn: bool) -> Sequence:
        n = len(text)
        self.parts.append((text, audio, torch.full((n,), is_audio), torch.full((n,), learn)))
        return self

    def positions(self) -> tuple[torch.Tensor, ...]:
        """text (S,), audio (S, K), is_audio (S,), learn (S,) bool."""
        return tuple(torch.cat(x) for x in zip(*self.parts, strict=True))

    def example(self, task: str) -> Example:
        """Shift by one: position p is trained to predict p+1 wherever p+1 is marked `learn`."""
        text, audio, is_audio, learn = self.positions()
        empty = self.vocab.empty_code
        next_text = torch.where(is_audio, self.vocab.audio, text)[1:]  # (S-1,)
        text_target = torch.cat([next_text, next_text.new_tensor([self.vocab.pad])])
        nxt = torch.cat([learn[1:], learn.new_zeros(1)])  # (S,) the next position is trained
        if self.stop is not None:
            text_target[self.stop], nxt[self.stop] = self.vocab.eos, True
        audio_target = torch.cat([audio[1:], audio.new_full((1, audio.shape[1]), empty)])
        next_is_audio = torch.cat([is_audio[1:], is_audio.new_zeros(1)])
        audio_mask = (nxt & next_is_audio)[:, None] & (audio_target != empty)
        return Example(task, text, audio, is_audio, text_target, audio_target, nxt, audio_mask)

    def prompt(self) -> Prompt:
        text, audio, is_audio, _ = self.positions()
        return Prompt(text, audio, is_audio)


def _start(vocab: Vocab, pattern: str, task: str) -> Sequence:
    return Sequence(vocab, pattern).tokens([vocab.bos, vocab.task(task)])


def asr(vocab: Vocab, pattern: str, codes: torch.Tensor, ids: list[int] | None) -> Sequence:
    """Speech codes (K, T) -> transcript ids; `ids=None` builds the inference prompt (ends at <text>)."""
    seq = _start(vocab, pattern, "asr").tokens([vocab.audio]).audio(codes).tokens([vocab.text])
    return seq if ids is None else seq.tokens([*ids, vocab.eos], learn=True)


def tts(
    vocab: Vocab, pattern: str, ids: list[int], codes: torch.Tensor | None, prompt: torch.Tensor | None = None
) -> Sequence:
    """Text ids -> speech codes (K, T), optionally in the voice of `prompt` codes (K, Tp)."""
    seq = _start(vocab, pattern, "tts").tokens([vocab.text, *ids])
    if prompt is not None:
        seq.tokens([vocab.prompt]).audio(prompt)
    return _audio_output(seq, vocab, codes)


def captioned(
    vocab: Vocab, pattern: str, task: str, caption: list[int], codes: torch.Tensor | None
) -> Sequence:
    """Music or sound from a caption (an empty caption is the unconditional prompt for CFG)."""
    seq = _start(vocab, pattern, task).tokens([vocab.text, *caption])
    return _audio_output(seq, vocab, codes)


def continuation(vocab: Vocab, pattern: str, codes: torch.Tensor) -> Sequence:
    """A whole clip's codes (K, T), all trained; for inference use `continuation_prompt`."""
    return _start(vocab, pattern, "continue").tokens([vocab.audio]).ending_audio(codes)


def continuation_prompt(vocab: Vocab, pattern: str, codes: torch.Tensor) -> tuple[Prompt, Template]:
    """Prefix codes (K, T) as a prompt cut at the step where frame T would begin; generation resumes the
    pattern there (for delay, the upper codebooks of the last K-1 prefix frames are generated anew)."""
    return TABLE["continue"].prompt(vocab, pattern, [], codes)


def _audio_output(seq: Sequence, vocab: Vocab, codes: torch.Tensor | None) -> Sequence:
    seq.tokens([vocab.audio])
    return seq if codes is None else seq.ending_audio(codes)


def max_frames(budget: int, K: int, pattern: str) -> int:
    """Most frames T whose pattern steps fit in `budget` positions (binary search; steps grow with T)."""
    p, lo, hi = patterns.get(pattern), 0, max(budget, 0)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if p.num_steps(mid, K) <= budget else (lo, mid - 1)
    return lo


def crop(codes: torch.Tensor, frames: int, rng: np.random.Generator) -> torch.Tensor:
    """A random window of `frames` frames of codes (K, T) (the whole clip when it is shorter)."""
    T = codes.shape[-1]
    if T <= frames:
        return codes
    start = int(rng.integers(T - frames + 1))
    return codes[:, start : start + frames]


def audio_steps(pattern: str, K: int, frames: int, prefix_frames: int = 0) -> int:
    """Pattern steps that generate `frames` whole frames after a prompt cut where frame `prefix_frames`
    begins (`continuation_prompt`; 0 for a fresh clip)."""
    return patterns.get(pattern).num_steps(prefix_frames + frames, K) - patterns.next_frame_step(
        prefix_frames, K, pattern
    )


# ---- the task table ------------------------------------------------------------------------------------
# A layout turns a record into a sequence: (vocab, pattern, ids of the field the task reads, codes (K, T) of
# the record's audio, voice prompt codes (K, Tp) or None) -> Sequence. `train` lays out the whole record;
# `infer` the prompt generation continues (codes: the audio the task reads, or None when it writes them).
Layout = Callable[[Vocab, str, list[int], torch.Tensor | None, torch.Tensor | None], Sequence]


@dataclass(frozen=True)
class Task:
    """One task: what a record must carry, what is trained, and how its sequences are laid out."""

    name: str
    reads: str | None  # the record field the template holds as text ids ("text", "caption") or None
    writes: str  # "text": the transcript is trained, the audio is input (never cropped); "audio": the clip is
    captioned: bool  # its text is a caption, dropped with `TemplateOptions.caption_dropout` (for CFG)
    voice: bool  # a training example may carry a voice prompt from the same speaker
    train: Layout
    infer: Layout

    def prompt(
        self, vocab: Vocab, pattern: str, ids: list[int], codes: torch.Tensor | None = None,
        voice: torch.Tensor | None = None,
    ) -> tuple[Prompt, Template]:  # fmt: skip
        """The inference prompt and the template of what generation writes first."""
        seq = self.infer(vocab, pattern, ids, codes, voice)
        if self.writes == "text":
            return seq.prompt(), Template(start="text")
        first = (
            0 if codes is None else patterns.next_frame_step(codes.shape[-1], vocab.num_codebooks, pattern)
        )
        return seq.prompt(), Template(start="audio", first_audio_step=first)

    def steps(self, pattern: str, K: int, frames: int, codes: torch.Tensor | None = None) -> int:
        """Audio steps generation needs for `frames` new whole frames after this task's prompt."""
        return audio_steps(pattern, K, frames, 0 if codes is None else codes.shape[-1])

    def fixed(self, vocab: Vocab, pattern: str, n_ids: int, voice_frames: int = 0) -> int:
        """Positions of a training sequence besides its record's audio steps: the sequence is that plus
        `num_steps(T)` for T frames of audio (with `n_ids` text ids and a voice prompt of `voice_frames`)."""
        return _fixed(self.name, vocab, pattern, n_ids, voice_frames)


@functools.lru_cache(maxsize=4096)
def _fixed(task: str, vocab: Vocab, pattern: str, n_ids: int, voice_frames: int) -> int:
    """`Task.fixed`, measured on the task's own layout of a one-frame clip (so it cannot drift from it)."""
    K = vocab.num_codebooks
    voice = torch.zeros(K, voice_frames, dtype=torch.long) if voice_frames else None
    seq = TABLE[task].train(vocab, pattern, [vocab.pad] * n_ids, torch.zeros(K, 1, dtype=torch.long), voice)
    return len(seq) - patterns.get(pattern).num_steps(1, K)


def _continuation_infer(vocab: Vocab, pattern: str, ids: list[int], codes, voice) -> Sequence:
    K, T = codes.shape
    return (
        _start(vocab, pattern, "continue")
        .tokens([vocab.audio])
        .audio(codes, steps=patterns.next_frame_step(T, K, pattern))
    )


def _captioned_task(name: str) -> Task:
    def train(vocab: Vocab, pattern: str, ids: list[int], codes, voice) -> Sequence:
        return captioned(vocab, pattern, name, ids, codes)

    def infer(vocab: Vocab, pattern: str, ids: list[int], codes, voice) -> Sequence:
        return captioned(vocab, pattern, name, ids, None)

    return Task(name, "caption", "audio", captioned=True, voice=False, train=train, infer=infer)


TABLE: dict[str, Task] = {
    "asr": Task(
        "asr", "text", "text", captioned=False, voice=False,
        train=lambda v, p, ids, codes, voice: asr(v, p, codes, ids),
        infer=lambda v, p, ids, codes, voice: asr(v, p, codes, None),
    ),
    "tts": Task(
        "tts", "text", "audio", captioned=False, voice=True,
        train=lambda v, p, ids, codes, voice: tts(v, p, ids, codes, voice),
        infer=lambda v, p, ids, codes, voice: tts(v, p, ids, None, voice),
    ),
    "music": _captioned_task("music"),
    "sfx": _captioned_task("sfx"),
    "continue": Task(
        "continue", None, "audio", captioned=False, voice=False,
        train=lambda v, p, ids, codes, voice: continuation(v, p, codes), infer=_continuation_infer,
    ),
}  # fmt: skip
TASKS = tuple(TABLE)  # the order of the `task` index in batches
TEXT_FIELDS = tuple(sorted({t.reads for t in TABLE.values() if t.reads}))  # record fields tokenised


def get(name: str) -> Task:
    """The task called `name`; an unknown name is an error that lists the known ones."""
    if name not in TABLE:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(TABLE)}")
    return TABLE[name]
