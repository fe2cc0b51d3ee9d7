"""Composition (WavJourney-style): audio scripts of speech, music and sound effects, a planner, per-element
generation through one AudioLM, and a mixer that never clips.

Public API (signatures):

    compose(script_or_prompt: Script | dict | str | Path, model: AudioLM | str | Path = "tiny",
            seed: int | None = 0, *, llm: Callable[[str], str] | None = None,
            mix_settings: MixSettings | None = None, guidance_scale: float = 3.0,
            cache_dir: str | Path | None = None, use_cache: bool = True,
            device: str | None = None) -> Composition
    Composition.audio: np.ndarray            float32 (N,) mono or (C, N)
    Composition.sample_rate: int
    Composition.script: ResolvedScript       .to_dict() -> JSON-ready dict with every element's start/end
    Composition.save(directory) -> dict[str, Path]   track.wav, script.json, timeline.png
    Composition.timeline(path) -> Path               the timeline PNG alone
    load_script(source: str | Path | dict) -> Script  (a JSON file, a JSON string or parsed JSON)
    Script.from_dict(data) -> Script; Script.to_dict() -> dict; ScriptError(ValueError).errors: list[str]
    plan(request: str, llm: Callable[[str], str] | None = None, max_repairs: int = 2) -> Script
    mix(clips: list[Clip], sample_rate: int, settings: MixSettings = MixSettings()) -> np.ndarray (C, N)
    EXAMPLE_SCRIPT: dict                      a valid script; SCHEMA_PATH: its JSON Schema file

`audiollm.compose` is this package and is also callable as `compose()`: `import audiollm;
audiollm.compose(...)` works whether or not the package was imported before.
"""

from __future__ import annotations

import sys
import types

from audiollm.compose.mixer import Clip, MixSettings, mix
from audiollm.compose.planner import plan
from audiollm.compose.render import Composition, compose, default_cache_dir
from audiollm.compose.script import (
    EXAMPLE_SCRIPT,
    SCHEMA_PATH,
    Element,
    ResolvedScript,
    Script,
    ScriptError,
    Voice,
    load_script,
    resolve,
)

__all__ = [
    "EXAMPLE_SCRIPT",
    "SCHEMA_PATH",
    "Clip",
    "Composition",
    "Element",
    "MixSettings",
    "ResolvedScript",
    "Script",
    "ScriptError",
    "Voice",
    "compose",
    "default_cache_dir",
    "load_script",
    "mix",
    "plan",
    "resolve",
]


class _CallableModule(types.ModuleType):
    """Importing the package binds `audiollm.compose` to it; calling it calls `compose()`."""

    __call__ = staticmethod(compose)


sys.modules[__name__].__class__ = _CallableModule
