"""The planner: a plain request -> a valid script.

Built in: deterministic rules. The request is split into clauses ("upbeat music, then a host says welcome
to tech talk, then a notification chime"); each clause becomes speech (someone says / reads / asks, or a
quotation), music (music words) or a sound effect (anything else that names a sound), with durations
("for 5 seconds", "a short ...") and layout ("in the background", "throughout") read from its words.

Any LLM can plan instead: `plan(request, llm=callable)` sends it the request with the format; its answer
is validated, and an invalid one goes back with the errors for up to `max_repairs` corrections.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from audiollm.compose.script import (
    DEFAULT_SAMPLE_RATE,
    DEFAULT_VOLUME_DB,
    EXAMPLE_SCRIPT,
    SCHEMA_PATH,
    Script,
    ScriptError,
)

SPLIT = re.compile(r"(?<=[!?])\s+|\s*(?:(?:[;,]|\.(?!\d))+\s*(?:and\s+then|then|and|after\s+that|finally|next)?|\band then\b|\bthen\b|\bfollowed by\b|\bafter that\b|\bfinally\b)\s*", re.I)  # fmt: skip
SPEECH_VERBS = r"says|said|say|reads|announces|asks|tells us|whispers|shouts|speaks|narrates|introduces|greets us with|saying"  # fmt: skip
SPEECH = re.compile(rf"^(?:(?P<who>.*?)\s+)?(?:{SPEECH_VERBS})\b[\s:,]*(?P<text>.+)$", re.I)
QUOTED = re.compile(r"[\"“”‘’']([^\"“”‘’]{2,})[\"“”‘’']")
MUSIC_WORDS = r"music|melody|song|tune|jingle|theme|soundtrack|pads?|piano|guitar|strings|orchestra|drums?|beat|synth|violin|cello|jazz|ambient music|score|chords"  # fmt: skip
SOUND_WORDS = r"sound|sfx|noise|chime|bell|ring|rings|door|knock|footsteps|steps|rain|thunder|wind|applause|clap|beep|whoosh|swoosh|crash|explosion|bark|dog|cat|birds?|chirp|waves?|ocean|traffic|car|engine|horn|siren|alarm|click|notification|ding|buzz|crowd|laugh|gunshot|glass|water|fire|crackl\w*|typing|keyboard|phone|clock|tick"  # fmt: skip
BACKGROUND_WORDS = (
    r"background|throughout|underneath|under it|behind|\bbed\b|ambien\w*|the whole time|all along"
)
PREFIX = re.compile(r"^(?:first|then|and|next|finally|now|after that|followed by|with|plus)\s+", re.I)
SECONDS = re.compile(r"(\d+(?:\.\d+)?)\s*-?\s*(?:s|sec|secs|seconds?)\b", re.I)
DURATIONS = {"music": 4.0, "sfx": 1.5, "ambience": 8.0}  # seconds, when the request gives none
SCALE = {"short": 0.6, "brief": 0.6, "quick": 0.6, "long": 2.0, "extended": 2.0}


def plan(request: str, llm: Callable[[str], str] | None = None, max_repairs: int = 2) -> Script:
    """A request in plain words -> a validated Script: by the built-in rules, or by `llm` (str -> str, its
    answer a JSON script) with up to `max_repairs` rounds of sending the errors back."""
    if not request or not request.strip():
        raise ValueError("the request is empty: describe the scene, e.g. 'rain, then a narrator says hello'")
    if llm is not None:
        return plan_with_llm(request, llm, max_repairs)
    return Script.from_dict(plan_rules(request), source="planner")


def plan_rules(request: str) -> dict:
    """The built-in planner: the request's clauses, in order, as script elements (parsed JSON)."""
    elements, voices = [], {}
    for clause in _clauses(request):
        element = _element(PREFIX.sub("", clause.strip(" ,.;")).strip())
        if element is None:
            continue
        if element.get("voice"):
            voices[element["voice"]] = {}
        elements.append(element)
    if not elements:  # nothing recognisable: read the request out
        elements = [{"type": "speech", "text": _sentence(request), "layout": "foreground"}]
    if any(e["layout"] == "foreground" for e in elements):
        for e in elements:  # background beds last until the last foreground element ends
            if e["layout"] == "background" and "duration" in e:
                e["end"] = "end"
                del e["duration"]
    return {"sample_rate": DEFAULT_SAMPLE_RATE, "elements": elements, "voices": voices}


def _clauses(request: str) -> list[str]:
    """Split on commas, 'then', 'followed by' ..., never inside quotes; a leading title ('a podcast
    intro: ...') is dropped."""
    quotes: list[str] = []
    masked = QUOTED.sub(lambda m: quotes.append(m.group(0)) or f"\x00{len(quotes) - 1}\x00", request)
    head, colon, body = masked.partition(":")
    if colon and body.strip() and not re.search(rf"\b(?:{SPEECH_VERBS})\b", head, re.I):
        masked = body
    restore = re.compile("\x00(\\d+)\x00")
    parts = [restore.sub(lambda m: quotes[int(m.group(1))], c) for c in SPLIT.split(masked)]
    return [c for c in parts if c and c.strip(" ,.;")]


def _element(clause: str) -> dict | None:
    """One clause -> one element, or None when it names nothing to hear."""
    if not clause:
        return None
    quoted = QUOTED.search(clause)
    speech = SPEECH.match(clause)
    if speech or quoted:
        who = speech.group("who") if speech else clause[: quoted.start()]  # type: ignore[union-attr]
        text = quoted.group(1) if quoted else speech.group("text")  # type: ignore[union-attr]
        element = {"type": "speech", "text": _sentence(text), "layout": "foreground"}
        voice = _voice(who or "")
        return element | ({"voice": voice} if voice else {})
    kind = "music" if re.search(rf"\b(?:{MUSIC_WORDS})\b", clause, re.I) else None
    if kind is None and re.search(rf"\b(?:{SOUND_WORDS})", clause, re.I):
        kind = "sfx"
    if kind is None:
        return None
    background = bool(re.search(BACKGROUND_WORDS, clause, re.I))
    description = re.sub(rf"\s*\b(?:in the |as a |as )?(?:{BACKGROUND_WORDS})\b", "", clause, flags=re.I)
    description = SECONDS.sub("", re.sub(r"\bfor\s+(?=\d)", "", description)).strip(" ,.;!?") or clause
    duration = _duration(clause, "ambience" if background else kind)
    element = {
        "type": kind,
        "description": description,
        "layout": "background" if background else "foreground",
    }
    volume = DEFAULT_VOLUME_DB[kind] + (10.0 if kind == "music" and not background else 0.0)
    volume -= 8.0 if background and kind == "sfx" else 0.0  # a bed of rain sits under the sound effects
    fades = {"fade_in": round(min(1.0, duration / 4), 2), "fade_out": round(min(2.0, duration / 4), 2)}
    return (
        element
        | {"duration": duration, "volume_db": volume}
        | (fades if kind == "music" or background else {})
    )


def _duration(clause: str, kind: str) -> float:
    found = SECONDS.search(clause)
    if found and float(found.group(1)) > 0:
        return float(found.group(1))
    scale = next((s for word, s in SCALE.items() if re.search(rf"\b{word}\b", clause, re.I)), 1.0)
    return DURATIONS[kind] * scale


def _voice(who: str) -> str | None:
    """'a cheerful host' -> 'host': the last word of who speaks, as a voice name."""
    words = re.findall(r"[a-z]+", who.lower())
    words = [w for w in words if w not in ("a", "an", "the", "then", "and", "finally", "next")]
    return words[-1] if words else None


def _sentence(text: str) -> str:
    text = text.strip(" \"'“”‘’,;:")
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


# ---- any LLM ------------------------------------------------------------------------------------------
def llm_instructions(request: str) -> str:
    """What an LLM is asked: the format (JSON Schema and an example) and the request."""
    return (
        "Write an audio script as JSON for this request. Answer with the JSON object only.\n"
        f"JSON Schema:\n{SCHEMA_PATH.read_text()}\nExample:\n{json.dumps(EXAMPLE_SCRIPT)}\n"
        f"Request: {request}\n"
    )


def plan_with_llm(request: str, llm: Callable[[str], str], max_repairs: int = 2) -> Script:
    """Ask `llm` for a script; send each invalid answer back with its errors, at most `max_repairs` times."""
    message = llm_instructions(request)
    for _ in range(max_repairs + 1):
        answer = llm(message)
        try:
            return Script.from_dict(_json_in(answer), source="LLM plan")
        except ScriptError as e:
            errors = e.errors
        message = (
            f"{llm_instructions(request)}\nYour previous answer:\n{answer}\nIt is invalid:\n- "
            + "\n- ".join(errors)
            + "\nAnswer with the corrected JSON object only."
        )
    raise ScriptError([*errors, f"still invalid after {max_repairs} repair attempts"], "LLM plan")


def _json_in(answer: str):
    """The JSON object in an LLM answer (the whole answer, or the first {...} block in it)."""
    start, end = answer.find("{"), answer.rfind("}")
    try:
        return json.loads(answer[start : end + 1] if 0 <= start < end else answer)
    except json.JSONDecodeError as e:
        raise ScriptError(
            [f"the answer is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})"]
        ) from None
