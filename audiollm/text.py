"""Text tokenizers: `SentencePieceTokenizer` (trained here on a corpus's transcripts and captions) and
`HFTokenizer` (a Hugging Face `tokenizer.json`, e.g. Pythia's, through `tokenizers`).

Both map text to ids in [0, vocab_size) with no special tokens (those belong to `audiollm.vocab`), and
save themselves into a checkpoint directory; `load_tokenizer(dir)` reads either back.
"""

from __future__ import annotations

import re
import shutil
import unicodedata
from collections.abc import Iterable
from pathlib import Path


class HFTokenizer:
    """A `tokenizer.json` tokenizer: text <-> ids in [0, vocab_size). `tokenizers` is imported on load."""

    FILE = "tokenizer.json"

    def __init__(self, path: str | Path):
        from tokenizers import Tokenizer

        self.path = Path(path)
        if self.path.is_dir():
            self.path = self.path / self.FILE
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path} not found: expected a Hugging Face tokenizer.json")
        self._tok = Tokenizer.from_file(str(self.path))

    @property
    def vocab_size(self) -> int:
        """Number of ids the tokenizer can produce (added tokens included)."""
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """Ids of `text`, without special tokens added."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        """Text of `ids`; ids outside the tokenizer (specials of our vocabulary, audio) must be removed first."""
        return self._tok.decode(list(ids))

    def save_pretrained(self, directory: str | Path) -> None:
        """Copy `tokenizer.json` into `directory`."""
        Path(directory).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.path, Path(directory) / self.FILE)


def normalize(text: str) -> str:
    """The text form the models see: NFKC, lower case, single spaces (punctuation kept)."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text).lower()).strip()


class SentencePieceTokenizer:
    """A SentencePiece unigram model over normalised text (`normalize`)."""

    FILE = "tokenizer.model"

    def __init__(self, path: str | Path):
        import sentencepiece as spm

        self.path = Path(path)
        if self.path.is_dir():
            self.path = self.path / self.FILE
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path} not found: train one with `audiollm train-tokenizer`")
        self._sp = spm.SentencePieceProcessor(model_file=str(self.path))

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        """Ids of normalised `text`."""
        return self._sp.encode(normalize(text))

    def decode(self, ids: list[int]) -> str:
        return self._sp.decode(list(ids))

    def save_pretrained(self, directory: str | Path) -> None:
        """Copy `tokenizer.model` into `directory`."""
        Path(directory).mkdir(parents=True, exist_ok=True)
        if self.path.resolve() != (Path(directory) / self.FILE).resolve():
            shutil.copyfile(self.path, Path(directory) / self.FILE)


def train_sentencepiece(texts: Iterable[str], vocab_size: int, out: str | Path) -> SentencePieceTokenizer:
    """Train a unigram SentencePiece model on `texts` and write `out/tokenizer.model`.

    The vocabulary is shrunk to what the text supports when `vocab_size` is too large for it.
    """
    import sentencepiece as spm

    lines = sorted({normalize(t) for t in texts if t and t.strip()})
    if not lines:
        raise ValueError("no text to train a tokenizer on: the manifests have no 'text' or 'caption' fields")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    kwargs = dict(
        sentence_iterator=iter(lines),
        model_prefix=str(out / "tokenizer"),
        model_type="unigram",
        character_coverage=1.0,
        bos_id=-1,
        eos_id=-1,
        pad_id=-1,
        unk_id=0,
        num_threads=2,
        minloglevel=2,
    )
    try:
        spm.SentencePieceTrainer.train(vocab_size=vocab_size, **kwargs)
    except RuntimeError as e:  # "Vocabulary size too high (N). Please set it to a value <= M."
        found = re.search(r"<= (\d+)", str(e))
        if not found:
            raise
        kwargs["sentence_iterator"] = iter(lines)
        spm.SentencePieceTrainer.train(vocab_size=int(found.group(1)), **kwargs)
    (out / "tokenizer.vocab").unlink(missing_ok=True)
    return SentencePieceTokenizer(out)


TOKENIZERS = {"sentencepiece": SentencePieceTokenizer, "hf": HFTokenizer}


def tokenizer_kind(tokenizer: SentencePieceTokenizer | HFTokenizer) -> str:
    """The name under which a checkpoint's config.json records this tokenizer."""
    return next(name for name, cls in TOKENIZERS.items() if isinstance(tokenizer, cls))


def load_tokenizer(directory: str | Path, kind: str) -> SentencePieceTokenizer | HFTokenizer:
    """The `kind` ('sentencepiece' or 'hf') tokenizer saved in `directory`."""
    if kind not in TOKENIZERS:
        raise ValueError(f"unknown text tokenizer kind {kind!r}; known: {', '.join(TOKENIZERS)}")
    return TOKENIZERS[kind](directory)
