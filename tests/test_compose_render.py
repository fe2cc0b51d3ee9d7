import copy
import json
import os

import numpy as np
import pytest

import audiollm
from audiollm import AudioLM, audio
from audiollm.compose import Composition, ScriptError, compose, load_script
from audiollm.compose.render import ClipCache, as_script


@pytest.fixture
def scene(shared_data) -> dict:
    """A script the digits model can say: short texts and captions from its training data."""
    return {
        "sample_rate": 16000,
        "elements": [
            {"type": "music", "description": "a voice says two", "end": "end", "volume_db": -30,
             "fade_in": 0.1, "fade_out": 0.1},
            {"type": "speech", "text": "seven", "voice": "theo"},
            {"type": "sfx", "description": "a voice says one", "duration": 0.3, "volume_db": -20},
            {"type": "speech", "text": "three", "gap": 0.1},
            {"type": "sfx", "description": "a voice says nine", "layout": "background", "start": 0.1,
             "duration": 0.4},
        ],
        "voices": {"theo": {"prompt": str(shared_data / "fsdd_spoken_digits" / "recordings" / "1_theo_5.wav")}},
    }  # fmt: skip


def count_calls(lm, monkeypatch) -> dict[str, list[int]]:
    """Wrap the model's generation methods; returns task -> batch sizes of the calls made."""
    calls: dict[str, list[int]] = {"tts": [], "music": [], "sfx": []}
    synthesize, captioned = lm.synthesize, lm.generate_captioned

    def speech(texts, *args, **kwargs):
        calls["tts"].append(len(texts))
        return synthesize(texts, *args, **kwargs)

    def sound(task, captions, *args, **kwargs):  # music and sfx
        calls[task].append(len(captions))
        return captioned(task, captions, *args, **kwargs)

    monkeypatch.setattr(lm, "synthesize", speech)
    monkeypatch.setattr(lm, "generate_captioned", sound)
    return calls


def test_compose_end_to_end(lm, scene, tmp_path, monkeypatch):
    calls = count_calls(lm, monkeypatch)
    result = compose(scene, model=lm, seed=0, cache_dir=tmp_path / "cache")
    assert isinstance(result, Composition) and result.sample_rate == 16000
    assert calls == {"tts": [2], "music": [1], "sfx": [2]}, "elements that share a task are batched"
    spans = result.script.spans
    speech = [spans[1][1] - spans[1][0], spans[3][1] - spans[3][0]]
    assert spans[1][0] == 0.0 and spans[2] == pytest.approx((spans[1][1] + 0.2, spans[1][1] + 0.5))
    assert spans[3][0] == pytest.approx(spans[2][1] + 0.1)
    assert spans[0] == (0.0, spans[3][1]) and spans[4] == pytest.approx((0.1, 0.5))
    assert all(s >= 0 for s in speech)
    assert result.audio.dtype == np.float32 and result.audio.ndim == 1
    assert len(result.audio) == round(max(end for _, end in spans) * 16000), "length = the last end"
    assert np.abs(result.audio).max() <= 10 ** (-1 / 20)
    data = result.script.to_dict()
    assert [(e["start"], e["end"]) for e in data["elements"]] == [pytest.approx(s, abs=1e-6) for s in spans]
    paths = result.save(tmp_path / "out")
    assert audio.info(paths["track"]).samplerate == 16000
    assert json.loads(paths["script"].read_text()) == data
    assert paths["timeline"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = audiollm.compose(scene, model=lm, seed=0, cache_dir=tmp_path / "cache")
    assert np.array_equal(again.audio, result.audio), "the package is callable; the cache reproduces"


def test_editing_one_element_regenerates_only_it(lm, scene, tmp_path, monkeypatch):
    calls = count_calls(lm, monkeypatch)
    compose(scene, model=lm, seed=1, cache_dir=tmp_path)
    assert sum(map(sum, calls.values())) == 5
    for made in calls.values():
        made.clear()
    compose(scene, model=lm, seed=1, cache_dir=tmp_path)
    assert calls == {"tts": [], "music": [], "sfx": []}, "an unchanged script generates nothing"
    edited = copy.deepcopy(scene)
    edited["elements"][2]["description"] = "a voice says four"
    edited["elements"][2]["volume_db"] = -25  # mixing-only changes never regenerate
    compose(edited, model=lm, seed=1, cache_dir=tmp_path)
    assert calls == {"tts": [], "music": [], "sfx": [1]}
    compose(edited, model=lm, seed=2, cache_dir=tmp_path)
    assert calls == {"tts": [2], "music": [1], "sfx": [1, 2]}, "the seed is part of the key"


def test_missing_task_and_long_text_fail_before_generation(lm, scene, tmp_path, monkeypatch):
    calls = count_calls(lm, monkeypatch)
    no_sfx = AudioLM(lm.model, lm.tokenizer, lm.codec, lm.config | {"tasks": ["asr", "tts", "music"]})
    with pytest.raises(ScriptError, match=r"elements\[2\]: the model was not trained for sfx \(its tasks: asr, tts, music\); elements\[4\]"):  # fmt: skip
        compose(scene, model=no_sfx, cache_dir=tmp_path)
    scene["elements"][3]["text"] = "one two three " * 20
    with pytest.raises(ScriptError, match=r"elements\[3\]\.text is too long"):
        compose(scene, model=lm, cache_dir=tmp_path)
    assert calls == {"tts": [], "music": [], "sfx": []}


def test_cli_compose(digits_model, encodec_24k_checkpoint, scene, tmp_path, capsys, monkeypatch):
    from audiollm.cli import main

    monkeypatch.setenv("AUDIOLLM_ENCODEC_CHECKPOINT", str(encodec_24k_checkpoint))
    script = tmp_path / "script.json"
    script.write_text(json.dumps(scene))
    out, plot, resolved = tmp_path / "out.wav", tmp_path / "t.png", tmp_path / "r.json"
    args = ["--plot", str(plot), "--save-script", str(resolved), "--model", str(digits_model)]
    assert main(["compose", str(script), "-o", str(out), *args, "--cache-dir", str(tmp_path / "c")]) == 0
    assert f"wrote {out}, {plot}, {resolved}" in capsys.readouterr().out
    data = json.loads(resolved.read_text())
    assert audio.info(out).frames == round(data["duration"] * 16000)
    assert plot.read_bytes()[:4] == b"\x89PNG"
    prompt = "a voice says two, then someone says seven"
    assert main(["compose", prompt, "-o", str(out), "--no-cache", "--model", str(digits_model)]) == 0
    scene["elements"][2]["duration"] = 0
    script.write_text(json.dumps(scene))
    assert main(["compose", str(script), "-o", str(out), "--model", str(digits_model)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"audiollm compose: error: {script}: invalid script: elements[2].duration: must be > 0"
    missing = tmp_path / "no_model"  # the output is checked before the model is even looked for
    assert main(["compose", str(script), "-o", str(tmp_path / "x.mp3"), "--model", str(missing)]) == 1
    assert "-o " in (err := capsys.readouterr().err) and "cannot write '.mp3'; use one of" in err


def test_a_script_file_is_read_whatever_the_case_of_its_suffix(scene, tmp_path):
    path = tmp_path / "scene.JSON"
    path.write_text(json.dumps(scene))
    assert as_script(str(path)) == load_script(path), "a script file, not a request that speaks its name"
    with pytest.raises(FileNotFoundError, match=r"script file .*gone\.Json not found"):
        as_script(str(tmp_path / "gone.Json"))


def test_a_track_over_the_limit_is_refused_before_music_and_sfx(lm, scene, tmp_path, monkeypatch):
    calls = count_calls(lm, monkeypatch)
    with pytest.raises(ScriptError, match=r"the track would last [\d.]+ s; the limit is 0\.05 s"):
        compose(scene, model=lm, seed=0, cache_dir=tmp_path, max_seconds=0.05)
    assert calls == {"tts": [2], "music": [], "sfx": []}


def test_the_clip_cache_is_bounded_and_drops_the_least_recently_used(tmp_path):
    clip = np.zeros(1000, np.float32)  # 4 kB of audio per entry
    one = len(_entry_bytes(tmp_path, clip))
    cache = ClipCache(tmp_path / "cache", max_bytes=3 * one)
    for key in "abcd":
        cache.put(key, clip, 16000)
        age = "abcd".index(key) * 10**9  # a, b, c, d: oldest first
        os.utime(cache.directory / f"{key}.npz", ns=(0, age))
    assert sorted(p.name for p in cache.directory.glob("*.npz")) == ["b.npz", "c.npz", "d.npz"]
    assert cache.get("b") is not None  # b is now the most recently used; c is the oldest
    cache.put("e", clip, 16000)
    assert sorted(p.name for p in cache.directory.glob("*.npz")) == ["b.npz", "d.npz", "e.npz"]
    assert sum(p.stat().st_size for p in cache.directory.iterdir()) <= 3 * one


def _entry_bytes(tmp_path, clip) -> bytes:
    probe = ClipCache(tmp_path / "probe")
    probe.put("x", clip, 16000)
    return (probe.directory / "x.npz").read_bytes()


def test_a_corrupt_cache_entry_is_made_again(lm, scene, tmp_path):
    first = compose(scene, model=lm, seed=0, cache_dir=tmp_path)
    entries = sorted(tmp_path.glob("*.npz"))
    assert len(entries) == 5
    for i, entry in enumerate(entries):  # truncated (a full disk, a killed copy) or not an npz at all
        entry.write_bytes(entry.read_bytes()[:100] if i % 2 else b"not an npz")
    again = compose(scene, model=lm, seed=0, cache_dir=tmp_path)
    assert np.array_equal(again.audio, first.audio), "the broken entries were generated again"
    assert all(ClipCache(tmp_path).get(entry.stem) is not None for entry in entries), "and stored afresh"
