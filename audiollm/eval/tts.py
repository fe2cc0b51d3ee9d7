"""Speech synthesis: intelligibility judged by an independent recogniser, and speed.

The judge is pocketsphinx with the US English acoustic model, dictionary and language model that
its PyPI wheel ships (nothing is downloaded). It is weak in absolute terms (WER ~0.1 on flite
speech, ~0.3 on read audiobooks, 0.7-0.9 on isolated spoken digits), so the generated speech's WER is
reported next to the same judge's WER on the manifest's own recordings of the same sentences:
the gap between the two rows is the measurement, not either number alone.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from audiollm import audio
from audiollm.api import AudioLM
from audiollm.data.manifest import Record
from audiollm.eval.asr import error_rates
from audiollm.eval.plots import spectrograms
from audiollm.eval.report import Report


class Recognizer:
    """pocketsphinx's default US English recogniser; each call decodes one utterance from scratch."""

    sample_rate = 16000  # what the shipped acoustic model expects, as 16-bit mono PCM

    def __init__(self):
        try:
            from pocketsphinx import Decoder
        except ImportError:
            raise RuntimeError(
                "TTS evaluation needs pocketsphinx (its wheel ships the English model): "
                "pip install 'pocketsphinx>=5'"
            ) from None
        self.decoder = Decoder(samprate=self.sample_rate, logfn=os.devnull)

    def __call__(self, wav: np.ndarray | torch.Tensor, sample_rate: int) -> str:
        """Float audio (N,) or (C, N) in [-1, 1] at `sample_rate` -> the words heard, lower case."""
        x = torch.as_tensor(np.asarray(wav, dtype=np.float32))
        x = x if x.dim() == 2 else x[None]  # (C, N)
        x = audio.resample(audio.to_channels(x, 1), sample_rate, self.sample_rate)[0]  # (N',)
        if x.numel() == 0:
            return ""
        pcm = (x.clamp(-1, 1) * 32767).round().to(torch.int16).numpy()
        # The feature front end keeps its state (cepstral mean) between utterances unless reset,
        # which would make each result depend on what was decoded before it.
        self.decoder.reinit_feat()
        self.decoder.start_utt()
        self.decoder.process_raw(pcm.tobytes(), full_utt=True)
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        return hyp.hypstr if hyp is not None else ""


def evaluate_tts(
    lm: AudioLM,
    records: Sequence[Record],
    recognizer: Recognizer | None = None,
    seed: int = 0,
    max_seconds: float = 10.0,
) -> Report:
    """Speak each `record.text`, let the judge transcribe it and the record's own audio; WER/CER of both.

    The generated row's RTF is synthesis seconds per second of generated audio.
    """
    judge = recognizer or Recognizer()
    items, elapsed = [], 0.0
    for r in records:
        started = time.perf_counter()
        try:
            wav, sr = lm.synthesize(r.text, max_seconds=max_seconds, seed=seed)
        except ValueError as e:
            raise ValueError(f"record '{r.id}': {e}") from None
        elapsed += time.perf_counter() - started
        ref, ref_sr = audio.load(r.audio, channels=1, start=r.start, duration=r.duration)
        items.append(
            {"id": r.id, "text": r.text, "generated_seconds": wav.shape[-1] / sr,
             "reference_seconds": ref.shape[-1] / ref_sr,
             "generated_heard": judge(wav, sr), "reference_heard": judge(ref, ref_sr)}
        )  # fmt: skip
    texts = [i["text"] for i in items]
    summary = []
    for system in ("generated", "reference"):
        seconds = sum(i[f"{system}_seconds"] for i in items)
        rtf = elapsed / seconds if system == "generated" and seconds > 0 else None
        rates = error_rates(texts, [i[f"{system}_heard"] for i in items])
        summary.append({"system": system, **rates, "seconds": seconds, "rtf": rtf})
    notes = ["WER/CER of pocketsphinx (en-us, shipped model) on each row's audio against the manifest text"]
    return Report("tts", summary, items, notes, settings={"seed": seed, "max_seconds": max_seconds})


def speech_samples(
    lm: AudioLM, records: Sequence[Record], folder: Path, prefix: str, title: str
) -> tuple[list[str], Path]:
    """Samples to listen to: speak each record's text (seed: its index) into `folder/<prefix>_<i>.wav` and
    transcribe the record's own audio; the spoken clips' spectrograms go to `folder/<prefix>_spectrograms.png`.
    Returns one Markdown line per sample (file, text, transcript) and the picture's path."""
    lines, clips = [], {}
    for i, record in enumerate(records):
        wav, sr = lm.synthesize(record.text, seed=i)
        path = audio.save(folder / f"{prefix}_{i}.wav", wav, sr)
        clips[f'{title}: "{record.text}"'] = (wav, sr)
        heard = lm.transcribe(record.audio)
        lines.append(f'- `{path}`: speaking "{record.text}"; transcript of `{record.audio}`: "{heard}"')
    return lines, spectrograms(clips, folder / f"{prefix}_spectrograms.png")
