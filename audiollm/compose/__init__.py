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

Names are loaded on first use, so that importing the package costs nothing. `audiollm.compose` (an
attribute of `audiollm`) is the function `compose`; this package is `sys.modules["audiollm.compose"]`,
reached with `from audiollm.compose import ...` or `importlib.import_module("audiollm.compose")`.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

_EXPORTS = {
    "Clip": "mixer",
    "MixSettings": "mixer",
    "mix": "mixer",
    "plan": "planner",
    "Composition": "render",
    "compose": "render",
    "default_cache_dir": "render",
    "EXAMPLE_SCRIPT": "script",
    "SCHEMA_PATH": "script",
    "Element": "script",
    "ResolvedScript": "script",
    "Script": "script",
    "ScriptError": "script",
    "Voice": "script",
    "load_script": "script",
    "resolve": "script",
}
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

if TYPE_CHECKING:
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


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
