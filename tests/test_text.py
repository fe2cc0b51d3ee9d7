import pytest

from audiollm.cli import main
from audiollm.data.manifest import write_jsonl
from audiollm.text import (
    SentencePieceTokenizer,
    load_tokenizer,
    normalize,
    tokenizer_kind,
    train_sentencepiece,
)

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Ask not what your country can do for you.",
    "A calm piano melody, slow tempo.",
    "Rain falls softly on a tin roof.",
] * 3


def test_train_round_trip_and_reload(tmp_path):
    tok = train_sentencepiece(SENTENCES, 60, tmp_path / "spm")
    assert 10 < tok.vocab_size <= 60
    ids = tok.encode("The lazy fox.")
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == "the lazy fox."
    again = load_tokenizer(tmp_path / "spm", tokenizer_kind(tok))
    assert isinstance(again, SentencePieceTokenizer) and again.encode("The lazy fox.") == ids
    with pytest.raises(ValueError, match="unknown text tokenizer kind"):
        load_tokenizer(tmp_path / "spm", "bpe")


def test_normalize():
    assert normalize("  Hello\tWORLD\n ﬁne ") == "hello world fine"


def test_cli(tmp_path, capsys):
    manifest = write_jsonl(
        tmp_path / "m.jsonl",
        [{"id": str(i), "audio": "x.wav", "text": t} for i, t in enumerate(SENTENCES[:2])]
        + [{"id": "c", "audio": "y.wav", "caption": SENTENCES[2]}],
    )
    assert main(["train-tokenizer", str(manifest), "--vocab-size", "5000", "--out", str(tmp_path / "t")]) == 0
    assert "from 3 texts" in capsys.readouterr().out
    assert SentencePieceTokenizer(tmp_path / "t").encode("calm piano")
    with pytest.raises(ValueError, match="no text to train a tokenizer on"):
        train_sentencepiece([], 10, tmp_path / "none")
