"""compose(): a script (or a request the planner turns into one) -> every element generated -> one mix.

Speech is generated first (its length places the foreground), then music and sound effects for their
resolved spans. Elements that share a task are generated in batches, and every generated clip is cached
on disk by content, so editing one element of a script regenerates only that element.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from audiollm import audio
from audiollm.api import AudioLM
from audiollm.compose.mixer import Clip, MixSettings, mix
from audiollm.compose.planner import plan
from audiollm.compose.script import (
    MAX_SECONDS,
    Element,
    ResolvedScript,
    Script,
    ScriptError,
    load_script,
    resolve,
)
from audiollm.files import atomic_write
from audiollm.model import WEIGHTS_FILE

SPEECH_MAX_SECONDS = 20.0  # the longest one speech element may be
BATCH_SIZE = 8  # elements generated together
CACHE_BYTES = 512 * 2**20  # the clip cache's size; the least recently used clips go first beyond it
ScriptInput = Script | dict | str | Path


def default_cache_dir() -> Path:
    """$AUDIOLLM_CACHE/compose, else $XDG_CACHE_HOME/audiollm/compose, else ~/.cache/audiollm/compose."""
    if os.environ.get("AUDIOLLM_CACHE"):
        return Path(os.environ["AUDIOLLM_CACHE"]) / "compose"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "audiollm" / "compose"


@dataclass
class Composition:
    """A mixed track: `audio` float32 (N,) mono or (C, N), its `sample_rate`, and the resolved `script`
    (every element's actual start and end; `.script.to_dict()` for JSON)."""

    audio: np.ndarray
    sample_rate: int
    script: ResolvedScript

    def timeline(self, path: str | Path) -> Path:
        """Write the timeline picture (PNG: one lane per element over the waveform); returns the path."""
        from audiollm.compose.timeline import plot_timeline

        return plot_timeline(self.script, self.audio, self.sample_rate, path)

    def save(self, directory: str | Path) -> dict[str, Path]:
        """Write track.wav, script.json (resolved) and timeline.png into `directory`; returns their paths."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        script = directory / "script.json"
        script.write_text(json.dumps(self.script.to_dict(), indent=2) + "\n")
        return {
            "track": audio.save(directory / "track.wav", self.audio, self.sample_rate),
            "script": script,
            "timeline": self.timeline(directory / "timeline.png"),
        }


def compose(
    script_or_prompt: ScriptInput,
    model: AudioLM | str | Path = "tiny",
    seed: int | None = 0,
    *,
    llm: Callable[[str], str] | None = None,
    mix_settings: MixSettings | None = None,
    guidance_scale: float = 3.0,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    device: str | None = None,
    max_seconds: float = MAX_SECONDS,
) -> Composition:
    """Generate and mix a script: a Script, parsed JSON, a JSON file or string, or a plain request for the
    planner (`llm`, a str -> str callable, plans instead of the built-in rules when given). `model` is an
    AudioLM or a name/directory for AudioLM.from_pretrained. Clips are cached under `cache_dir` (default
    `default_cache_dir()`) unless `use_cache` is False or `seed` is None (every run then differs). A track
    longer than `max_seconds` is refused once speech has placed the foreground, before music and sfx."""
    script = as_script(script_or_prompt, llm)
    lm = model if isinstance(model, AudioLM) else AudioLM.from_pretrained(model, device=device)
    check_model(script, lm)
    cache = ClipCache(cache_dir or default_cache_dir()) if use_cache and seed is not None else None
    make = ElementGenerator(lm, script, seed, guidance_scale, cache)
    clips = make([i for i, e in enumerate(script.elements) if e.type == "speech"], {})
    resolved = resolve(script, {i: wav.shape[-1] / sr for i, (wav, sr) in clips.items()}, max_seconds)
    seconds = {i: end - start for i, (start, end) in enumerate(resolved.spans)}
    clips |= make([i for i, e in enumerate(script.elements) if e.type != "speech"], seconds)
    layers = [_clip(e, clips[i], resolved.spans[i]) for i, e in enumerate(script.elements)]
    track = mix(layers, script.sample_rate, mix_settings or MixSettings())  # (C, N)
    return Composition(track[0] if track.shape[0] == 1 else track, script.sample_rate, resolved)


def as_script(source: ScriptInput, llm: Callable[[str], str] | None = None) -> Script:
    """A Script from a Script, parsed JSON, a JSON string or file (.json, any case), or a request for the
    planner."""
    if isinstance(source, Script):
        return source
    text = str(source)
    if isinstance(source, dict | Path) or text.lstrip().startswith("{") or text.lower().endswith(".json"):
        return load_script(source)
    return plan(text, llm=llm)


def check_model(script: Script, lm: AudioLM) -> None:
    """Fail before any generation when the model lacks an element's task or an element's text is too long
    for it; the error names each element."""
    errors = []
    for i, e in enumerate(script.elements):
        if e.task not in lm.tasks:
            errors.append(f"elements[{i}]: the model was not trained for {e.task} (its tasks: {', '.join(lm.tasks)})")  # fmt: skip
            continue
        try:
            lm._text_ids(e.prompt_text, f"elements[{i}].{'text' if e.type == 'speech' else 'description'}")
        except ValueError as err:
            errors.append(str(err))
    if errors:
        raise ScriptError(errors)


def _clip(e: Element, generated: tuple[np.ndarray, int], span: tuple[float, float]) -> Clip:
    role = "speech" if e.type == "speech" else e.layout
    loop = e.type == "music" or e.layout == "background"
    return Clip(generated[0], generated[1], *span, e.volume_db, e.fade_in, e.fade_out, role, loop)  # type: ignore[arg-type]


class ElementGenerator:
    """Generates elements through the AudioLM API, in batches per task, through the cache."""

    def __init__(
        self, lm: AudioLM, script: Script, seed: int | None, guidance: float, cache: ClipCache | None
    ):
        self.lm, self.script, self.seed, self.guidance, self.cache = lm, script, seed, guidance, cache
        self.model_id = model_id(lm)

    def __call__(self, indices: list[int], seconds: dict[int, float]) -> dict[int, tuple[np.ndarray, int]]:
        """Element index -> (float32 audio (N,) or (C, N), sample rate); music / sfx last `seconds[i]`."""
        out, todo = {}, {}
        for i in indices:
            key = self.key(i, seconds.get(i))
            out[i] = self.cache.get(key) if self.cache else None
            if out[i] is None:
                todo.setdefault(self.script.elements[i].task, []).append((i, key))
        for task, items in todo.items():
            for first in range(0, len(items), BATCH_SIZE):
                batch = items[first : first + BATCH_SIZE]
                for (i, key), (wav, sr) in zip(
                    batch, self.generate(task, [i for i, _ in batch], seconds), strict=True
                ):
                    wav = wav[..., : round(seconds[i] * sr)] if i in seconds else wav
                    out[i] = (wav, sr)
                    if self.cache:
                        self.cache.put(key, wav, sr)
        return out

    def generate(
        self, task: str, indices: list[int], seconds: dict[int, float]
    ) -> list[tuple[np.ndarray, int]]:
        """One batch of elements sharing a task; music / sfx run for the longest span in the batch."""
        elements = [self.script.elements[i] for i in indices]
        if task == "tts":
            voices = [self.voice_prompt(e) for e in elements]
            return self.lm.synthesize([e.text for e in elements], voices, SPEECH_MAX_SECONDS, self.seed)  # type: ignore[return-value]
        longest = max(seconds[i] for i in indices)
        return self.lm.generate_captioned(
            task, [e.description for e in elements], longest, self.guidance, self.seed
        )  # type: ignore[return-value]

    def voice_prompt(self, e: Element) -> str | None:
        return self.script.voices[e.voice].prompt if e.voice else None

    def key(self, i: int, seconds: float | None) -> str:
        """Content hash of what makes element i's audio: model, task, text, voice recording, length, seed."""
        e = self.script.elements[i]
        prompt = self.voice_prompt(e) if e.type == "speech" else None
        parts = {
            "model": self.model_id, "task": e.task, "text": e.prompt_text, "seed": self.seed,
            "voice": hashlib.sha256(Path(prompt).read_bytes()).hexdigest() if prompt else None,
            "seconds": None if seconds is None else round(seconds, 6),
            "guidance": None if e.type == "speech" else self.guidance,
        }  # fmt: skip
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def model_id(lm: AudioLM) -> str:
    """Identifies a model's weights for the cache: its directory with the weight file's size and time."""
    weights = lm.directory / WEIGHTS_FILE if lm.directory else None
    if weights is not None and weights.is_file():
        stat = weights.stat()
        return f"{weights.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    return lm.name or hashlib.sha256(json.dumps(lm.config, sort_keys=True, default=str).encode()).hexdigest()


class ClipCache:
    """Generated clips on disk, one `<key>.npz` (audio, sample_rate) per content hash, at most `max_bytes`
    in all (the least recently used go first). An unreadable entry is a miss, deleted and made again."""

    def __init__(self, directory: str | Path, max_bytes: int = CACHE_BYTES):
        self.directory, self.max_bytes = Path(directory), max_bytes

    def get(self, key: str) -> tuple[np.ndarray, int] | None:
        path = self.directory / f"{key}.npz"
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                wav, sr = np.asarray(data["audio"], np.float32), int(data["sample_rate"])
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # truncated or not an npz
            path.unlink(missing_ok=True)
            return None
        os.utime(path)  # recently used: kept longest
        return wav, sr

    def put(self, key: str, wav: np.ndarray, sample_rate: int) -> None:
        with atomic_write(self.directory / f"{key}.npz", concurrent=True) as f:  # processes may share a cache
            np.savez(f, audio=np.asarray(wav, np.float32), sample_rate=sample_rate)
        self.trim()

    def trim(self) -> None:
        """Delete the least recently used entries until the cache holds at most `max_bytes`."""
        entries = sorted(((path.stat(), path) for path in self.directory.glob("*.npz")), key=lambda e: e[0].st_mtime_ns)  # fmt: skip
        total = sum(stat.st_size for stat, _ in entries)
        for stat, path in entries:
            if total <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= stat.st_size
