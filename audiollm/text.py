"""Text tokenizers. `HFTokenizer` wraps a Hugging Face `tokenizer.json` (e.g. Pythia's) through `tokenizers`."""

from __future__ import annotations

import shutil
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
