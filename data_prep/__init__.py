"""Corpus preparation: `prepare_<corpus>(src_dir, out_dir, ...) -> Path` per module, and the CLI table.

Every function writes `out_dir/<split>.jsonl` manifests (read by `audiollm tokenize`),
`rejects.jsonl` and `summary.json`, and returns the main manifest (see `data_prep.common`).
`audiollm prepare CORPUS [--src DIR] --out DIR [--minutes N] [--seed S]` calls `prepare`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

from data_prep.an4 import prepare_an4
from data_prep.audiocaps import prepare_audiocaps
from data_prep.common import describe
from data_prep.fsdd import prepare_fsdd
from data_prep.librispeech import prepare_librispeech
from data_prep.libritts import prepare_libritts
from data_prep.ljspeech import prepare_ljspeech
from data_prep.musiccaps import prepare_musiccaps
from data_prep.offline_music import prepare_offline_music
from data_prep.offline_sfx import prepare_offline_sfx
from data_prep.offline_speech import prepare_offline_speech

CORPORA: dict[str, Callable[..., Path]] = {
    "librispeech": prepare_librispeech,
    "libritts": prepare_libritts,
    "ljspeech": prepare_ljspeech,
    "an4": prepare_an4,
    "fsdd": prepare_fsdd,
    "musiccaps": prepare_musiccaps,
    "audiocaps": prepare_audiocaps,
    "offline-speech": prepare_offline_speech,
    "offline-music": prepare_offline_music,
    "offline-sfx": prepare_offline_sfx,
}


def prepare(
    corpus: str, src_dir: str | Path | None, out_dir: str | Path, **options: float | int | None
) -> Path:
    """Run `CORPORA[corpus]`, passing only the options given (not None); errors name a bad option."""
    if corpus not in CORPORA:
        raise ValueError(f"unknown corpus '{corpus}'; choose one of: {', '.join(CORPORA)}")
    fn = CORPORA[corpus]
    given = {k: v for k, v in options.items() if v is not None}
    accepted = inspect.signature(fn).parameters
    for name in given:
        if name not in accepted:
            raise ValueError(f"{corpus} does not take --{name}; it is for the offline builders")
    return fn(src_dir, out_dir, **given)


__all__ = ["CORPORA", "describe", "prepare"]
