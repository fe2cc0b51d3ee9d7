"""Speech recognition: word and character error rates (jiwer) after one text normaliser, and speed.

The normaliser (`normalize`), applied to references and hypotheses alike:
1. Unicode NFKC, lower case; curly and back-tick apostrophes become "'".
2. Punctuation is stripped (replaced by a space), except apostrophes inside a word ("don't" stays,
   quotes around 'words' go) and the ".", ",", ":" between two digits.
3. Numbers stay as written: "3.5" and "1,000" are not spelled out, "three" is not turned into digits,
   so "3" against "three" counts as an error.
4. Runs of white space collapse to one space; leading and trailing space is dropped.

The real-time factor (RTF) is model seconds per second of audio (below 1: faster than real time);
it counts `AudioLM.transcribe` (codec encoding and decoding of text), not reading the files.
"""

from __future__ import annotations

import re
import time
import unicodedata
from collections.abc import Sequence

import jiwer

from audiollm import audio
from audiollm.api import AudioLM
from audiollm.data.manifest import Record
from audiollm.eval.report import Report

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'"})
# Any character that is not a letter, digit, space or apostrophe, unless it is . , : between digits.
_PUNCTUATION = re.compile(r"(?!(?<=\d)[.,:](?=\d))[^\w\s']|_")
_EDGE_APOSTROPHE = re.compile(r"\B'|'\B")


def normalize(text: str) -> str:
    """The documented normaliser (see the module docstring): lower case, no punctuation, one space."""
    text = unicodedata.normalize("NFKC", text).lower().translate(_APOSTROPHES)
    text = _EDGE_APOSTROPHE.sub(" ", _PUNCTUATION.sub(" ", text))
    return " ".join(text.split())


def error_rates(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, float]:
    """Corpus-level WER and CER of normalised texts (errors over all reference words / characters),
    and the number of reference words."""
    refs = [normalize(t) for t in references]
    hyps = [normalize(t) for t in hypotheses]
    return {
        "wer": float(jiwer.wer(refs, hyps)),
        "cer": float(jiwer.cer(refs, hyps)),
        "words": sum(len(r.split()) for r in refs),
    }


def evaluate_asr(lm: AudioLM, records: Sequence[Record], batch_size: int = 16) -> Report:
    """Transcribe each record's audio (its start/duration segment) and score it against `record.text`."""
    items, elapsed = [], 0.0
    for first in range(0, len(records), batch_size):
        batch = records[first : first + batch_size]
        clips = [audio.load(r.audio, channels=1, start=r.start, duration=r.duration) for r in batch]
        started = time.perf_counter()
        texts = lm.transcribe([(wav[0].numpy(), sr) for wav, sr in clips], batch_size=batch_size)
        elapsed += time.perf_counter() - started
        for r, (wav, sr), text in zip(batch, clips, texts, strict=True):
            row = {"id": r.id, "seconds": wav.shape[-1] / sr, "reference": r.text, "hypothesis": text}
            items.append(row | error_rates([r.text or ""], [text]))
    seconds = sum(i["seconds"] for i in items)
    rates = error_rates([i["reference"] for i in items], [i["hypothesis"] for i in items])
    summary = [{"system": "model", **rates, "seconds": seconds, "rtf": elapsed / seconds}]
    return Report("asr", summary, items, notes=["texts normalised as in audiollm.eval.asr.normalize"])
