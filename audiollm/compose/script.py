"""Audio scripts: speech, music and sound effects laid on a timeline (WavJourney-style), as JSON.

    {"sample_rate": 24000,
     "elements": [{"type": "music", "description": "calm ambient pads", "layout": "background",
                   "start": 0.0, "end": "end", "volume_db": -32, "fade_in": 1.0, "fade_out": 2.0},
                  {"type": "speech", "text": "Welcome.", "voice": "narrator", "layout": "foreground"},
                  {"type": "sfx", "description": "a door bell rings", "duration": 1.5, "gap": 0.3}],
     "voices": {"narrator": {"prompt": "optional/reference.wav"}}}

Foreground elements play one after another, `gap` seconds apart (default 0.2; the first starts at 0),
unless they give `start`. Background elements span `start` (default 0) to `end` (seconds, or "end": the
end of the last foreground element), or `start + duration`. Speech lasts as long as it is spoken; music
and sfx last `duration`. `volume_db` is a loudness target in LUFS (ITU-R BS.1770).

Validation is by hand (no jsonschema dependency) and reports every problem as `elements[2].duration:
must be > 0`; `script.schema.json` beside this file describes the same format for editors and LLMs.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

SCHEMA_PATH = Path(__file__).resolve().parent / "script.schema.json"
TYPES = ("speech", "music", "sfx")
LAYOUTS = ("foreground", "background")
DEFAULT_LAYOUT = {"speech": "foreground", "music": "background", "sfx": "foreground"}
DEFAULT_VOLUME_DB = {"speech": -18.0, "music": -30.0, "sfx": -22.0}  # LUFS
DEFAULT_GAP = 0.2  # seconds of silence between consecutive foreground elements
DEFAULT_SAMPLE_RATE = 24000
MIN_VOLUME_DB = -70.0
# Ceilings, so that one script cannot take the machine's memory: what a track is mixed in grows with all three
MAX_SECONDS = 600.0  # the longest track, and so the largest value of any time field
MAX_ELEMENTS = 64
MAX_SAMPLE_RATE = 48000
TIME_FIELDS = ("start", "end", "duration", "gap", "fade_in", "fade_out")

EXAMPLE_SCRIPT: dict[str, Any] = {
    "sample_rate": 24000,
    "elements": [
        {"type": "music", "description": "calm ambient pads", "layout": "background", "start": 0.0,
         "end": "end", "volume_db": -32, "fade_in": 1.0, "fade_out": 2.0},
        {"type": "speech", "text": "Welcome to the evening news.", "voice": "narrator", "layout": "foreground",
         "volume_db": -18},
        {"type": "sfx", "description": "a door bell rings", "layout": "foreground", "duration": 1.5,
         "volume_db": -22},
        {"type": "speech", "text": "Our first story tonight.", "voice": "narrator", "layout": "foreground",
         "gap": 0.3},
    ],
    "voices": {"narrator": {}},
}  # fmt: skip


class ScriptError(ValueError):
    """An invalid script; `errors` lists every problem as 'path: what is wrong'."""

    def __init__(self, errors: list[str], source: str = ""):
        self.errors = errors
        where = f"{source}: " if source else ""
        super().__init__(f"{where}invalid script: " + "; ".join(errors))


@dataclass
class Voice:
    """A named voice; `prompt` is a reference recording for zero-shot voice (None: the model's own)."""

    prompt: str | None = None


@dataclass
class Element:
    """One speech / music / sfx element as written in the script (unset fields are None)."""

    type: str
    layout: str
    text: str | None = None  # speech: what is said
    voice: str | None = None  # speech: a key of Script.voices (None: the model's default voice)
    description: str | None = None  # music / sfx: the caption to generate from
    start: float | None = None  # seconds; foreground: None follows the previous element
    end: float | str | None = None  # background only: seconds or "end"
    duration: float | None = None  # music / sfx: seconds
    gap: float | None = None  # foreground: seconds after the previous foreground element
    volume_db: float = 0.0  # loudness target, LUFS
    fade_in: float = 0.0  # seconds
    fade_out: float = 0.0  # seconds

    @property
    def task(self) -> str:
        """The AudioLM task that generates this element."""
        return "tts" if self.type == "speech" else self.type

    @property
    def prompt_text(self) -> str:
        """What the model is asked for: the spoken text or the caption."""
        return self.text if self.type == "speech" else self.description  # type: ignore[return-value]


@dataclass
class Script:
    """A validated script. Build it with `Script.from_dict` / `load_script`, which check every field."""

    elements: list[Element]
    sample_rate: int = DEFAULT_SAMPLE_RATE
    voices: dict[str, Voice] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any, base_dir: str | Path | None = None, source: str = "") -> Script:
        """Validate `data` (parsed JSON) and build the script; raises ScriptError naming each bad field.
        Relative voice prompt paths are resolved against `base_dir` (the script file's folder)."""
        errors: list[str] = []
        if not isinstance(data, dict):
            raise ScriptError([f"the script must be a JSON object, got {_kind(data)}"], source)
        _unknown(data, {f.name for f in fields(cls)}, "", errors)
        rate = data.get("sample_rate", DEFAULT_SAMPLE_RATE)
        if isinstance(rate, bool) or not isinstance(rate, int) or not 8000 <= rate <= MAX_SAMPLE_RATE:
            errors.append(f"sample_rate: must be an integer from 8000 to {MAX_SAMPLE_RATE}, got {rate!r}")
        voices = _voices(data.get("voices", {}), Path(base_dir) if base_dir else None, errors)
        raw = data.get("elements")
        if not isinstance(raw, list) or not raw:
            errors.append("elements: must be a non-empty list of elements")
            raw = []
        if len(raw) > MAX_ELEMENTS:
            too_many = f"elements: {len(raw)} elements; a script may have at most {MAX_ELEMENTS}"
            raise ScriptError([too_many], source)
        elements = [_element(item, f"elements[{i}]", voices, errors) for i, item in enumerate(raw)]
        if any(e and e.end == "end" for e in elements) and not any(
            e and e.layout == "foreground" for e in elements
        ):
            i = next(i for i, e in enumerate(elements) if e and e.end == "end")
            errors.append(f'elements[{i}].end: "end" needs at least one foreground element')
        if errors:
            raise ScriptError(errors, source)
        return cls(elements, rate, voices)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        """The script as JSON-ready data (unset element fields left out); `from_dict` reads it back."""
        elements = [{k: v for k, v in asdict(e).items() if v is not None} for e in self.elements]
        voices = {name: {k: v for k, v in asdict(voice).items() if v is not None} for name, voice in self.voices.items()}  # fmt: skip
        return {"sample_rate": self.sample_rate, "elements": elements, "voices": voices}


def load_script(source: str | Path | dict) -> Script:
    """A script from a JSON file, a JSON string or parsed data; raises ScriptError on any invalid field."""
    if isinstance(source, dict):
        return Script.from_dict(source)
    text, base, name = str(source), None, ""
    if not text.lstrip().startswith("{"):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"script file {path} not found")
        text, base, name = path.read_text(), path.parent, str(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ScriptError([f"not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})"], name) from None
    return Script.from_dict(data, base, name)


# ---- validation helpers: each appends 'path: problem' to errors -----------------------------------------
ELEMENT_FIELDS = {f.name for f in fields(Element)}
ONLY_FOR = {  # field -> (allowed when, what to say otherwise)
    "text": (lambda e: e["type"] == "speech", "only speech has text; music and sfx use description"),
    "voice": (lambda e: e["type"] == "speech", "only speech has a voice"),
    "description": (lambda e: e["type"] != "speech", "speech has text, not a description"),
    "duration": (lambda e: e["type"] != "speech", "speech has no duration (it lasts as long as it is spoken)"),
    "end": (lambda e: e["layout"] == "background", "only background elements have an end; use duration"),
    "gap": (lambda e: e["layout"] == "foreground", "only foreground elements have a gap"),
}  # fmt: skip


def _element(item: Any, at: str, voices: dict[str, Voice], errors: list[str]) -> Element | None:
    if not isinstance(item, dict):
        errors.append(f"{at}: must be an object, got {_kind(item)}")
        return None
    n = len(errors)
    _unknown(item, ELEMENT_FIELDS, f"{at}.", errors)
    kind = item.get("type")
    if kind not in TYPES:
        errors.append(f"{at}.type: must be one of {', '.join(TYPES)}, got {kind!r}")
        return None
    e = dict(item) | {"layout": item.get("layout", DEFAULT_LAYOUT[kind])}
    if e["layout"] not in LAYOUTS:
        errors.append(f"{at}.layout: must be one of {', '.join(LAYOUTS)}, got {e['layout']!r}")
        return None
    if kind == "speech" and e["layout"] == "background":
        errors.append(f"{at}.layout: speech must be foreground (it lasts as long as it is spoken)")
    for name, (allowed, why) in ONLY_FOR.items():
        if name in e and not allowed(e):
            errors.append(f"{at}.{name}: {why}")
    what = "text" if kind == "speech" else "description"
    if not isinstance(e.get(what), str) or not e[what].strip():
        errors.append(f"{at}.{what}: must be a non-empty string")
    if kind == "speech" and "voice" in e and e["voice"] not in voices:
        known = ", ".join(voices) or "none are defined"
        errors.append(f"{at}.voice: unknown voice {e['voice']!r} (voices: {known}); add it to 'voices'")
    _timing(e, at, errors)
    e.setdefault("volume_db", DEFAULT_VOLUME_DB[kind])
    if _number(e, "volume_db", at, errors) and not MIN_VOLUME_DB <= e["volume_db"] <= 0:
        errors.append(f"{at}.volume_db: must be between {MIN_VOLUME_DB:g} and 0 LUFS, got {e['volume_db']}")
    for name in ("fade_in", "fade_out"):
        e.setdefault(name, 0.0)
        if _number(e, name, at, errors) and e[name] < 0:
            errors.append(f"{at}.{name}: must be >= 0")
    span = e.get("duration") if e["layout"] == "foreground" else None
    if len(errors) == n and span is not None and e["fade_in"] + e["fade_out"] > span:
        errors.append(f"{at}.fade_out: fade_in + fade_out ({e['fade_in'] + e['fade_out']:g} s) exceeds duration ({span:g} s)")  # fmt: skip
    return Element(**e) if len(errors) == n else None


def _timing(e: dict, at: str, errors: list[str]) -> None:
    """start / end / duration / gap: types, signs, and which combinations make a span."""
    if "start" in e and _number(e, "start", at, errors) and e["start"] < 0:
        errors.append(f"{at}.start: must be >= 0")
    if "gap" in e and _number(e, "gap", at, errors):
        if e["gap"] < 0:
            errors.append(f"{at}.gap: must be >= 0")
        if "start" in e:
            errors.append(f"{at}.gap: give start or gap, not both")
    if e["type"] == "speech":
        return
    if "duration" in e and _number(e, "duration", at, errors) and e["duration"] <= 0:
        errors.append(f"{at}.duration: must be > 0")
    if e["layout"] == "foreground" and "duration" not in e:
        errors.append(f"{at}.duration: required for foreground {e['type']} (seconds)")
    if e["layout"] == "background":
        if ("end" in e) == ("duration" in e):
            errors.append(f"{at}.end: background {e['type']} needs end (seconds or \"end\") or duration, one of them")  # fmt: skip
        elif (
            e.get("end", "end") != "end"
            and _number(e, "end", at, errors, '(seconds) or "end"')
            and e["end"] <= (start := e["start"] if isinstance(e.get("start"), float) else 0.0)
        ):
            errors.append(f"{at}.end: must be > start ({start:g} s)")


def _voices(raw: Any, base: Path | None, errors: list[str]) -> dict[str, Voice]:
    if not isinstance(raw, dict):
        errors.append(f'voices: must be an object of name -> {{"prompt": path}}, got {_kind(raw)}')
        return {}
    voices = {}
    for name, spec in raw.items():
        if not isinstance(spec, dict):
            errors.append(f'voices.{name}: must be an object such as {{"prompt": "ref.wav"}}')
            continue
        _unknown(spec, {f.name for f in fields(Voice)}, f"voices.{name}.", errors)
        prompt = spec.get("prompt")
        if prompt is not None:
            if not isinstance(prompt, str) or not prompt:
                errors.append(
                    f"voices.{name}.prompt: must be a path to a reference recording, got {prompt!r}"
                )
                continue
            path = Path(prompt) if base is None or Path(prompt).is_absolute() else base / prompt
            if not path.is_file():
                errors.append(f"voices.{name}.prompt: file {path} not found (a reference recording)")
                continue
            prompt = str(path)
        voices[name] = Voice(prompt)
    return voices


def _number(e: dict, name: str, at: str, errors: list[str], alt: str = "") -> bool:
    """True when e[name] is a finite number (a time field: at most MAX_SECONDS); otherwise records the error."""
    value = e[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        errors.append(f"{at}.{name}: must be a finite number {alt}".rstrip() + f", got {value!r}")
        return False
    if name in TIME_FIELDS and value > MAX_SECONDS:
        errors.append(f"{at}.{name}: must be at most {MAX_SECONDS:g} s (the longest track), got {value:g}")
        return False
    e[name] = float(value)
    return True


def _unknown(data: dict, allowed: set[str], at: str, errors: list[str]) -> None:
    for key in data:
        if key not in allowed:
            errors.append(f"{at}{key}: unknown field (allowed: {', '.join(sorted(allowed))})")


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string"}.get(type(value), type(value).__name__)


# ---- timing ---------------------------------------------------------------------------------------------
@dataclass
class ResolvedScript:
    """A script with every element's actual (start, end) in seconds; the track lasts until the last end."""

    script: Script
    spans: list[tuple[float, float]]

    @property
    def elements(self) -> list[Element]:
        return self.script.elements

    @property
    def sample_rate(self) -> int:
        return self.script.sample_rate

    @property
    def duration(self) -> float:
        return max(end for _, end in self.spans)

    def to_dict(self) -> dict[str, Any]:
        """The script as JSON-ready data with each element's actual start and end and the track's duration.
        An output format: foreground elements carry an `end` here, which an input script may not."""
        data = self.script.to_dict()
        for element, (start, end) in zip(data["elements"], self.spans, strict=True):
            element.update(start=round(start, 6), end=round(end, 6))
        return data | {"duration": round(self.duration, 6)}


def resolve(
    script: Script, speech_seconds: dict[int, float], max_seconds: float = MAX_SECONDS
) -> ResolvedScript:
    """Place every element on the timeline. Foreground elements in script order: at `start` when given,
    else `gap` (default 0.2 s; 0 before the first) after the previous foreground element's end; each lasts
    its duration (speech: `speech_seconds[index]`, its spoken length). Background elements span `start`
    (default 0) to `end` ("end": the latest foreground end) or `start + duration`. A track that would last
    longer than `max_seconds` raises ScriptError."""
    spans: dict[int, tuple[float, float]] = {}
    cursor: float | None = None  # end of the previous foreground element
    for i, e in enumerate(script.elements):
        if e.layout != "foreground":
            continue
        if e.type == "speech" and i not in speech_seconds:
            raise ValueError(f"elements[{i}]: the length of its speech is needed to place it")
        length = speech_seconds[i] if e.type == "speech" else e.duration
        if e.start is not None:
            start = e.start
        else:
            start = (cursor or 0.0) + (e.gap if e.gap is not None else 0.0 if cursor is None else DEFAULT_GAP)
        cursor = start + length  # type: ignore[operator]
        spans[i] = (start, cursor)
    last = max((end for _, end in spans.values()), default=0.0)
    for i, e in enumerate(script.elements):
        if e.layout != "background":
            continue
        start = e.start or 0.0
        end = start + e.duration if e.duration is not None else last if e.end == "end" else e.end
        if end <= start:  # type: ignore[operator]
            raise ScriptError(
                [f'elements[{i}].end: "end" resolves to {end:g} s, not after its start ({start:g} s)']
            )
        spans[i] = (start, end)  # type: ignore[assignment]
    resolved = ResolvedScript(script, [spans[i] for i in range(len(script.elements))])
    if not resolved.duration <= max_seconds:
        raise ScriptError([f"the track would last {resolved.duration:g} s; the limit is {max_seconds:g} s"])
    return resolved
