"""The one token space shared by text and audio: text ids, special tokens, per-codebook audio codes.

Layout (ids grow left to right)::

    | text ids [0, text_size) | <bos> <eos> <pad> <text> <audio> <prompt> <task>... | audio codebook 0 | ... | K-1 |
    '------------------ text_vocab_size (text embedding / text head) ----------------'
                                                      each audio block holds audio_card = codebook_size + 1 ids:
                                                      codes [0, codebook_size) and the empty code (no code yet)

The text embedding and text head cover text ids and specials; each audio codebook has its own table of
`audio_card` rows indexed by the local code (the empty code is `codebook_size`). Global audio ids
(`audio_id(k, code)`) exist so that a whole sequence can be written with one integer per code, e.g. in logs.
Nothing else in audiollm computes these offsets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

BASE_SPECIALS = ("bos", "eos", "pad", "text", "audio", "prompt")
DEFAULT_TASKS = ("asr", "tts", "music", "sfx", "continue")


@dataclass(frozen=True)
class Vocab:
    """Layout of text ids, special tokens and K audio codebooks of `codebook_size` codes each."""

    text_size: int  # number of text ids from the text tokenizer
    num_codebooks: int  # K, codebooks per audio frame
    codebook_size: int  # codes per codebook (the codec's cardinality)
    task_names: tuple[str, ...] = DEFAULT_TASKS  # one special token per task, `<name>`

    def __post_init__(self) -> None:
        for name in ("text_size", "num_codebooks", "codebook_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"Vocab.{name} must be a positive int, got {value!r}")
        object.__setattr__(self, "task_names", tuple(self.task_names))
        names = self.special_names
        if len(set(names)) != len(names):
            raise ValueError(
                f"Vocab.task_names {self.task_names} repeat a name or clash with {BASE_SPECIALS}"
            )

    @property
    def special_names(self) -> tuple[str, ...]:
        """Names of all special tokens in id order (without angle brackets)."""
        return BASE_SPECIALS + self.task_names

    def special(self, name: str) -> int:
        """Id of special token `<name>`."""
        try:
            return self.text_size + self.special_names.index(name)
        except ValueError:
            raise KeyError(f"no special token <{name}>; known: {', '.join(self.special_names)}") from None

    def task(self, name: str) -> int:
        """Id of the task token `<name>` (one of `task_names`)."""
        if name not in self.task_names:
            raise KeyError(f"unknown task {name!r}; this vocabulary has tasks {self.task_names}")
        return self.special(name)

    bos = property(lambda self: self.special("bos"), doc="id of <bos>")
    eos = property(lambda self: self.special("eos"), doc="id of <eos>")
    pad = property(lambda self: self.special("pad"), doc="id of <pad>")
    text = property(lambda self: self.special("text"), doc="id of the <text> segment marker")
    audio = property(lambda self: self.special("audio"), doc="id of the <audio> segment marker")
    prompt = property(lambda self: self.special("prompt"), doc="id of the <prompt> segment marker")

    @property
    def text_vocab_size(self) -> int:
        """Rows of the text embedding and columns of the text head: text ids + specials."""
        return self.text_size + len(self.special_names)

    @property
    def audio_card(self) -> int:
        """Rows of each audio codebook table: the codes plus the empty code."""
        return self.codebook_size + 1

    @property
    def empty_code(self) -> int:
        """Local code for "no code here" (pattern padding, e.g. the first steps of the delay pattern)."""
        return self.codebook_size

    @property
    def size(self) -> int:
        """Total number of global ids: text, specials and K audio blocks."""
        return self.text_vocab_size + self.num_codebooks * self.audio_card

    def audio_offset(self, k: int) -> int:
        """First global id of codebook `k`."""
        if not 0 <= k < self.num_codebooks:
            raise IndexError(f"codebook {k} out of range [0, {self.num_codebooks})")
        return self.text_vocab_size + k * self.audio_card

    def audio_id(self, k: int, code: int) -> int:
        """Global id of local `code` (in [0, audio_card)) of codebook `k`."""
        if not 0 <= code < self.audio_card:
            raise IndexError(f"code {code} out of range [0, {self.audio_card}) for codebook {k}")
        return self.audio_offset(k) + code

    def split_audio_id(self, token: int) -> tuple[int, int]:
        """Inverse of `audio_id`: global id -> (codebook k, local code)."""
        if not self.text_vocab_size <= token < self.size:
            raise IndexError(
                f"id {token} is not an audio id (audio ids are [{self.text_vocab_size}, {self.size}))"
            )
        return divmod(token - self.text_vocab_size, self.audio_card)

    def token_name(self, token: int) -> str:
        """Readable name of a global id: `<eos>`, `<audio k=2 code=17>` or `text:42`."""
        if token < self.text_size:
            return f"text:{token}"
        if token < self.text_vocab_size:
            return f"<{self.special_names[token - self.text_size]}>"
        k, code = self.split_audio_id(token)
        return f"<audio k={k} code={'empty' if code == self.empty_code else code}>"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (stored in every checkpoint's config.json)."""
        return {
            "text_size": self.text_size,
            "num_codebooks": self.num_codebooks,
            "codebook_size": self.codebook_size,
            "task_names": list(self.task_names),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Vocab:
        """Inverse of `to_dict`; unknown or missing keys are errors that name the key."""
        known = {"text_size", "num_codebooks", "codebook_size", "task_names"}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"vocab config has unknown keys {sorted(unknown)}; expected {sorted(known)}")
        missing = {"text_size", "num_codebooks", "codebook_size"} - set(d)
        if missing:
            raise ValueError(f"vocab config is missing {sorted(missing)}")
        return cls(**{**d, "task_names": tuple(d.get("task_names", DEFAULT_TASKS))})
