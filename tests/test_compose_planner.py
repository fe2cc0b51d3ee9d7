import json

import pytest

from audiollm.compose.planner import plan
from audiollm.compose.script import EXAMPLE_SCRIPT, ScriptError, resolve

PROMPTS = [
    "a short podcast intro: upbeat music, then a host says welcome to tech talk, then a notification chime",
    'rain in the background, a narrator says "It was a dark night, and cold." then thunder for 2.5 seconds',
    "a door bell rings. A woman asks who is it? Footsteps.",
    "calm ambient piano throughout; the host says welcome back and then applause",
    "a radio jingle for 3 s followed by a newsreader announces the evening news",
    "birds chirping, waves, a long soft guitar melody",
    "narrator says: once upon a time",
    "hello world",
    "a documentary scene: wind and traffic as ambience, a guide says this is the old town, a church bell",
]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_planner_output_validates_and_places(prompt):
    script = plan(prompt)
    spoken = {i: 1.0 for i, e in enumerate(script.elements) if e.type == "speech"}
    assert resolve(script, spoken).duration > 0
    assert plan(prompt) == script, "the built-in planner is deterministic"


def test_planner_reads_the_request():
    script = plan(PROMPTS[0])
    assert [(e.type, e.layout) for e in script.elements] == [
        ("music", "foreground"),
        ("speech", "foreground"),
        ("sfx", "foreground"),
    ]
    assert script.elements[1].text == "Welcome to tech talk." and script.elements[1].voice == "host"
    assert script.elements[2].description == "a notification chime"
    rain = plan(PROMPTS[1])
    assert rain.elements[0].layout == "background" and rain.elements[0].end == "end"
    assert rain.elements[1].text == "It was a dark night, and cold.", "quotes keep their commas"
    assert rain.elements[2].description == "thunder" and rain.elements[2].duration == 2.5
    assert plan(PROMPTS[2]).elements[1].text == "Who is it?"
    with pytest.raises(ValueError, match="the request is empty"):
        plan("  ")


def test_an_llm_plans_and_is_repaired_a_bounded_number_of_times():
    good = json.dumps(EXAMPLE_SCRIPT)
    broken = json.loads(good)
    broken["elements"][2]["duration"] = 0
    answers = ["Sure! ```json\n" + json.dumps(broken) + "\n```", "Here it is: " + good]
    seen = []

    def llm(message: str) -> str:
        seen.append(message)
        return answers[len(seen) - 1]

    script = plan("an evening news opening", llm=llm, max_repairs=2)
    assert len(script.elements) == 4 and len(seen) == 2
    assert "Request: an evening news opening" in seen[0] and '"$schema"' in seen[0]
    assert "elements[2].duration: must be > 0" in seen[1], "the repair request names the errors"

    calls = []

    def stubborn(message: str) -> str:
        calls.append(message)
        return "no JSON here"

    with pytest.raises(ScriptError, match=r"LLM plan: invalid script: the answer is not valid JSON.*still invalid after 1 repair attempts"):  # fmt: skip
        plan("anything", llm=stubborn, max_repairs=1)
    assert len(calls) == 2
