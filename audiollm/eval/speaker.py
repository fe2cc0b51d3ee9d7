"""Does a voice prompt (or a continued clip) keep its speaker? Speaker similarity with Resemblyzer.

Resemblyzer's wheel ships its pretrained speaker encoder (GE2E, 256-d utterance embeddings), so nothing
is downloaded. For each record, the model speaks (tts) or continues (continue) in the voice of another
utterance of the record's speaker; the output's embedding is compared by cosine similarity with that
speaker's held-out utterance ("same") and with one utterance of every other speaker ("other"). The
reference rows give the encoder's own scale: real utterances of one speaker against each other, and
against other speakers. A prompt works when "same" is above "other".
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from functools import cache

import numpy as np
import torch

from audiollm import audio
from audiollm.api import AudioLM
from audiollm.data.manifest import Record
from audiollm.eval.report import Report

SAMPLE_RATE = 16000  # what the encoder expects


@cache
def _encoder():
    try:
        from resemblyzer import VoiceEncoder
    except ImportError:
        raise RuntimeError("speaker similarity needs Resemblyzer: pip install 'audiollm[eval]'") from None
    return VoiceEncoder("cpu", verbose=False)


def embed(wav: np.ndarray | torch.Tensor, sample_rate: int) -> np.ndarray:
    """Float audio (N,) or (C, N) -> a unit-norm speaker embedding (256,) float32."""
    x = torch.as_tensor(np.asarray(wav, dtype=np.float32))
    x = audio.resample(audio.to_channels(x if x.dim() == 2 else x[None], 1), sample_rate, SAMPLE_RATE)[0]
    return _encoder().embed_utterance(x.numpy())


def _load(record: Record) -> np.ndarray:
    wav, _ = audio.load(record.audio, SAMPLE_RATE, 1, record.start, record.duration)
    return wav[0].numpy()


def evaluate_voice(lm: AudioLM, records: Sequence[Record], mode: str = "tts", seed: int = 0) -> Report:
    """Speaker similarity of `lm`'s tts-with-prompt (`mode="tts"`) or continuation output to the prompt's
    speaker and to other speakers, over `records` with `speaker` (and `text` for tts); needs >= 2 speakers
    with >= 2 records each."""
    if mode not in ("tts", "continue"):
        raise ValueError(f"mode must be 'tts' or 'continue', got {mode!r}")
    by_speaker: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        if r.speaker and (mode == "continue" or r.text):
            by_speaker[r.speaker].append(r)
    by_speaker = {s: rs for s, rs in by_speaker.items() if len(rs) >= 2}
    if len(by_speaker) < 2:
        raise ValueError("voice evaluation needs records of at least 2 speakers, 2 or more records each")
    anchor = {s: embed(_load(rs[0]), SAMPLE_RATE) for s, rs in by_speaker.items()}  # the held-out utterance
    prompts = [(s, r) for s, rs in by_speaker.items() for r in rs[1:]]
    items = []
    for k, (s, r) in enumerate(prompts):
        if mode == "tts":  # say what another prompt said, so no output shares its words with an anchor
            text = prompts[(k + 1) % len(prompts)][1].text
            wav, sr = lm.synthesize(text, voice_prompt=r.audio, seed=seed + k)
            out = embed(wav, sr)
        else:
            wav, sr = lm.continue_audio(r.audio, duration=3.0, seed=seed + k)
            info = audio.info(r.audio)
            out = embed(wav[..., round(info.frames / info.samplerate * sr) :], sr)  # the continuation only
        real = embed(_load(r), SAMPLE_RATE)
        others = [anchor[o] for o in by_speaker if o != s]
        items.append({
            "id": r.id, "speaker": s,
            "same": float(out @ anchor[s]), "other": float(np.mean([out @ e for e in others])),
            "real_same": float(real @ anchor[s]), "real_other": float(np.mean([real @ e for e in others])),
        })  # fmt: skip
    summary = [
        {"system": f"{mode} output", "same_speaker": _mean(items, "same"), "other_speakers": _mean(items, "other"),
         "same_wins": float(np.mean([i["same"] > i["other"] for i in items]))},
        {"system": "real utterances", "same_speaker": _mean(items, "real_same"),
         "other_speakers": _mean(items, "real_other"),
         "same_wins": float(np.mean([i["real_same"] > i["real_other"] for i in items]))},
    ]  # fmt: skip
    notes = [
        "cosine similarity of Resemblyzer embeddings; 'same': to the prompt speaker's held-out utterance, "
        "'other': mean over the other speakers' utterances; same_wins: fraction of items where same > other"
    ]
    return Report(f"voice-{mode}", summary, items, notes, settings={"seed": seed})


def _mean(items: list[dict], key: str) -> float:
    return float(np.mean([i[key] for i in items]))
