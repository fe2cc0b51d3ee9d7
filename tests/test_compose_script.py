import copy
import json

import pytest

from audiollm.compose.script import (
    EXAMPLE_SCRIPT,
    MAX_ELEMENTS,
    MAX_SAMPLE_RATE,
    MAX_SECONDS,
    SCHEMA_PATH,
    Element,
    Script,
    ScriptError,
    load_script,
    resolve,
)


def script_with(*elements, **top) -> dict:
    return {"sample_rate": 24000, "elements": list(elements), "voices": {"narrator": {}}} | top


def speech(text="Hello.", **kw):
    return {"type": "speech", "text": text} | kw


def sfx(duration=1.0, **kw):
    return {"type": "sfx", "description": "a bell", "duration": duration} | kw


def test_example_script_resolves_by_the_rules():
    script = Script.from_dict(EXAMPLE_SCRIPT)
    resolved = resolve(script, {1: 2.0, 3: 1.25})
    # speech 0..2, sfx after the default gap 0.2 for its duration 1.5, speech after its own gap 0.3
    assert resolved.spans[1] == (0.0, 2.0)
    assert resolved.spans[2] == pytest.approx((2.2, 3.7))
    assert resolved.spans[3] == pytest.approx((4.0, 5.25))
    assert resolved.spans[0] == pytest.approx((0.0, 5.25)), 'background "end" = the last foreground end'
    assert resolved.duration == pytest.approx(5.25)
    data = resolved.to_dict()
    assert [(e["start"], e["end"]) for e in data["elements"]] == [pytest.approx(s) for s in resolved.spans]
    assert data["duration"] == pytest.approx(5.25)


def test_foreground_start_gap_and_background_spans():
    script = Script.from_dict(
        script_with(
            sfx(0.5, gap=0.4),  # the first foreground element starts at its gap
            speech(start=3.0),  # explicit start
            sfx(1.0),  # follows the previous element's end by the default gap
            {"type": "music", "description": "pads", "start": 1.0, "end": 2.5},
            {"type": "music", "description": "pads", "start": 0.5, "duration": 8.0},
            {"type": "sfx", "description": "rain", "layout": "background", "start": 2.0, "end": "end"},
        )
    )
    spans = resolve(script, {1: 1.5}).spans
    assert spans[0] == pytest.approx((0.4, 0.9))
    assert spans[1] == pytest.approx((3.0, 4.5))
    assert spans[2] == pytest.approx((4.7, 5.7))
    assert spans[3] == pytest.approx((1.0, 2.5))
    assert spans[4] == pytest.approx((0.5, 8.5))
    assert spans[5] == pytest.approx((2.0, 5.7))
    assert resolve(script, {1: 1.5}).duration == pytest.approx(8.5), "the track lasts to the latest end"
    first_default = resolve(Script.from_dict(script_with(speech(), speech())), {0: 1.0, 1: 1.0}).spans
    assert first_default == [(0.0, 1.0), pytest.approx((1.2, 2.2))]


def test_background_end_before_its_start_fails_at_resolution():
    script = Script.from_dict(
        script_with(speech(), {"type": "music", "description": "pads", "start": 5.0, "end": "end"})
    )
    with pytest.raises(ScriptError, match=r'elements\[1\]\.end: "end" resolves to 1 s, not after its start'):
        resolve(script, {0: 1.0})


INVALID = [  # (how the script is broken, the promised message)
    (lambda d: d["elements"][2].update(duration=0), r"elements\[2\]\.duration: must be > 0"),
    (lambda d: d["elements"][2].update(duration="long"), r"elements\[2\]\.duration: must be a finite number, got 'long'"),
    (lambda d: d["elements"][2].update(duration=float("inf")), r"elements\[2\]\.duration: must be a finite number, got inf"),
    (lambda d: d["elements"][2].update(duration=float("nan")), r"elements\[2\]\.duration: must be a finite number, got nan"),
    (lambda d: d["elements"][3].update(gap=float("inf")), r"elements\[3\]\.gap: must be a finite number, got inf"),
    (lambda d: d["elements"][0].update(end=float("nan")), r"elements\[0\]\.end: must be a finite number \(seconds\) or \"end\", got nan"),
    (lambda d: d["elements"][2].update(duration=1e9), r"elements\[2\]\.duration: must be at most 600 s \(the longest track\), got 1e\+09"),
    (lambda d: d["elements"][3].update(start=601), r"elements\[3\]\.start: must be at most 600 s"),
    (lambda d: d["elements"][0].update(fade_in=float("inf")), r"elements\[0\]\.fade_in: must be a finite number, got inf"),
    (lambda d: d.update(sample_rate=10**6), r"sample_rate: must be an integer from 8000 to 48000, got 1000000"),
    (lambda d: d["elements"].extend([sfx()] * 10_000), r"invalid script: elements: 10004 elements; a script may have at most 64$"),
    (lambda d: d["elements"][2].pop("duration"), r"elements\[2\]\.duration: required for foreground sfx"),
    (lambda d: d["elements"][1].update(duration=2), r"elements\[1\]\.duration: speech has no duration"),
    (lambda d: d["elements"][1].update(type="noise"), r"elements\[1\]\.type: must be one of speech, music, sfx, got 'noise'"),
    (lambda d: d["elements"][1].update(text=" "), r"elements\[1\]\.text: must be a non-empty string"),
    (lambda d: d["elements"][2].pop("description"), r"elements\[2\]\.description: must be a non-empty string"),
    (lambda d: d["elements"][1].update(voice="bob"), r"elements\[1\]\.voice: unknown voice 'bob' \(voices: narrator\)"),
    (lambda d: d["elements"][1].update(layout="middle"), r"elements\[1\]\.layout: must be one of foreground, background"),
    (lambda d: d["elements"][1].update(layout="background"), r"elements\[1\]\.layout: speech must be foreground"),
    (lambda d: d["elements"][3].update(colour="red"), r"elements\[3\]\.colour: unknown field \(allowed: "),
    (lambda d: d["elements"][3].update(start=-1), r"elements\[3\]\.start: must be >= 0"),
    (lambda d: d["elements"][3].update(gap=-0.1), r"elements\[3\]\.gap: must be >= 0"),
    (lambda d: d["elements"][3].update(start=1.0), r"elements\[3\]\.gap: give start or gap, not both"),
    (lambda d: d["elements"][2].update(end=3.0), r"elements\[2\]\.end: only background elements have an end"),
    (lambda d: d["elements"][0].update(end="later"), r"elements\[0\]\.end: must be a finite number \(seconds\) or \"end\", got 'later'"),
    (lambda d: d["elements"][0].update(end=0.0), r"elements\[0\]\.end: must be > start \(0 s\)"),
    (lambda d: d["elements"][0].update(duration=3.0), r"elements\[0\]\.end: background music needs end"),
    (lambda d: d["elements"][0].update(volume_db=6), r"elements\[0\]\.volume_db: must be between -70 and 0 LUFS"),
    (lambda d: d["elements"][0].update(fade_in=-1), r"elements\[0\]\.fade_in: must be >= 0"),
    (lambda d: d["elements"][2].update(fade_in=1.0, fade_out=1.0), r"elements\[2\]\.fade_out: fade_in \+ fade_out \(2 s\) exceeds duration \(1.5 s\)"),
    (lambda d: d["elements"].append("music"), r"elements\[4\]: must be an object, got a string"),
    (lambda d: d.update(elements=[]), r"elements: must be a non-empty list"),
    (lambda d: d.update(sample_rate=44.1), r"sample_rate: must be an integer from 8000 to 48000, got 44.1"),
    (lambda d: d.update(tempo=120), r"tempo: unknown field"),
    (lambda d: d["voices"].update(narrator={"prompt": "missing.wav"}), r"voices\.narrator\.prompt: file .*missing\.wav not found"),
    (lambda d: d.update(elements=[d["elements"][0]]), r'elements\[0\]\.end: "end" needs at least one foreground element'),
]  # fmt: skip


@pytest.mark.parametrize("broken, message", INVALID)
def test_invalid_scripts_fail_with_the_promised_message(broken, message):
    data = copy.deepcopy(EXAMPLE_SCRIPT)
    broken(data)
    with pytest.raises(ScriptError, match=message):
        Script.from_dict(data)


def test_json_infinity_and_nan_are_refused(tmp_path):
    """Python's json reads the non-standard Infinity and NaN; the validator must not let them through."""
    path = tmp_path / "scene.json"
    text = json.dumps(script_with(sfx(duration=1.0), sfx(duration=2.0)))
    path.write_text(text.replace("1.0", "Infinity", 1).replace("2.0", "NaN", 1))
    with pytest.raises(ScriptError) as info:
        load_script(path)
    assert info.value.errors == [
        "elements[0].duration: must be a finite number, got inf",
        "elements[1].duration: must be a finite number, got nan",
    ]


def test_a_track_longer_than_the_limit_is_refused_when_resolved():
    chain = Script.from_dict(script_with(*[sfx(duration=MAX_SECONDS / 2)] * 2, sfx(duration=1.0)))
    with pytest.raises(ScriptError, match=r"the track would last 601\.4 s; the limit is 600 s"):
        resolve(chain, {})
    spoken = Script.from_dict(script_with(speech(), speech()))
    assert resolve(spoken, {0: 1.0, 1: 1.0}, max_seconds=2.2).duration == pytest.approx(2.2)
    with pytest.raises(ScriptError, match=r"the track would last 2\.2 s; the limit is 2 s"):
        resolve(spoken, {0: 1.0, 1: 1.0}, max_seconds=2.0)
    assert Script.from_dict(script_with(*[sfx()] * MAX_ELEMENTS, sample_rate=MAX_SAMPLE_RATE))


def test_every_problem_is_reported_at_once_and_files_are_named(tmp_path):
    data = copy.deepcopy(EXAMPLE_SCRIPT)
    data["elements"][2]["duration"] = -1
    data["elements"][3]["text"] = ""
    path = tmp_path / "scene.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ScriptError) as info:
        load_script(path)
    assert info.value.errors == [
        "elements[2].duration: must be > 0",
        "elements[3].text: must be a non-empty string",
    ]
    assert str(info.value).startswith(f"{path}: invalid script: elements[2].duration: must be > 0; ")
    path.write_text("{ not json")
    with pytest.raises(ScriptError, match=r"scene\.json: invalid script: not valid JSON \(line 1, column 3"):
        load_script(path)
    with pytest.raises(FileNotFoundError, match=r"script file .*nope\.json not found"):
        load_script(tmp_path / "nope.json")


def test_load_round_trip_and_relative_voice_prompts(tmp_path):
    (tmp_path / "voices").mkdir()
    (tmp_path / "voices" / "ref.wav").write_bytes(b"RIFF")
    data = copy.deepcopy(EXAMPLE_SCRIPT) | {"voices": {"narrator": {"prompt": "voices/ref.wav"}}}
    (tmp_path / "s.json").write_text(json.dumps(data))
    script = load_script(tmp_path / "s.json")
    assert script.voices["narrator"].prompt == str(tmp_path / "voices" / "ref.wav")
    assert script.elements[0] == Element(
        "music", "background", description="calm ambient pads", start=0.0, end="end", volume_db=-32.0,
        fade_in=1.0, fade_out=2.0,
    )  # fmt: skip
    assert script.elements[2].layout == "foreground" and script.elements[1].volume_db == -18.0
    assert Script.from_dict(script.to_dict()) == script
    assert load_script(json.dumps(EXAMPLE_SCRIPT)) == Script.from_dict(EXAMPLE_SCRIPT)


def check(value, schema: dict, root: dict, at: str = "") -> list[str]:
    """A tiny JSON Schema checker for the keywords script.schema.json uses."""
    if "$ref" in schema:
        schema = root["$defs"][schema["$ref"].split("/")[-1]]
    errors = []
    kinds = {"object": dict, "array": list, "string": str, "number": (int, float), "integer": int}
    if "type" in schema and not isinstance(value, kinds[schema["type"]]):
        return [f"{at}: not {schema['type']}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{at}: not in {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        errors.append(f"{at}: not {schema['const']}")
    if "oneOf" in schema and sum(not check(value, s, root, at) for s in schema["oneOf"]) != 1:
        errors.append(f"{at}: matches not exactly one of oneOf")
    if "minimum" in schema and value < schema["minimum"]:
        errors.append(f"{at}: below minimum")
    if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
        errors.append(f"{at}: not above exclusiveMinimum")
    if "maximum" in schema and value > schema["maximum"]:
        errors.append(f"{at}: above maximum")
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        errors.append(f"{at}: more than maxItems")
    if isinstance(value, dict):
        errors += [f"{at}.{k}: required" for k in schema.get("required", []) if k not in value]
        for key, item in value.items():
            sub = schema.get("properties", {}).get(key, schema.get("additionalProperties", True))
            if sub is False:
                errors.append(f"{at}.{key}: not allowed")
            elif isinstance(sub, dict):
                errors += check(item, sub, root, f"{at}.{key}")
        for rule in schema.get("allOf", []):
            if not check(value, rule["if"], root, at):
                then = rule["then"]
                errors += check(value, {k: v for k, v in then.items() if k != "not"}, root, at)
                if "not" in then and any(not check(value, s, root) for s in then["not"]["anyOf"]):
                    errors.append(f"{at}: has a field its type may not have")
    if isinstance(value, list):
        for i, item in enumerate(value):
            errors += check(item, schema.get("items", {}), root, f"{at}[{i}]")
    return errors


def test_shipped_json_schema_matches_the_format():
    schema = json.loads(SCHEMA_PATH.read_text())
    element = schema["$defs"]["element"]
    assert set(element["properties"]) == {f for f in Element.__dataclass_fields__}
    assert set(schema["properties"]) == set(Script.__dataclass_fields__)
    assert element["properties"]["type"]["enum"] == ["speech", "music", "sfx"]
    assert check(EXAMPLE_SCRIPT, schema, schema) == []
    resolved_input = Script.from_dict(EXAMPLE_SCRIPT).to_dict()
    assert check(resolved_input, schema, schema) == []
    bad = copy.deepcopy(EXAMPLE_SCRIPT)
    bad["elements"][1]["duration"] = 2.0  # speech with a duration: both the schema and the validator refuse
    assert check(bad, schema, schema)
    with pytest.raises(ScriptError):
        Script.from_dict(bad)
    assert schema["properties"]["sample_rate"]["maximum"] == MAX_SAMPLE_RATE
    assert schema["properties"]["elements"]["maxItems"] == MAX_ELEMENTS
    for name in ("start", "duration", "gap", "fade_in", "fade_out"):
        assert element["properties"][name]["maximum"] == MAX_SECONDS, name
    for broken in (lambda d: d.update(sample_rate=96000), lambda d: d["elements"][2].update(duration=1e9),
                   lambda d: d["elements"].extend([d["elements"][2]] * MAX_ELEMENTS)):  # fmt: skip
        data = copy.deepcopy(EXAMPLE_SCRIPT)
        broken(data)
        assert check(data, schema, schema), "the schema refuses what the validator refuses"
        with pytest.raises(ScriptError):
            Script.from_dict(data)
